"""The suite interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from deeppatch.data import DatasetInfo, TensorSplit
from deeppatch.errors import DeepPatchError
from deeppatch.results import SuiteRow


@dataclass
class SuiteContext:
    """What a suite gets besides the model: the test data and where it may cache things."""

    info: DatasetInfo
    test: TensorSplit  # clean test images (uint8 or float in [0, 1]), already subset if asked
    device: torch.device
    seed: int = 0
    batch_size: int = 512
    cache_dir: Path | None = None  # materialised perturbed sets (generated corruptions, spatial)
    data_dir: Path | None = None  # where released arrays (CIFAR-10-C) may be found


class Suite(ABC):
    """Subclasses set `name`, validate settings in __init__ and implement `evaluate`."""

    name: ClassVar[str]
    # setting name -> default; anything else passed to __init__ is rejected
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **settings: Any) -> None:
        unknown = set(settings) - set(self.defaults)
        if unknown:
            raise DeepPatchError(
                f"unknown setting(s) {', '.join(sorted(unknown))} for suite {self.name!r}; "
                f"valid: {', '.join(sorted(self.defaults)) or '(none)'}"
            )
        self.settings = {**self.defaults, **settings}

    @abstractmethod
    def evaluate(self, model: nn.Module, ctx: SuiteContext) -> list[SuiteRow]:
        """Measure `model` (put in eval mode by the suite) on `ctx.test`."""

    def describe(self) -> dict[str, Any]:
        return {"suite": self.name, **self.settings}
