"""Run grid cells: model under maintenance (cached) -> repair (cached) -> suites -> result rows.

A cell's rows land in one file, written atomically at the end; a finished cell is skipped on the
next run; a killed cell resumes its training from the last epoch checkpoint. A failing cell is
recorded with its error under failures/ and does not stop the others.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deeppatch.code_identity import module_code_hash
from deeppatch.corrector import Budget, RepairCost, RepairTask, checkpoint_restorers, get_corrector, run_repair
from deeppatch.data import Splits, load_splits, stratified_subset
from deeppatch.device import resolve_device
from deeppatch.errors import DeepPatchError
from deeppatch.harness.evaluate import evaluate_model, full_rows
from deeppatch.harness.spec import Cell, Spec
from deeppatch.models.checkpoint import load_model, save_model
from deeppatch.perturbations import get_perturbation
from deeppatch.pretrain import PretrainConfig, checkpoint_extra, checkpoint_kind, default_epochs, obtain_model
from deeppatch.results import (
    SuiteRow,
    decode_correctness,
    encode_correctness,
    read_cell_rows,
    write_cell_rows,
    write_cell_samples,
)
from deeppatch.seeding import seed_everything
from deeppatch.storage import Workspace, atomic_write_json, cached, file_lock, stable_hash, tensors_digest
from deeppatch.technique.gating import GateFit, SwitchedCorrector
from deeppatch.versions import device_name, environment_versions

log = logging.getLogger(__name__)


def rows_path(results_dir: Path, cell: Cell) -> Path:
    return Path(results_dir) / "rows" / f"{cell.key()}.jsonl"


def samples_path(results_dir: Path, cell: Cell) -> Path:
    return Path(results_dir) / "samples" / f"{cell.key()}.json"


def failure_path(results_dir: Path, cell: Cell) -> Path:
    return Path(results_dir) / "failures" / f"{cell.key()}.json"


def model_key(cell: Cell) -> str:
    """The model under maintenance's key: its data set, model and seed, and the code that trains it."""
    return stable_hash({"dataset": cell.dataset.config(), "model": cell.model.config(),
                        "seed": cell.spec.pretrain_seed, "code": module_code_hash("deeppatch.pretrain")})


def maintenance_path(results_dir: Path, cell: Cell) -> Path:
    return Path(results_dir) / "cache" / "models" / f"{cell.dataset.name}__{cell.model.name.replace(':', '_')}__" \
        f"{model_key(cell)}.pt"


def repaired_path(results_dir: Path, cell: Cell) -> Path:
    return Path(results_dir) / "models" / f"{cell.key()}.pt"


def load_cell_splits(cell: Cell) -> Splits:
    d = cell.dataset
    return load_splits(d.name, d.data_dir, download=d.download, val_fraction=d.val_fraction, split_seed=d.split_seed)


def maintenance_model(cell: Cell, splits: Splits, results_dir: Path, device: torch.device) -> tuple[nn.Module, str]:
    """The model under maintenance: trained or loaded once per (data set, model config), under a lock."""
    path = maintenance_path(results_dir, cell)
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():
            return load_model(path, expect_dataset=cell.dataset.name, device=device).model, "cache"
        m = cell.model
        if m.checkpoint:
            model = load_model(m.checkpoint, expect_dataset=cell.dataset.name, device=device).model
            source = f"checkpoint {m.checkpoint}"
        else:
            cfg = PretrainConfig(model=m.name, dataset=cell.dataset.name, lr=m.lr, batch_size=m.batch_size,
                                 epochs=m.epochs, resume=True, seed=cell.spec.pretrain_seed, weights=m.weights,
                                 train_if_missing=m.train_if_missing, train_subset=m.train_subset,
                                 download=cell.dataset.download)
            seed_everything(cell.spec.pretrain_seed)
            epochs = m.epochs if m.epochs is not None else default_epochs(cell.dataset.name)
            model, source, _ = obtain_model(cfg, splits, device, path.with_suffix(".state.pt"), epochs)
        save_model(path, model, arch=m.name, info=splits.info, kind=checkpoint_kind(m.name),
                   extra=checkpoint_extra(m.name, cell.dataset.name),
                   meta={"source": source, "config": cell.model.config()})
        path.with_suffix(".state.pt").unlink(missing_ok=True)
        return model.to(device).eval(), source


def finished_rows(results_dir: Path, cell: Cell) -> list[dict[str, Any]] | None:
    """The cell's stored rows when they exist and are valid; None when the cell is to run (again).

    An empty, truncated, binary or malformed rows file is not a finished cell: it is reported (file
    and line) and the cell reruns.
    """
    path = rows_path(results_dir, cell)
    if not path.is_file():
        return None
    try:
        return read_cell_rows(path)
    except DeepPatchError as exc:
        log.warning("%s; the cell will run again", exc)
        return None


def retire_stale_rows(results_dir: Path, cells: list[Cell]) -> int:
    """Move rows of earlier versions of these cells (other config or code, same data set, model, label and
    seed) to stale/, so that a report shows what the current spec and code produced. Returns how many."""
    moved = 0
    for cell in cells:
        for path in sorted((Path(results_dir) / "rows").glob(f"{cell.slug()}__*.jsonl")):
            if path.stem != cell.key() and path.stem.rsplit("__", 1)[0] == cell.slug():
                for old, folder in ((path, "rows"), (Path(results_dir) / "samples" / f"{path.stem}.json", "samples")):
                    if old.is_file():
                        target = Path(results_dir) / "stale" / folder / old.name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(old, target)
                moved += 1
    return moved


def forget_cell(results_dir: Path, cell: Cell) -> None:
    """Remove a cell's rows, repaired model and failure record, so that it runs again (--rerun)."""
    for path in (rows_path(results_dir, cell), repaired_path(results_dir, cell), failure_path(results_dir, cell),
                 samples_path(results_dir, cell)):
        path.unlink(missing_ok=True)


def run_cell(cell: Cell, results_dir: Path, *, device: torch.device | None = None,
             show_progress: bool | None = None, timings: dict[str, float] | None = None
             ) -> tuple[list[dict[str, Any]], str]:
    """Repair and evaluate one cell; write its full rows. Returns (rows, "ran" or "done by another worker").

    Holds the cell's lock: a second worker on the same results folder waits, then finds the rows.
    """
    with file_lock(Path(results_dir) / "locks" / f"{cell.key()}.lock"):
        done = finished_rows(Path(results_dir), cell)
        if done is not None:
            return done, "done by another worker"
        return _run_cell(cell, Path(results_dir), device=device, show_progress=show_progress,
                         timings=timings if timings is not None else {}), "ran"


def _run_cell(cell: Cell, results_dir: Path, *, device: torch.device | None,
              show_progress: bool | None, timings: dict[str, float]) -> list[dict[str, Any]]:
    spec = cell.spec
    results_dir = Path(results_dir)
    device = device or resolve_device(spec.device)
    t_cell = time.perf_counter()
    splits = load_cell_splits(cell)
    family = get_perturbation(spec.perturbation, **spec.perturbation_settings)
    t0 = time.perf_counter()
    base, _ = maintenance_model(cell, splits, results_dir, device)
    add_time(timings, "model under maintenance", time.perf_counter() - t0)
    seed_everything(cell.seed)
    corrector = get_corrector(cell.corrector.name, plugin_dirs=spec.plugin_dirs, **cell.corrector.params)
    if cell.corrector.switch == "learned":
        gate_epochs = cell.corrector.gate_epochs
        corrector = SwitchedCorrector(corrector, target=cell.corrector.gate_target,
                                      gate=GateFit(epochs=gate_epochs) if gate_epochs is not None else None)
    work = results_dir / "work" / cell.key()
    task = RepairTask(model=base, splits=splits, perturbation=family, device=device, seed=cell.seed,
                      budget=Budget(**cell.effective_budget(), eval_batch_size=spec.eval_batch_size),
                      workspace=Workspace(state_dir=work, cache_dir=results_dir / "cache", resume=True,
                                          scope=model_key(cell)),
                      show_progress=show_progress)
    rpath = repaired_path(results_dir, cell)
    if rpath.is_file():
        loaded = load_model(rpath, device=device,
                            restorers={**checkpoint_restorers(spec.plugin_dirs), **SwitchedCorrector.restorers()})
        model = loaded.model
        cost = RepairCost(**loaded.record["meta"]["cost"])
        diagnostics = [SuiteRow(**r) for r in loaded.record["meta"]["diagnostics"]]
    else:
        repaired, cost = run_repair(corrector, task)
        add_time(timings, f"repair {cell.corrector.label}", cost.wall_time_s)
        for kind, info in cost.details.get("shared_work", {}).items():
            if info.get("computed_here"):
                add_time(timings, f"shared work: {kind} (computed once)", float(info["seconds"]))
        model, diagnostics = repaired.model, repaired.diagnostics
        save_model(rpath, model, arch=cell.model.name, info=splits.info, kind=repaired.kind, extra=repaired.extra,
                   meta={"cost": asdict(cost), "diagnostics": [d.to_dict() for d in diagnostics],
                         "cell": cell.config()})
    model = model.to(device).eval()

    # the same test images and perturbation draws for every corrector and repair seed (paired statistics)
    test = stratified_subset(splits.test, spec.n_eval, spec.eval_seed).to(device)

    def evaluate() -> list[dict[str, Any]]:
        found = evaluate_model(model, test, splits.info, spec.suites, device=device, seed=spec.eval_seed,
                               batch_size=spec.eval_batch_size, suite_n_eval=spec.suite_n_eval,
                               cache_dir=results_dir / "cache" / "suites",
                               data_dir=Path(cell.dataset.data_dir) if cell.dataset.data_dir else None,
                               timings=timings)
        found.extend(corrector.evaluation_rows(model, test, family, device, spec.eval_batch_size))
        return [row_to_json(r) for r in found]

    # a model evaluated before with the same settings (the model under maintenance of every seed of
    # "none") is not evaluated again: the test rows depend on the model's weights, not the repair seed
    evaluation = cached(results_dir / "cache" / "evaluations", evaluation_key(cell, model), evaluate)
    if not evaluation.computed_here:
        log.info("cell %s: the same model was evaluated before (cache %s)", cell.describe(), evaluation.digest)
    rows = [row_from_json(r) for r in evaluation.value]
    rows.extend(diagnostics)
    rows.extend(SuiteRow("diagnostics", f"shared work/{kind}", float(info["seconds"]), 1, group="shared work",
                         metric="seconds", source="cache", settings={"key": info["key"]})
                for kind, info in sorted(cost.details.get("shared_work", {}).items()))
    full = full_rows(rows, benchmark=spec.name, dataset=cell.dataset.name, model=cell.model.name,
                     label=cell.corrector.label, corrector=cell.corrector.name, params=cell.corrector.params,
                     budget=cell.effective_budget(), seed=cell.seed, cost=cost, device=device,
                     code_hash=cell.corrector.code)
    write_cell_samples(results_dir, cell.key(), rows, spec.eval_seed)
    write_cell_rows(results_dir, cell.key(), full)
    failure_path(results_dir, cell).unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    log.info("cell %s done in %.1f s", cell.describe(), time.perf_counter() - t_cell)
    return full


def model_digest(model: nn.Module) -> str:
    """A digest of a model's class and every tensor of its state."""
    return tensors_digest([("class " + type(model).__qualname__, torch.empty(0)), *model.state_dict().items()])


def evaluation_key(cell: Cell, model: nn.Module) -> dict[str, Any]:
    """What a cell's test rows depend on: everything in its key except the repair seed, plus the
    repaired model's weights (so two seeds that give the same model share one evaluation)."""
    config = cell.config()
    config.pop("seed")
    return {"cell": config, "model": model_digest(model)}


def row_to_json(row: SuiteRow) -> dict[str, Any]:
    return {**row.to_dict(), "correct": None if row.correct is None else encode_correctness(row.correct)}


def row_from_json(data: dict[str, Any]) -> SuiteRow:
    correct = data.get("correct")
    return SuiteRow(**{**data, "correct": None if correct is None else decode_correctness(correct)})


def add_time(timings: dict[str, float], stage: str, seconds: float) -> None:
    timings[stage] = timings.get(stage, 0.0) + seconds


def record_failure(results_dir: Path, cell: Cell, exc: BaseException) -> None:
    atomic_write_json({"cell": cell.describe(), "key": cell.key(), "config": cell.config(),
                       "error": f"{type(exc).__name__}: {exc}", "user_error": isinstance(exc, DeepPatchError),
                       "traceback": traceback.format_exc(),
                       "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                      failure_path(results_dir, cell))


def write_manifest(spec: Spec, results_dir: Path, device: torch.device) -> None:
    versions = environment_versions()
    atomic_write_json({"benchmark": spec.name, "spec": {"name": spec.name, "file": spec.path},
                       "description": spec.description, "spec_content": spec.raw,
                       "git_commit": versions.get("git_commit"), "versions": versions,
                       "device": device_name(device), "seeds": spec.seeds, "eval_seed": spec.eval_seed,
                       "n_eval": spec.n_eval,
                       "code": {"harness": spec.harness_code,
                                "correctors": {c.label: c.code for c in spec.correctors}},
                       "suite_n_eval": spec.suite_n_eval, "maintenance": {"perturbation": spec.perturbation,
                                                                          **spec.perturbation_settings}},
                      Path(results_dir) / "manifest.json")
