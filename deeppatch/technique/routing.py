"""Per-forward routing of a patched network: which inputs take the original path and which the patch.

A `Router` owned by each `PatchedNetwork` holds the current `Route` in a context variable (no global
state; reference bug 2 in docs/deeppatch.md). `mix` writes the patched rows into an original output.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Route:
    """The routing of one forward pass. In "switch" mode `mask` (True = patched) is set by the
    indicator; `pending` carries the indicator conv (and its input and output) to its BN, which
    computes the patched path there only if the gate needs it or for the inputs routed to it."""

    mode: str
    mask: torch.Tensor | None = None  # set through decide()
    share: str = ""  # once decided: "none", "all" or "some" of the inputs take the patched path
    rows: torch.Tensor | None = None  # the patched rows' indices when share == "some"
    pending: tuple[nn.Module, torch.Tensor, torch.Tensor] | None = None  # (PatchedConv, input, output)
    gate: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None
    gate_needs_patched: bool = True  # the reference gate compares both paths; the learned one does not
    stop_after_decision: bool = False  # raise StopForward once the mask is known

    def decide(self, mask: torch.Tensor) -> None:
        """Record the indicator's decision, and what every patched layer needs of it, once per forward."""
        self.mask = mask
        patched = int(mask.sum())
        self.share = "none" if patched == 0 else "all" if patched == mask.numel() else "some"
        self.rows = mask.nonzero(as_tuple=True)[0] if self.share == "some" else None


class StopForward(Exception):
    """Raised after the indicator decided, when only the routing decision is wanted."""


class Router:
    """Holds the current Route in a context variable of its own (re-entrant and thread-safe)."""

    def __init__(self) -> None:
        self._var: contextvars.ContextVar[Route | None] = contextvars.ContextVar(f"route-{id(self)}", default=None)
        self.default_mode = "patched"

    def current(self) -> Route:
        route = self._var.get()
        return route if route is not None else Route(self.default_mode)

    @contextmanager
    def use(self, route: Route) -> Iterator[Route]:
        token = self._var.set(route)
        try:
            yield route
        finally:
            self._var.reset(token)

    def __deepcopy__(self, memo: dict) -> Router:
        new = Router()
        new.default_mode = self.default_mode
        return new


def mix(orig: torch.Tensor, route: Route, patched_fn: Callable, inputs: torch.Tensor | tuple) -> torch.Tensor:
    """Original values for the inputs routed to the original path (untouched, bit for bit), patched for the others.

    `inputs` (a tensor or a tuple of tensors) is sliced to the patched rows before `patched_fn`. `orig`
    must be a fresh output of the caller's (its patched rows are overwritten in place: no full copy per
    layer; autograd allows it, as neither conv nor batch norm saves its output for backward).
    """
    if route.share == "none":
        return orig
    if route.share == "all":
        return patched_fn(inputs)
    idx = route.rows
    subset = tuple(t[idx] for t in inputs) if isinstance(inputs, tuple) else inputs[idx]
    return orig.index_put_((idx,), patched_fn(subset).to(orig.dtype))
