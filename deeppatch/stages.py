"""The assess / correct / evaluate stages behind the CLI, on files under --output_dir."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deeppatch.corrector import Budget, RepairTask, get_corrector, run_repair
from deeppatch.data import Splits, TensorSplit, get_dataset_source, load_splits
from deeppatch.errors import DeepPatchError
from deeppatch.evaluation import perturbation_report
from deeppatch.models.checkpoint import LoadedModel, load_model, save_model
from deeppatch.paths import pretrained_path, run_dir
from deeppatch.perturbations import get_perturbation
from deeppatch.perturbations.base import Perturbation
from deeppatch.repair_tools import perturbed_val
from deeppatch.seeding import seed_everything
from deeppatch.storage import Workspace, atomic_write_json, ensure_writable_dir, read_json
from deeppatch.technique.blame import blame
from deeppatch.technique.blame_common import FORMAT as BLAME_FORMAT
from deeppatch.technique.deeppatch_corrector import DeepPatchParams, patch_model
from deeppatch.technique.diagnostics import validation_diagnostics
from deeppatch.technique.switch import SwitchedModel
from deeppatch.versions import environment_versions

RATIOESTIM_RATIOS = (0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95)


@dataclass
class StageContext:
    """What every stage needs: the data, the model under maintenance, where files go."""

    dataset: str
    model_name: str
    output_dir: Path
    device: torch.device
    seed: int
    splits: Splits
    family: Perturbation
    base: LoadedModel
    data_dir: str | None = None
    noise_type: str = "blur"
    checkpoint: str | None = None

    @property
    def folder(self) -> Path:
        return run_dir(self.output_dir, self.dataset, self.model_name)

    @property
    def flags(self) -> str:
        """The flags that located this context, for hints that repeat the user's command faithfully."""
        parts = [f"-m {self.model_name}", f"-d {self.dataset}"]
        if str(self.output_dir) != "output":
            parts.append(f"--output_dir {self.output_dir}")
        if self.data_dir:
            parts.append(f"--data_dir {self.data_dir}")
        if self.noise_type != "blur":
            parts.append(f"-n {self.noise_type}")
        if self.seed != 2021:
            parts.append(f"--seed {self.seed}")
        if self.checkpoint:
            parts.append(f"--checkpoint {self.checkpoint}")
        return " ".join(parts)


def open_context(*, model: str, dataset: str, data_dir: str | None, output_dir: str, device: torch.device,
                 seed: int, noise_type: str, download: bool, val_fraction: float, checkpoint: str | None = None
                 ) -> StageContext:
    """Load the data and the model under maintenance (the pretrain stage's checkpoint by default)."""
    family = get_perturbation(noise_type)
    path = Path(checkpoint) if checkpoint else pretrained_path(output_dir, dataset, model)
    if not path.is_file():
        if checkpoint:
            raise DeepPatchError(f"checkpoint not found: {str(path)!r}")
        extra = "".join(f" {flag} {value}" for flag, value in (("--output_dir", output_dir), ("--data_dir", data_dir))
                        if value and str(value) != "output")
        raise DeepPatchError(f"no model under maintenance at {path}; run 'deeppatch pretrain -m {model} -d "
                             f"{dataset}{extra}' first or pass --checkpoint")
    base = load_model(path, expect_arch=model, expect_info=get_dataset_source(dataset).info(), device=device)
    seed_everything(seed)
    splits = load_splits(dataset, data_dir, download=download, val_fraction=val_fraction)
    ensure_writable_dir(run_dir(output_dir, dataset, model))
    return StageContext(dataset, model, Path(output_dir), device, seed, splits, family, base, data_dir=data_dir,
                        noise_type=noise_type, checkpoint=checkpoint)


def ranking_path(ctx: StageContext, method: str) -> Path:
    return ctx.folder / f"susp_filters_{method}.json"


def run_assess(ctx: StageContext, method: str, *, engine: str = "auto", batch_size: int = 500,
               show_progress: bool | None = None, quantize: bool = True) -> dict[str, Any]:
    """Blame every filter; write susp_filters_<method>.json (ratioestim uses perfloss's ranking)."""
    blame_method = "perfloss" if method == "ratioestim" else method
    result = blame(ctx.base.model, blame_method, ctx.splits.val, ctx.family, seed=ctx.seed, device=ctx.device,
                   batch_size=batch_size, engine=engine, show_progress=show_progress, quantize=quantize)
    doc = result.to_json(dataset=ctx.dataset, model=ctx.model_name, perturbation=ctx.family.name,
                         conditions=list(ctx.family.conditions), seed=ctx.seed, versions=environment_versions(),
                         quantized=quantize)
    path = atomic_write_json(doc, ranking_path(ctx, blame_method))
    return {"path": str(path), "method": blame_method, "base_accuracy": result.base_accuracy,
            "seconds": result.seconds, "engine": result.engine, "filters": result.details["filters"],
            "n_images": result.n_images}


def read_ranking(ctx: StageContext, method: str) -> dict[str, dict[str, list]]:
    path = ranking_path(ctx, method)
    if not path.is_file():
        raise DeepPatchError(f"no blame ranking at {path}; run 'deeppatch assess {ctx.flags} -f {method}' first")
    doc = read_json(path)
    if doc.get("format") != BLAME_FORMAT or "layers" not in doc:
        raise DeepPatchError(f"{path} is not a blame ranking file ({BLAME_FORMAT})")
    return doc["layers"]


def patch_tag(method: str, crt_type: str, side: str, ratio: float) -> str:
    tag = f"patch_{method}_{crt_type}"
    if side != "front":
        tag += f"_{side}"
    if abs(ratio - 0.25) > 1e-9 or method == "ratioestim":
        tag += f"_r{round(ratio * 100)}"
    return tag


def make_task(ctx: StageContext, *, epochs: int | None, train_subset: int | None, batch_size: int | None,
              resume: bool, tag: str, show_progress: bool | None = None) -> RepairTask:
    return RepairTask(model=ctx.base.model, splits=ctx.splits, perturbation=ctx.family, device=ctx.device,
                      seed=ctx.seed, budget=Budget(epochs, train_subset, batch_size),
                      workspace=Workspace(state_dir=ctx.folder / f"{tag}.work", resume=resume),
                      show_progress=show_progress)


def run_correct_patch(ctx: StageContext, params: DeepPatchParams, method: str, *, train_subset: int | None,
                      resume: bool, show_progress: bool | None = None) -> list[dict[str, Any]]:
    """Patch with the ranking from assess; ratioestim sweeps the ratio (reference bug 13 fixed; docs/deeppatch.md)."""
    ratios = RATIOESTIM_RATIOS if method == "ratioestim" else (params.ratio,)
    ranking = None if params.side == "random" else read_ranking(ctx, "perfloss" if method == "ratioestim" else method)
    outputs = []
    for ratio in ratios:
        p = DeepPatchParams(**{**params.__dict__, "ratio": ratio, "blame": "perfloss" if method == "ratioestim"
                               else method})
        tag = patch_tag(method, p.unit, p.side, ratio)
        task = make_task(ctx, epochs=None, train_subset=train_subset, batch_size=None, resume=resume, tag=tag,
                         show_progress=show_progress)
        t0 = time.perf_counter()
        model, extra = patch_model(task, p, ranking)
        extra["blame"] = {"method": p.blame, "ranking_file": str(ranking_path(ctx, p.blame))}
        pv = perturbed_val(task)
        diagnostics = validation_diagnostics(model, pv.clean, pv.perturbed, list(ctx.family.conditions), ctx.device)
        wall = time.perf_counter() - t0
        ckpt = save_model(ctx.folder / f"model_{tag}.pt", model, arch=ctx.base.arch, info=ctx.splits.info,
                          kind="deeppatch", extra=extra, meta={"stage": "correct", "tag": tag, "seed": ctx.seed,
                                                              "wall_time_s": wall})
        summary = {"tag": tag, "checkpoint": str(ckpt), "wall_time_s": wall, "training": extra["training"],
                   "history": extra["history"], "reference_calibration": extra["reference_calibration"],
                   "learned_gate": extra["learned_gate"], "patched_layers": len(extra["specs"]),
                   "skipped_layers": extra["skipped"], "diagnostics_val": [d.to_dict() for d in diagnostics],
                   "params": extra["params"], "versions": environment_versions()}
        atomic_write_json(summary, ctx.folder / f"correct_{tag}.json")
        outputs.append(summary)
    return outputs


def run_correct_corrector(ctx: StageContext, name: str, params: dict[str, Any], *, epochs: int | None,
                          train_subset: int | None, batch_size: int | None, resume: bool,
                          show_progress: bool | None = None) -> dict[str, Any]:
    """Any other corrector (finetune, ...) through the Corrector interface."""
    corrector = get_corrector(name, **params)
    task = make_task(ctx, epochs=epochs, train_subset=train_subset, batch_size=batch_size, resume=resume, tag=name,
                     show_progress=show_progress)
    repaired, cost = run_repair(corrector, task)
    ckpt = save_model(ctx.folder / f"model_{name}.pt", repaired.model, arch=ctx.base.arch, info=ctx.splits.info,
                      kind=repaired.kind, extra=repaired.extra, meta={"stage": "correct", "corrector": name,
                                                                      "params": corrector.params_dict()})
    summary = {"tag": name, "checkpoint": str(ckpt), "cost": asdict(cost),
               "diagnostics_val": [d.to_dict() for d in repaired.diagnostics], "params": corrector.params_dict(),
               "versions": environment_versions()}
    atomic_write_json(summary, ctx.folder / f"correct_{name}.json")
    return summary


# --------------------------------------------------------------------------------------------
# evaluate


def deeppatch_table(model: SwitchedModel, base: nn.Module, test: TensorSplit, family: Perturbation,
                    device: torch.device, batch_size: int, routings: list[str], gates: list[str]
                    ) -> dict[str, dict[str, float]]:
    """The paper's table: clean, each condition, their mean and the union, per variant.

    Each condition is evaluated on its own homogeneous, unshuffled batches (as the reference's
    loaders), so batch-majority routing votes on all-clean or all-perturbed batches.
    """
    table = {"original": perturbation_report(base, test, family, batch_size=batch_size, device=device,
                                             desc="original")}
    saved = (model.gate, model.routing, model.mode)
    model.configure(mode="patched")
    table["always patched (no switch)"] = perturbation_report(model, test, family, batch_size=batch_size,
                                                              device=device, desc="patched")
    model.configure(mode="switch")
    for gate in gates:
        for routing in routings:
            if gate == "learned" and model.learned_gate is None:
                continue
            model.configure(gate=gate, routing=routing)
            table[f"switch {routing} ({gate} gate)"] = perturbation_report(
                model, test, family, batch_size=batch_size, device=device, desc=f"{routing} {gate}")
    model.configure(gate=saved[0], routing=saved[1], mode=saved[2])
    return table


def gate_cost(model: SwitchedModel, test: TensorSplit, device: torch.device, batch_size: int) -> dict[str, Any]:
    """Wall time of the original path vs the switched model on clean inputs, and the gate size."""
    x = next(iter(test.head(batch_size).batches(batch_size, device=device)))[0]
    timings = {}
    saved = (model.gate, model.mode)
    for label, gate, mode in (("original", model.gate, "original"), ("reference", "reference", "switch"),
                              ("learned", "learned", "switch")):
        if gate == "learned" and model.learned_gate is None:
            continue
        model.configure(gate=gate, mode=mode)
        with torch.inference_mode():
            model(x)
            t0 = time.perf_counter()
            for _ in range(5):
                model(x)
        timings[label] = (time.perf_counter() - t0) / 5 / len(x) * 1e6
    model.configure(gate=saved[0], mode=saved[1])
    out: dict[str, Any] = {"us_per_image": timings, "batch_size": len(x)}
    if model.learned_gate is not None:
        out["learned_gate_params"] = sum(p.numel() for p in model.learned_gate.parameters())
    return out
