"""What the exact blame engines (blame.py) and the first-order estimate (blame_approx.py) share:
the methods, the result and its ranking, which convs are blamed, and the perturbed blame data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from deeppatch.data import TensorSplit, to_float
from deeppatch.errors import DeepPatchError
from deeppatch.perturbations.base import Perturbation
from deeppatch.seeding import make_generator

METHODS = ("perfloss", "featswap", "perfloss-fo")  # perfloss-fo: blame_approx.py, first order
FORMAT = "deeppatch.blame/1"


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every Conv2d in named_modules order: the unit of blame (stem, 1x1 and depthwise included)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@dataclass
class BlameResult:
    method: str
    base_accuracy: float  # of the model on the blame data, percent
    n_images: int
    scores: dict[str, list[float]]  # layer -> score per channel (channel order)
    engine: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def ranking(self) -> dict[str, dict[str, list]]:
        """layer -> {"score": sorted scores, "indices": channels, most blamed first}."""
        out = {}
        for layer, scores in self.scores.items():
            s = torch.tensor(scores, dtype=torch.float64)
            key = s if self.method == "perfloss" else -s
            order = torch.sort(key, stable=True).indices.tolist()
            out[layer] = {"score": [scores[i] for i in order], "indices": order}
        return out

    def to_json(self, **meta: Any) -> dict[str, Any]:
        return {"format": FORMAT, "method": self.method, "base_accuracy": self.base_accuracy,
                "n_images": self.n_images, "engine": self.engine, "seconds": self.seconds,
                "direction": "ascending" if self.method == "perfloss" else "descending",
                "layers": self.ranking(), **self.details, **meta}


# --------------------------------------------------------------------------------------------
# blame data


def select_convs(model: nn.Module, layers: list[str] | None) -> list[tuple[str, nn.Conv2d]]:
    """The model's convs, or those named in `layers` (an unknown name is an error naming it)."""
    convs = conv_layers(model)
    if layers is None:
        return convs
    unknown = set(layers) - {n for n, _ in convs}
    if unknown:
        raise DeepPatchError(f"not conv layers of this model: {', '.join(sorted(unknown))}")
    return [(n, m) for n, m in convs if n in layers]


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid, as the reference's perturbed images are (PIL on uint8 images)."""
    return torch.round(x * 255.0) / 255.0


def perfloss_data(val: TensorSplit, family: Perturbation, seed: int, device: torch.device,
                  quantize: bool = False) -> TensorSplit:
    """Every condition of the family applied to val, no clean images (the reference's ``expand``);
    `quantize`: rounded to 8 bits like the reference's blurred images."""
    data = family.expand(val.to(device), device=device, generator=make_generator(seed, "blame", "expand"))
    return TensorSplit(quantize8(data.x), data.y) if quantize else data


def featswap_data(val: TensorSplit, family: Perturbation, seed: int, device: torch.device,
                  quantize: bool = False) -> tuple[TensorSplit, TensorSplit]:
    """(clean val, noisy val) aligned image by image; noise drawn once from a seeded generator."""
    clean = val.to(device)
    x = to_float(clean.x)
    noisy, _ = family.random_mix(x, make_generator(seed, "blame", "featswap"), p_clean=0.5)
    return TensorSplit(x, clean.y), TensorSplit(quantize8(noisy) if quantize else noisy, clean.y)
