"""Self-describing model checkpoints: one file holds the architecture, the data set it was made
for and the weights, so every stage can load it without other files.

Format (a dict saved with torch.save, read with weights_only=True)::

    format: "deeppatch.model/1"
    kind: "plain" | "deeppatch" | "deepcorrect" | "robustbench" | ...   (how to rebuild it)
    arch: zoo name, e.g. "resnet20"
    dataset: {name, num_classes, image_shape, mean, std}
    state_dict: weights (and buffers) of the rebuilt module
    extra: kind-specific description (patched layers, indices, thresholds, ...)
    meta: free-form provenance (stage, epochs, metrics, versions)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from deeppatch.data import DatasetInfo
from deeppatch.errors import DeepPatchError
from deeppatch.storage import atomic_torch_save, safe_torch_load

FORMAT = "deeppatch.model/1"

# kind -> "module:function(record) -> nn.Module"; imported lazily.
RESTORERS: Mapping[str, str] = MappingProxyType({
    "plain": "deeppatch.models.checkpoint:restore_plain",
    "deeppatch": "deeppatch.technique.switch:restore_from_record",
    "deepcorrect": "deeppatch.technique.patching:restore_from_record",
    "robustbench": "deeppatch.models.robustbench_models:restore_from_record",
})


def info_to_dict(info: DatasetInfo) -> dict[str, Any]:
    return {"name": info.name, "num_classes": info.num_classes, "image_shape": list(info.image_shape),
            "mean": list(info.mean), "std": list(info.std), "class_names": list(info.class_names)}


def info_from_dict(d: Mapping[str, Any]) -> DatasetInfo:
    return DatasetInfo(str(d["name"]), int(d["num_classes"]), tuple(int(v) for v in d["image_shape"]),
                       tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]),
                       tuple(d.get("class_names", ())))


@dataclass
class LoadedModel:
    model: nn.Module
    record: dict[str, Any]
    path: Path

    @property
    def arch(self) -> str:
        return str(self.record["arch"])

    @property
    def kind(self) -> str:
        return str(self.record["kind"])

    @property
    def info(self) -> DatasetInfo:
        return info_from_dict(self.record["dataset"])


def save_model(
    path: str | Path, model: nn.Module, *, arch: str, info: DatasetInfo, kind: str = "plain",
    extra: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None,
) -> Path:
    if kind not in RESTORERS:
        raise DeepPatchError(f"unknown checkpoint kind {kind!r}; valid choices: {', '.join(RESTORERS)}")
    record = {
        "format": FORMAT, "kind": kind, "arch": arch, "dataset": info_to_dict(info),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}), "meta": dict(meta or {}),
    }
    return atomic_torch_save(record, path)


def read_record(path: str | Path) -> dict[str, Any]:
    record = safe_torch_load(path)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise DeepPatchError(
            f"{path} is not a DeepPatch model checkpoint (expected format {FORMAT!r}); "
            "training-state files (*.state.pt) cannot be evaluated directly"
        )
    return record


def restore_plain(record: Mapping[str, Any]) -> nn.Module:
    from deeppatch.models.registry import create_model

    model = create_model(str(record["arch"]), info_from_dict(record["dataset"]))
    load_state_strict(model, record["state_dict"], f"architecture {record['arch']!r}")
    return model


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise DeepPatchError(f"checkpoint weights do not fit {what}: {detail[:200]}") from exc


def load_model(
    path: str | Path, *, expect_arch: str | None = None, expect_dataset: str | None = None,
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """Load any DeepPatch model checkpoint; checks it is for the architecture and data set asked."""
    record = read_record(path)
    if expect_arch is not None and record["arch"] != expect_arch:
        raise DeepPatchError(
            f"checkpoint {path} holds architecture {record['arch']!r}, but -m {expect_arch} was asked; "
            f"pass -m {record['arch']} or another checkpoint"
        )
    ds = record["dataset"]["name"]
    if expect_dataset is not None and ds != expect_dataset:
        raise DeepPatchError(f"checkpoint {path} was made for data set {ds!r}, not {expect_dataset!r}")
    kind = record.get("kind", "plain")
    if kind not in RESTORERS:
        raise DeepPatchError(f"checkpoint {path} has unknown kind {kind!r}; valid choices: {', '.join(RESTORERS)}")
    module_name, _, func = RESTORERS[kind].partition(":")
    model = getattr(importlib.import_module(module_name), func)(record)
    return LoadedModel(model.to(device).eval(), record, Path(path))
