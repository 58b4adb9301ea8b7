"""Gaussian blur, the paper's perturbation: six sigmas, kernel 2*floor(ceil(4 sigma)/2)+1.

Computed on float tensors in batches on the device, as a separable convolution with reflect
padding: the same kernel and padding as torchvision's `gaussian_blur` (which the reference applied
to PIL images). `quantize=True` rounds to 8 bits afterwards, like the reference's PIL round trip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from deeppatch.errors import DeepPatchError
from deeppatch.perturbations.base import Perturbation

BLUR_SIGMAS: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def blur_kernel_size(sigma: float) -> int:
    """2 * floor(ceil(4 sigma) / 2) + 1: 3, 5, 7, 9, 11, 13 for the paper's sigmas."""
    return 2 * (math.ceil(4 * sigma) // 2) + 1


def gaussian_kernel1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size, dtype=torch.float64)
    pdf = torch.exp(-0.5 * (x / sigma) ** 2)
    return (pdf / pdf.sum()).to(dtype=dtype, device=device)


def gaussian_blur(
    x: torch.Tensor, sigma: float, quantize: bool = False, kernel_size: int | None = None
) -> torch.Tensor:
    """Blur a float batch (N, C, H, W) in [0, 1]."""
    if sigma <= 0:
        raise DeepPatchError(f"blur sigma must be positive, got {sigma}")
    k = kernel_size or blur_kernel_size(sigma)
    n, c, h, w = x.shape
    pad = k // 2
    if pad >= h or pad >= w:
        raise DeepPatchError(f"blur kernel {k} is too large for {h}x{w} images (reflect padding)")
    kern = gaussian_kernel1d(k, sigma, x.dtype, x.device)
    y = F.pad(x.reshape(n * c, 1, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kern.view(1, 1, 1, k))
    y = F.conv2d(y, kern.view(1, 1, k, 1))
    y = y.reshape(n, c, h, w)
    if quantize:
        y = torch.round(y * 255.0) / 255.0
    return y.clamp_(0.0, 1.0)


class GaussianBlur(Perturbation):
    """The paper's blur family; `sigmas` and 8-bit quantisation are configurable."""

    name = "blur"

    def __init__(self, sigmas: Sequence[float] = BLUR_SIGMAS, quantize: bool = False) -> None:
        if not sigmas:
            raise DeepPatchError("blur needs at least one sigma")
        self.sigmas = tuple(float(s) for s in sigmas)
        self.quantize = bool(quantize)

    @property
    def conditions(self) -> tuple[str, ...]:
        return tuple(f"sigma={s:g}" for s in self.sigmas)

    def apply(self, x: torch.Tensor, condition: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return gaussian_blur(x, self.sigmas[condition], quantize=self.quantize)
