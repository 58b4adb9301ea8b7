"""The Python API: repair and evaluate a model from a notebook in a few lines.

    import deeppatch as dp
    data = dp.load_data("fashion_mnist")                      # any registered data set
    model = dp.load_model("path/or/zoo-name", data)           # or ANY nn.Module taking [0, 1] pixels
    model = dp.train("smallcnn", data, epochs=6)              # from scratch, same recipe as pretrain
    fixed = dp.repair(model, data, "deeppatch", perturbation="blur", epochs=5)
    table = dp.evaluate({"original": model, "deeppatch": fixed}, data, suites=["clean", "blur"])
    dp.report(table, "reports/mine")

Every function here is a thin layer over the ones the CLI and the harness call (`pretrain.obtain_model`,
`corrector.run_repair`, `harness.evaluate`, `report.build_report`): one path, the same validation and
the same one-line `DeepPatchError`s. Documented in docs/python-api.md.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from deeppatch.corrector import (
    Budget,
    Corrector,
    RepairCost,
    RepairTask,
    checkpoint_restorers,
    corrector_registry,
    get_corrector,
    run_repair,
)
from deeppatch.data import Splits, get_dataset_source, load_splits, stratified_subset, to_float
from deeppatch.device import resolve_device
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.harness.evaluate import evaluate_model, full_rows
from deeppatch.models.checkpoint import load_model as load_checkpoint
from deeppatch.models.registry import check_model_name
from deeppatch.perturbations import get_perturbation
from deeppatch.pretrain import PretrainConfig, default_epochs, obtain_model
from deeppatch.reporting.build import build_report
from deeppatch.results import COLUMNS, rows_to_frame, write_cell_rows
from deeppatch.seeding import seed_everything
from deeppatch.storage import atomic_write_json, stable_hash
from deeppatch.suites import get_suite
from deeppatch.technique.gating import SWITCHES, SwitchedCorrector
from deeppatch.versions import environment_versions

__all__ = ["Budget", "evaluate", "get_corrector", "list_correctors", "load_data", "load_model", "repair", "report",
           "train"]

REPAIR_INFO = "repair_info"  # attribute set on a repaired model (as timm sets `pretrained_cfg`)


def load_data(name: str = "fashion_mnist", data_dir: str | os.PathLike | None = None, *, download: bool = False,
              val_fraction: float = 0.02, split_seed: int = 2021) -> Splits:
    """Train / val / test of a registered data set as [0, 1] images (val: a seeded stratified slice of train)."""
    get_dataset_source(name)
    return load_splits(name, data_dir, download=download, val_fraction=val_fraction, split_seed=split_seed)


def _check_model(model: nn.Module, data: Splits, device: torch.device) -> nn.Module:
    """A model must map the data set's images to one logit per class; say so in one line if not."""
    if not isinstance(model, nn.Module):
        raise DeepPatchError(f"expected a torch.nn.Module, got {type(model).__name__}")
    x = to_float(data.val.x[:2]).to(device)
    model = model.to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise DeepPatchError(f"the model cannot take {data.info.name}'s images of shape "
                             f"{tuple(x.shape[1:])}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != data.info.num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DeepPatchError(f"the model maps {data.info.name}'s images to {shape}; expected (batch, "
                             f"{data.info.num_classes}) logits")
    return model


def load_model(source: str | os.PathLike | nn.Module, data: Splits, *, device: str = "auto",
               download: bool = False) -> nn.Module:
    """The model under maintenance: a checkpoint file of ours, a zoo name with release weights
    (e.g. "resnet20" on CIFAR-10), "robustbench:<name>", or any nn.Module (checked against `data`)."""
    dev = resolve_device(device)
    if isinstance(source, nn.Module):
        return _check_model(source, data, dev).eval()
    text = str(source)
    if Path(text).suffix == ".pt" or Path(text).is_file():
        loaded = load_checkpoint(text, expect_dataset=data.info.name, device=dev,
                                 restorers={**checkpoint_restorers(), **SwitchedCorrector.restorers()})
        return loaded.model
    check_model_name(text)
    cfg = PretrainConfig(model=text, dataset=data.info.name, weights="pretrained", download=download)
    model, _, _ = obtain_model(cfg, data, dev, None, 0)
    return _check_model(model, data, dev).eval()


def train(arch: str, data: Splits, *, epochs: int | None = None, lr: float = 0.05, batch_size: int = 128,
          train_subset: int | None = None, seed: int = 2021, device: str = "auto") -> nn.Module:
    """Train zoo architecture `arch` from scratch on `data` with the pretrain stage's recipe
    (SGD, momentum 0.9, weight decay 5e-4, cosine schedule, best epoch on val)."""
    check_model_name(arch)
    for what, value in (("epochs", epochs), ("batch_size", batch_size), ("train_subset", train_subset)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise DeepPatchError(f"{what} must be a positive integer, got {value!r}")
    if not lr > 0:
        raise DeepPatchError(f"lr must be positive, got {lr!r}")
    dev = resolve_device(device)
    seed_everything(seed)
    cfg = PretrainConfig(model=arch, dataset=data.info.name, lr=lr, batch_size=batch_size, seed=seed,
                         weights="scratch", train_subset=train_subset)
    n = epochs if epochs is not None else default_epochs(data.info.name)
    model, _, _ = obtain_model(cfg, data, dev, None, n)
    return model.eval()


def list_correctors(plugin_dirs: Iterable[str | os.PathLike] = ()) -> dict[str, str]:
    """Every registered corrector's name and one-line summary."""
    return {name: cls.summary() for name, cls in sorted(corrector_registry(plugin_dirs).items())}


def repair(model: nn.Module, data: Splits, corrector: str | Corrector = "deeppatch", *, perturbation: str = "blur",
           epochs: int | None = None, train_subset: int | None = None, batch_size: int | None = None,
           seed: int = 2021, device: str = "auto", plugin_dirs: Iterable[str | os.PathLike] = (),
           show_progress: bool | None = None, switch: str = "none", gate_target: str = "auto",
           **params: Any) -> nn.Module:
    """Repair `model` for the maintenance `perturbation` family with `corrector` and its `params`.

    `epochs`, `train_subset` and `batch_size` are the budget (None: the corrector's defaults).
    ``switch="learned"`` puts a learned gate in front (see technique/gating.py): per input, the model
    under maintenance or the repaired one; `gate_target` is "perturbed", "correct", "condition" or "auto".
    Returns the repaired model; `model` itself is not modified. What the repair cost is in the
    returned model's `repair_info` attribute (read by `evaluate`).
    """
    dev = resolve_device(device)
    if isinstance(corrector, str):
        corrector = get_corrector(corrector, plugin_dirs=plugin_dirs, **params)
    elif params:
        raise DeepPatchError("pass parameters either to get_corrector(...) or to repair(...), not both")
    for what, value in (("epochs", epochs), ("train_subset", train_subset), ("batch_size", batch_size)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise DeepPatchError(f"{what} must be a positive integer, got {value!r}")
    if switch not in SWITCHES:
        raise unknown_choice("switch", switch, SWITCHES)
    if switch == "learned":
        if type(corrector).has_switch:
            raise DeepPatchError(f"corrector {corrector.name!r} has its own switch; set its gate parameters instead")
        corrector = SwitchedCorrector(corrector, target=gate_target)
    family = get_perturbation(perturbation)
    base = _check_model(model, data, dev).eval()
    seed_everything(seed)
    task = RepairTask(model=base, splits=data, perturbation=family, device=dev, seed=seed,
                      budget=Budget(epochs=epochs, train_subset=train_subset, batch_size=batch_size),
                      show_progress=show_progress)
    repaired, cost = run_repair(corrector, task)
    fixed = repaired.model.eval()
    inner = corrector.inner if isinstance(corrector, SwitchedCorrector) else corrector
    setattr(fixed, REPAIR_INFO, {"corrector": inner.name, "params": inner.params_dict(),
                                 "switch": switch, "gate_target": gate_target if switch != "none" else "",
                                 "model": _model_name(model), "code_hash": type(inner).code_hash(),
                                 "perturbation": perturbation, "seed": seed,
                                 "budget": {"epochs": epochs, "train_subset": train_subset,
                                            "batch_size": batch_size},
                                 "cost": asdict(cost), "diagnostics": [d.to_dict() for d in repaired.diagnostics]})
    return fixed


def evaluate(models: nn.Module | Mapping[str, nn.Module], data: Splits, suites: Sequence[str] | Mapping[str, Any] = (
        "clean", "blur"), *, n_eval: int | None = None, seed: int = 0, device: str = "auto", batch_size: int = 512,
        plugin_dirs: Iterable[str | os.PathLike] = ()) -> pd.DataFrame:
    """Evaluate each model on the suites (the same images for all) and return the result rows.

    `suites`: names (default settings) or {name: settings}. `n_eval`: a seeded stratified subset of the
    test split. The frame has the harness's row columns (`deeppatch.results.COLUMNS`); `report` turns it
    into the harness's report.
    """
    if isinstance(models, nn.Module):
        models = {"model": models}
    if not models:
        raise DeepPatchError("evaluate needs at least one model")
    settings = dict(suites) if isinstance(suites, Mapping) else {name: {} for name in suites}
    for name, values in settings.items():
        get_suite(name, **dict(values or {}))  # unknown suites and settings fail before any work
    if n_eval is not None and (not isinstance(n_eval, int) or n_eval <= 0):
        raise DeepPatchError(f"n_eval must be a positive integer, got {n_eval!r}")
    dev = resolve_device(device)
    test = stratified_subset(data.test, n_eval, seed).to(dev)
    rows: list[dict[str, Any]] = []
    for label, model in models.items():
        info = getattr(model, REPAIR_INFO, None) or {}
        name = info.get("corrector", "none")
        corrector = get_corrector(name, plugin_dirs=plugin_dirs, **info.get("params", {})) if info else None
        if corrector is not None and info.get("switch", "none") != "none":
            corrector = SwitchedCorrector(corrector, target=info["gate_target"])
        family = get_perturbation(info["perturbation"]) if info else None
        measured = evaluate_model(_check_model(model, data, dev), test, data.info, settings, device=dev, seed=seed,
                                  batch_size=batch_size, corrector=corrector, family=family)
        cost = RepairCost(**info["cost"]) if info else None
        params = dict(info.get("params", {}))
        if info.get("switch", "none") != "none":
            params.update(switch=info["switch"], gate_target=info["gate_target"])
        rows.extend(full_rows(measured, benchmark="python-api", dataset=data.info.name,
                              model=info.get("model") or _model_name(model), label=str(label), corrector=name,
                              params=params, budget=info.get("budget", {}), seed=seed, cost=cost, device=dev,
                              code_hash=info.get("code_hash", "")))
    return rows_to_frame(rows)


def _model_name(model: nn.Module) -> str:
    """What a report calls the model under maintenance: the name its repairs inherit, else its class."""
    info = getattr(model, REPAIR_INFO, None) or {}
    return str(info.get("model") or type(model).__name__)


def report(table: pd.DataFrame, out_dir: str | os.PathLike, *, name: str = "python-api") -> dict[str, Path]:
    """Write the harness's report (Markdown, HTML, CSV, LaTeX, plots) for rows from `evaluate`."""
    if not isinstance(table, pd.DataFrame) or table.empty:
        raise DeepPatchError("report needs the non-empty table that dp.evaluate returns")
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DeepPatchError(f"the table lacks the result columns {', '.join(missing)}; pass what dp.evaluate returns")
    rows = table[list(COLUMNS)].astype(object).where(table[list(COLUMNS)].notna(), None).to_dict("records")
    with tempfile.TemporaryDirectory(prefix="deeppatch-report-") as tmp:
        atomic_write_json({"benchmark": name, "description": "rows from the Python API (deeppatch.api.evaluate)",
                           "versions": environment_versions(), "device": str(rows[0].get("device") or ""),
                           "seeds": sorted({int(r["seed"]) for r in rows})}, Path(tmp) / "manifest.json")
        write_cell_rows(tmp, f"{name}__{stable_hash(rows)}", rows)
        return build_report(tmp, out_dir)
