"""What every switched model offers (DeepPatch's `SwitchedModel`, `switching.PathSwitch` around any
corrector), so suites can evaluate and attack a switch without knowing who built it.

A switched model routes each input to one of two paths: the model under maintenance ("original")
or the repaired computation ("repaired"). It provides

* ``paths() -> (original, repaired)``: each path as a module of its own (a full forward of one);
* ``gate_logit(x) -> (N,)``: a real score per input, the input goes to the repaired path iff > 0
  (the threshold is folded in); computed in fp32 whatever the surrounding autocast;
* ``route(x) -> (N,) bool``: the decision the model takes on `x` (True = repaired path).

The routing itself is a hard threshold without a gradient. `RelaxedSwitch` is the smooth
surrogate an adaptive attacker differentiates through: the paths' logits mixed by
``sigmoid(gate_logit / temperature)``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Switched(Protocol):
    def paths(self) -> tuple[nn.Module, nn.Module]: ...

    def gate_logit(self, x: torch.Tensor) -> torch.Tensor: ...

    def route(self, x: torch.Tensor) -> torch.Tensor: ...


def is_switched(model: Any) -> bool:
    """True for a model that routes between two paths (see the module docstring)."""
    return isinstance(model, nn.Module) and isinstance(model, Switched)


class RelaxedSwitch(nn.Module):
    """A differentiable stand-in for a switched model: ``s * repaired(x) + (1 - s) * original(x)``
    with ``s = sigmoid(gate_logit(x) / temperature)``; as the temperature goes to 0 it routes as the
    switch does. For attacks only (both paths run on every input)."""

    def __init__(self, switched: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        if not is_switched(switched):
            raise TypeError(f"{type(switched).__name__} is not a switched model")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.switched = switched
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        original, repaired = self.switched.paths()
        s = torch.sigmoid(self.switched.gate_logit(x) / self.temperature).unsqueeze(1)
        return s * repaired(x).float() + (1 - s) * original(x).float()
