"""How a checkpoint stores what it needs to rebuild a model: the data set's description and strict
state dicts (shared by the zoo's and RobustBench's restorers, so neither imports the other)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deeppatch.data import DatasetInfo
from deeppatch.errors import DeepPatchError


def info_to_dict(info: DatasetInfo) -> dict[str, Any]:
    return {"name": info.name, "num_classes": info.num_classes, "image_shape": list(info.image_shape),
            "mean": list(info.mean), "std": list(info.std), "class_names": list(info.class_names)}


def info_from_dict(d: Mapping[str, Any]) -> DatasetInfo:
    return DatasetInfo(str(d["name"]), int(d["num_classes"]), tuple(int(v) for v in d["image_shape"]),
                       tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]),
                       tuple(d.get("class_names", ())))


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """`load_state_dict(strict=True)` with one clear line when the weights do not fit."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise DeepPatchError(f"checkpoint weights do not fit {what}: {detail[:200]}") from exc
