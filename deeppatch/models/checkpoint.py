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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from deeppatch.data import DatasetInfo
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.models import robustbench_models
from deeppatch.models.registry import create_model
from deeppatch.models.state import info_from_dict, info_to_dict, load_state_strict
from deeppatch.storage import atomic_torch_save, safe_torch_load

FORMAT = "deeppatch.model/1"
Restorer = Callable[[Mapping[str, Any]], nn.Module]


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
    """Write a self-describing checkpoint; `kind` names how `load_model` rebuilds it (see `restorers`)."""
    if not kind or not isinstance(kind, str):
        raise DeepPatchError(f"checkpoint kind must be a non-empty name, got {kind!r}")
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
    for key, kind in (("kind", str), ("arch", str), ("dataset", dict), ("state_dict", dict)):
        if not isinstance(record.get(key), kind):
            raise DeepPatchError(f"checkpoint {path} is malformed: field {key!r} is missing or not a {kind.__name__}")
    try:
        info_from_dict(record["dataset"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DeepPatchError(f"checkpoint {path} is malformed: its data set description lacks {exc}") from None
    return record


def restore_plain(record: Mapping[str, Any]) -> nn.Module:
    model = create_model(str(record["arch"]), info_from_dict(record["dataset"]))
    load_state_strict(model, record["state_dict"], f"architecture {record['arch']!r}")
    return model


BUILTIN_RESTORERS: Mapping[str, Restorer] = MappingProxyType({
    "plain": restore_plain,
    "robustbench": robustbench_models.restore_from_record,
})


def load_model(
    path: str | Path, *, expect_arch: str | None = None, expect_dataset: str | None = None,
    device: torch.device | str = "cpu", restorers: Mapping[str, Restorer] | None = None,
    expect_info: DatasetInfo | None = None,
) -> LoadedModel:
    """Load a DeepPatch model checkpoint; checks it is for the architecture and data set asked.

    Plain zoo and RobustBench models rebuild here; other kinds (a repaired model's) need their
    `restorers` (kind -> function(record) -> module), which the correctors provide
    (`deeppatch.corrector.checkpoint_restorers`).
    """
    record = read_record(path)
    if expect_arch is not None and record["arch"] != expect_arch:
        raise DeepPatchError(
            f"checkpoint {path} holds architecture {record['arch']!r}, but -m {expect_arch} was asked; "
            f"pass -m {record['arch']} or another checkpoint"
        )
    ds = record["dataset"]["name"]
    if expect_dataset is not None and ds != expect_dataset:
        raise DeepPatchError(f"checkpoint {path} was made for data set {ds!r}, not {expect_dataset!r}")
    if expect_info is not None:
        have = info_from_dict(record["dataset"])
        for what, got, want in (("data set", have.name, expect_info.name),
                                ("class count", have.num_classes, expect_info.num_classes),
                                ("input shape", tuple(have.image_shape), tuple(expect_info.image_shape))):
            if got != want:
                raise DeepPatchError(f"checkpoint {path} was made for {what} {got!r}, but the data is {want!r}")
    kind = record.get("kind", "plain")
    table = {**BUILTIN_RESTORERS, **(restorers or {})}
    if kind not in table:
        raise unknown_choice(f"checkpoint kind in {path}:", kind, table)
    model = table[kind](record)
    return LoadedModel(model.to(device).eval(), record, Path(path))
