"""Layers shared by the model zoo."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class InputNormalize(nn.Module):
    """First layer of every zoo model: [0, 1] pixels -> (x - mean) / std.

    The buffers are not persistent, so state dicts keep exactly the parameter names of
    chenyaofo/pytorch-cifar-models and its release weights load with ``strict=True``.
    `pad_to` zero-pads the pixels (black) to a multiple of that size first, for architectures with
    a fixed number of 2x poolings (VGG needs 32 px; Fashion-MNIST has 28).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], pad_to: int | None = None) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels, std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.pad_to = pad_to

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_to:
            h, w = x.shape[-2:]
            ph, pw = (-h) % self.pad_to, (-w) % self.pad_to
            if ph or pw:
                x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"channels={self.mean.shape[1]}, pad_to={self.pad_to}"


def kaiming_init(model: nn.Module, linear_std: float | None = None) -> None:
    """He init for convs (fan_out), unit BN, optional N(0, linear_std) linears."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
