"""The perturbation-family interface used for maintenance data, blame and the switch.

A family has a fixed, ordered list of conditions (e.g. the six blur sigmas). Deterministic
families ignore the generator; random ones (spatial, some corruptions) draw from it, so a fixed
perturbed set is a pure function of (data, seed).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch

from deeppatch.data import TensorSplit, to_float
from deeppatch.errors import unknown_choice


class Perturbation(ABC):
    """A family of perturbations with ordered conditions (severities)."""

    name: str = ""

    @property
    @abstractmethod
    def conditions(self) -> Sequence[str]:
        """Condition labels in order, e.g. ("sigma=0.5", ..., "sigma=3.0")."""

    @abstractmethod
    def apply(self, x: torch.Tensor, condition: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Perturb a float batch in [0, 1] under condition index `condition`; returns [0, 1]."""

    def random_mix(
        self, x: torch.Tensor, generator: torch.Generator, p_clean: float = 0.5
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample: clean with probability `p_clean`, else a uniformly drawn condition.

        Returns (images, condition index per sample, -1 for clean). This is the reference's
        ``random`` training mode, with an owned generator instead of global state.
        """
        n = x.shape[0]
        gen_device = generator.device
        clean = torch.rand(n, generator=generator, device=gen_device) < p_clean
        cond = torch.randint(len(self.conditions), (n,), generator=generator, device=gen_device)
        cond = torch.where(clean, torch.full_like(cond, -1), cond).to(x.device)
        out = x.clone()
        for c in range(len(self.conditions)):
            idx = (cond == c).nonzero(as_tuple=True)[0]
            if len(idx):
                out[idx] = self.apply(x[idx], c, generator)
        return out, cond

    def perturb_split(
        self, split: TensorSplit, condition: int, *, batch_size: int = 1024,
        device: torch.device | str | None = None, generator: torch.Generator | None = None,
    ) -> TensorSplit:
        """A fixed perturbed copy of `split` under one condition (float images, on `device`)."""
        xs = []
        for start in range(0, len(split), batch_size):
            xb = to_float(split.x[start : start + batch_size].to(device or split.x.device))
            xs.append(self.apply(xb, condition, generator))
        return TensorSplit(torch.cat(xs) if xs else split.x.float(), split.y.to(device or split.y.device))

    def expand(
        self, split: TensorSplit, *, include_clean: bool = False, device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> TensorSplit:
        """All conditions concatenated (the reference's ``expand``; ``append`` with clean first)."""
        parts = []
        if include_clean:
            d = device or split.x.device
            parts.append(TensorSplit(to_float(split.x.to(d)), split.y.to(d)))
        for c in range(len(self.conditions)):
            parts.append(self.perturb_split(split, c, device=device, generator=generator))
        return TensorSplit(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))


# family name -> "module:class"; imported lazily so optional families cost nothing until used.
FAMILIES: Mapping[str, str] = MappingProxyType({
    "blur": "deeppatch.perturbations.blur:GaussianBlur",
    "spatial": "deeppatch.perturbations.spatial:SpatialTransforms",
    "corruptions": "deeppatch.perturbations.corruptions:CommonCorruptions",
})


def _load(path: str) -> Callable[..., Perturbation]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def perturbation_names() -> list[str]:
    return sorted(FAMILIES)


def get_perturbation(name: str, **kwargs: object) -> Perturbation:
    """A perturbation family by name ("blur"; "gaussian"/"gaussion" are the reference's names)."""
    aliases = {"gaussian": "blur", "gaussion": "blur"}
    key = aliases.get(name, name)
    if key not in FAMILIES:
        raise unknown_choice("perturbation", name, list(FAMILIES) + list(aliases))
    return _load(FAMILIES[key])(**kwargs)
