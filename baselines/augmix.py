"""AugMix with the Jensen-Shannon consistency loss (Hendrycks et al., ICLR 2020).

Each training image gets two AugMix views. A view mixes `width` (3) chains of 1-3 random
operations (`depth` -1, the paper's and the official code's default; the DeepPatch reference fixed
it at 3, which `depth=3` reproduces) at severity 3: autocontrast, equalize, posterize, rotate,
solarize, shear_x/y, translate_x/y. Chain weights ~ Dirichlet(alpha, ...), and the result is
(1 - m) * image + m * mix with m ~ Beta(alpha, alpha), alpha 1. The loss is CE(clean) + 12 * JSD
of the clean and the two augmented predictions. SGD with Nesterov momentum, lr 0.01, momentum 0.9,
weight decay 5e-4, cosine per step down to 1e-6 (docs/deeppatch.md, The reference's defaults).

The operations run batched on [0, 1] tensors of ANY size: geometric ones as one per-sample affine
grid, translation as a fraction of the image side (the reference hard-coded 32 px, reference bug 25).
Their magnitudes follow the official code's `augmentations.py` (levels drawn in [0.1, severity]).
The base images are the maintenance stream (`p_clean` 0.5, the reference's blur-setting data);
`p_clean = 1` gives AugMix on clean data only, as in the AugMix paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn

from deeppatch.corrector import Corrector, Repaired, RepairTask
from deeppatch.errors import DeepPatchError
from deeppatch.repair_tools import EpochGenerator, SGDParams, fine_tune, maintenance_batches, p_clean_field

# --------------------------------------------------------------------------------------------
# operations: (images (n, C, H, W) in [0, 1], severity, generator) -> images


def _uniform(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device).to(device)


def _level(n: int, severity: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """The official `sample_level`: uniform in [0.1, severity], one per image."""
    return 0.1 + (severity - 0.1) * _uniform(n, gen, device)


def _signed(value: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = _uniform(len(value), gen, value.device) > 0.5
    return torch.where(flip, -value, value)


def affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample each image with its own 2x3 map from output to input pixel coordinates.

    Coordinates are continuous pixels with the origin at the top-left corner (PIL's convention);
    bilinear interpolation, zeros outside (PIL's fill).
    """
    _, _, h, w = x.shape
    a, b, c = matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 0, 2]
    d, e, f = matrix[:, 1, 0], matrix[:, 1, 1], matrix[:, 1, 2]
    theta = torch.stack([
        torch.stack([a, b * h / w, a + b * h / w + 2 * c / w - 1], dim=1),
        torch.stack([d * w / h, e, d * w / h + e + 2 * f / h - 1], dim=1),
    ], dim=1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_(0, 1)


def _identity_matrix(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(3, device=device)[:2].repeat(n, 1, 1)


def autocontrast(x: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    return TF.autocontrast(x)


def equalize(x: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    return TF.equalize(x)


def posterize(x: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    bits = 4 - (_level(len(x), severity, gen, x.device) * 4 / 10).floor().long()
    drop = (2 ** (8 - bits)).view(-1, 1, 1, 1)
    q = torch.round(x * 255).long()
    return (q - q % drop).to(x.dtype) / 255


def solarize(x: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    threshold = 256 - (_level(len(x), severity, gen, x.device) * 256 / 10).floor()
    return torch.where(x * 255 < threshold.view(-1, 1, 1, 1), x, 1 - x)


def rotate(x: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    degrees = _signed((_level(len(x), severity, gen, x.device) * 30 / 10).floor(), gen)
    rad = degrees * math.pi / 180
    _, _, h, w = x.shape
    cx, cy = w / 2, h / 2
    m = _identity_matrix(len(x), x.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = rad.cos(), -rad.sin(), rad.sin(), rad.cos()
    m[:, 0, 2] = cx - m[:, 0, 0] * cx - m[:, 0, 1] * cy
    m[:, 1, 2] = cy - m[:, 1, 0] * cx - m[:, 1, 1] * cy
    return affine(x, m)


def _shear(x: torch.Tensor, severity: float, gen: torch.Generator, entry: tuple[int, int]) -> torch.Tensor:
    m = _identity_matrix(len(x), x.device)
    m[:, entry[0], entry[1]] = _signed(_level(len(x), severity, gen, x.device) * 0.3 / 10, gen)
    return affine(x, m)


def shear_x(x: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    return _shear(x, severity, gen, (0, 1))


def shear_y(x: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    return _shear(x, severity, gen, (1, 0))


def _translate(x: torch.Tensor, severity: float, gen: torch.Generator, axis: int) -> torch.Tensor:
    side = x.shape[3] if axis == 0 else x.shape[2]
    pixels = _signed((_level(len(x), severity, gen, x.device) * (side / 3) / 10).floor(), gen)
    m = _identity_matrix(len(x), x.device)
    m[:, axis, 2] = pixels
    return affine(x, m)


def translate_x(x: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    return _translate(x, severity, gen, 0)


def translate_y(x: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    return _translate(x, severity, gen, 1)


Op = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]
OPS: tuple[Op, ...] = (autocontrast, equalize, posterize, rotate, solarize, shear_x, shear_y, translate_x,
                       translate_y)


# --------------------------------------------------------------------------------------------
# mixing and loss


def augment_and_mix(x: torch.Tensor, gen: torch.Generator, *, width: int = 3, depth: int = -1,
                    severity: float = 3.0, alpha: float = 1.0) -> torch.Tensor:
    """One AugMix view of every image of the batch, all randomness from `gen`."""
    n = len(x)
    seed = int(torch.randint(2**62, (1,), generator=gen, device=gen.device).item())
    rng = np.random.default_rng(seed)  # Dirichlet and Beta draws (torch's samplers take no generator)
    ws = torch.as_tensor(rng.dirichlet([alpha] * width, size=n), dtype=x.dtype, device=x.device)
    m = torch.as_tensor(rng.beta(alpha, alpha, size=n), dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
    mix = torch.zeros_like(x)
    for i in range(width):
        if depth > 0:
            depths = torch.full((n,), depth, device=x.device)
        else:
            depths = torch.randint(1, 4, (n,), generator=gen, device=gen.device).to(x.device)
        image = x.clone()
        for step in range(int(depths.max().item()) if n else 0):
            op = torch.randint(len(OPS), (n,), generator=gen, device=gen.device).to(x.device)
            for k, fn in enumerate(OPS):
                idx = ((op == k) & (depths > step)).nonzero(as_tuple=True)[0]
                if len(idx):
                    image[idx] = fn(image[idx], severity, gen)
        mix += ws[:, i].view(-1, 1, 1, 1) * image
    return ((1 - m) * x + m * mix).clamp_(0, 1)


def jsd(*logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence of the predictions: mean KL(p_i || M), M clamped as in the official code."""
    probs = [F.softmax(z.float(), dim=1) for z in logits]
    log_mixture = torch.clamp(sum(probs) / len(probs), 1e-7, 1).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / len(probs)


# --------------------------------------------------------------------------------------------
# the corrector


@dataclass
class Params(SGDParams):
    width: int = field(default=3, metadata={"help": "chains mixed per view (mixture width)", "min": 1})
    depth: int = field(default=-1, metadata={"help": "operations per chain; -1: uniform in 1..3 (paper)",
                                             "min": -1, "max": 10})
    severity: float = field(default=3.0, metadata={"help": "operation severity (1..10)", "min": 1.0, "max": 10.0})
    alpha: float = field(default=1.0, metadata={"help": "Dirichlet and Beta coefficient", "min": 0.0})
    jsd: bool = field(default=True, metadata={"help": "JSD consistency loss on two views (false: CE on one view)"})
    jsd_weight: float = field(default=12.0, metadata={"help": "weight of the JSD term", "min": 0.0})
    nesterov: bool = field(default=True, metadata={"help": "Nesterov momentum (AugMix's optimiser)"})
    eta_min: float = field(default=1e-6, metadata={"help": "final lr of the per-step cosine", "min": 0.0})
    p_clean: float = p_clean_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.depth == 0:
            raise DeepPatchError("parameter 'depth' must be -1 (random 1..3) or >= 1, got 0")
        if not self.alpha > 0:
            raise DeepPatchError(f"parameter 'alpha' must be > 0, got {self.alpha!r}")


class AugMixStep:
    """CE on the clean view + weight * JSD(clean, view 1, view 2); views made outside autocast."""

    def __init__(self, p: Params, gen: EpochGenerator) -> None:
        self.p, self.gen = p, gen

    def view(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return augment_and_mix(x.float(), self.gen.generator, width=self.p.width, depth=self.p.depth,
                                   severity=self.p.severity, alpha=self.p.alpha)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.p.jsd:
            return F.cross_entropy(model(self.view(x)), y)
        logits = model(torch.cat([x, self.view(x), self.view(x)]))
        clean, aug1, aug2 = logits.split(len(x))
        return F.cross_entropy(clean, y) + self.p.jsd_weight * jsd(clean, aug1, aug2)


class AugMix(Corrector):
    """Fine-tune every parameter with AugMix views and the JSD consistency loss."""

    name = "augmix"
    description = "AugMix (Hendrycks et al. 2020): mixed augmentation chains + Jensen-Shannon consistency"
    paper = "Hendrycks et al., ICLR 2020, arXiv:1912.02781"
    Params = Params
    test_params = {"epochs": 1}

    def repair(self, task: RepairTask) -> Repaired:
        p = self.params
        data = task.train_data()
        gen = EpochGenerator(task.seed, "augmix", task.device)
        batches = maintenance_batches(task, data, task.batch_size(p.batch_size), p_clean=p.p_clean, purpose="augmix")
        optim = p.optim(nesterov=p.nesterov, schedule="cosine-steps", eta_min=p.eta_min)
        return fine_tune(task, p, tag="augmix", data=data, batches=gen.wrap(batches), optim=optim,
                         step=AugMixStep(p, gen))
