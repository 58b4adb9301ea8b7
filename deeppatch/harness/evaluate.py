"""Evaluate one model on a set of suites and turn the measurements into full result rows.

The harness's cells and the Python API (`deeppatch.api.evaluate`) both call these functions, so a
notebook table and a benchmark table hold the same rows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deeppatch.corrector import Corrector, RepairCost
from deeppatch.data import DatasetInfo, TensorSplit, stratified_subset
from deeppatch.perturbations.base import Perturbation
from deeppatch.results import SuiteRow, complete_row
from deeppatch.storage import stable_hash
from deeppatch.suites import SuiteContext, get_suite
from deeppatch.versions import device_name, environment_versions


def evaluate_model(
    model: nn.Module, test: TensorSplit, info: DatasetInfo, suites: Mapping[str, Mapping[str, Any]], *,
    device: torch.device, seed: int, batch_size: int = 512, suite_n_eval: Mapping[str, int | None] | None = None,
    cache_dir: Path | None = None, data_dir: Path | None = None, corrector: Corrector | None = None,
    family: Perturbation | None = None, timings: dict[str, float] | None = None,
) -> list[SuiteRow]:
    """Every suite's rows for `model` on `test` (a suite's own n_eval takes a seeded stratified subset),
    then the corrector's extra rows (e.g. DeepPatch's routing) when a corrector and family are given."""
    model = model.to(device).eval()
    rows: list[SuiteRow] = []
    for name, settings in suites.items():
        sub = stratified_subset(test, (suite_n_eval or {}).get(name), seed)
        ctx = SuiteContext(info, sub, device, seed=seed, batch_size=batch_size, cache_dir=cache_dir,
                           data_dir=data_dir)
        t0 = time.perf_counter()
        rows.extend(get_suite(name, **settings).evaluate(model, ctx))
        _add(timings, f"suite {name}", time.perf_counter() - t0)
    if corrector is not None and family is not None:
        t0 = time.perf_counter()
        rows.extend(corrector.evaluation_rows(model, test, family, device, batch_size))
        _add(timings, "corrector diagnostics", time.perf_counter() - t0)
    return rows


def _add(timings: dict[str, float] | None, stage: str, seconds: float) -> None:
    if timings is not None:
        timings[stage] = timings.get(stage, 0.0) + seconds


def full_rows(rows: list[SuiteRow], *, benchmark: str, dataset: str, model: str, label: str, corrector: str,
              params: Mapping[str, Any], budget: Mapping[str, Any], seed: int, cost: RepairCost | None,
              device: torch.device, code_hash: str = "") -> list[dict[str, Any]]:
    """Complete suite rows with what produced them: the cell's identity, the repair's cost, provenance."""
    identity = {
        "benchmark": benchmark, "dataset": dataset, "model": model, "corrector": label,
        "params": {"name": corrector, **params},
        "params_hash": stable_hash({"name": corrector, "params": dict(params), "budget": dict(budget)}),
        "seed": seed, "repair_time_s": cost.wall_time_s if cost else 0.0,
        "trainable_params": cost.trainable_params if cost else 0, "added_params": cost.added_params if cost else 0,
        "epochs": cost.epochs if cost else 0, "device": device_name(device), "versions": environment_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "code_hash": code_hash,
        # whether the repair's training beat its starting point on validation ("best") or not
        "kept": str(cost.details.get("kept", "")) if cost else "",
    }
    return [complete_row(r, identity) for r in rows]
