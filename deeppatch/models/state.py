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


def state_mismatch(model: nn.Module, state: Mapping[str, Any]) -> str | None:
    """What keeps `state` from loading strictly into `model`: the first missing, unexpected and
    wrongly shaped keys (None when it fits)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{label}: {', '.join(items[:3])}{more}")
    return "; ".join(parts) or None


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """`load_state_dict(strict=True)` with one clear line naming the first missing and unexpected keys."""
    if not isinstance(state, Mapping):
        raise DeepPatchError(f"checkpoint weights for {what} are not a state dict ({type(state).__name__})")
    problem = state_mismatch(model, state)
    if problem:
        raise DeepPatchError(f"checkpoint weights do not fit {what}: {problem}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise DeepPatchError(f"checkpoint weights do not fit {what}: {detail[:300]}") from exc
