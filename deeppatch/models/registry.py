"""The model registry: name -> how to build it (like timm's `create_model`).

The table is built once from the family modules and is read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from torch import nn

from deeppatch.data import DatasetInfo
from deeppatch.errors import DeepPatchError
from deeppatch.models import mobilenetv2, resnet, shufflenetv2, small, vgg
from deeppatch.models.robustbench_models import create_robustbench_model, parse_model_spec


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    build: Callable[..., nn.Module]
    description: str


def _entries() -> Mapping[str, ModelEntry]:
    table: dict[str, ModelEntry] = {}
    families = [
        ("resnet", resnet.DEPTHS, resnet.build, "CIFAR ResNet, {} blocks per stage"),
        ("vgg", vgg.CONFIGS, vgg.build, "VGG with BatchNorm, {} conv layers"),
        ("mobilenetv2", mobilenetv2.WIDTHS, mobilenetv2.build, "MobileNetV2, width x{}"),
        ("shufflenetv2", shufflenetv2.CHANNELS, shufflenetv2.build, "ShuffleNetV2, stage channels {}"),
        ("small", small.CONFIGS, small.build, "small conv-BN-ReLU CNN, widths/pools/grid {}"),
    ]
    for family, names, build, text in families:
        for name, detail in names.items():
            if family == "vgg":
                detail = sum(1 for v in detail if v != "M")
            table[name] = ModelEntry(name, family, build, text.format(detail))
    return MappingProxyType(table)


MODELS: Mapping[str, ModelEntry] = _entries()


def model_names() -> list[str]:
    return sorted(MODELS)


def check_model_name(name: str) -> None:
    """Fail early on an unknown zoo name; RobustBench names are checked when loaded."""
    if not name.startswith("robustbench:"):
        get_entry(name)


def get_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        hint = " (RobustBench models are named robustbench:<name>)" if ":" not in name else ""
        raise DeepPatchError(
            f"unknown model {name!r}; valid choices: {', '.join(model_names())}{hint}"
        )
    return MODELS[name]


def create_model(name: str, info: DatasetInfo) -> nn.Module:
    """A freshly initialised `name` for data set `info` (classes, channels, normalisation).

    ``robustbench:[<threat>/]<name>`` builds that RobustBench zoo entry's architecture (no weights).
    """
    if name.startswith("robustbench:"):
        rb_name, threat = parse_model_spec(name)
        return create_robustbench_model(rb_name, info.name, threat)
    entry = get_entry(name)
    return entry.build(
        name, num_classes=info.num_classes, in_channels=info.in_channels, mean=info.mean, std=info.std
    )
