"""Generated inputs of the speed suite: image-like pixels and seeded zoo models (no downloads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deeppatch.data import DatasetInfo, to_float
from deeppatch.models import create_model
from deeppatch.seeding import derive_seed, make_generator

ARCH = "resnet20"
SHAPE = (1, 28, 28)


def smooth_images(n: int, purpose: str, shape: tuple[int, int, int] = SHAPE) -> torch.Tensor:
    """Image-like uint8 pixels: upsampled low-resolution noise plus a little fine noise, seeded by `purpose`."""
    g = make_generator(0, "perf", purpose)
    c, h, w = shape
    low = torch.rand(n, c, max(2, h // 4), max(2, w // 4), generator=g)
    x = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    x = (0.85 * x + 0.15 * torch.rand(n, c, h, w, generator=g)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8)


def zoo_model(arch: str = ARCH, shape: tuple[int, int, int] = SHAPE, classes: int = 10) -> torch.nn.Module:
    """A zoo model with seeded init and BatchNorm statistics from one pass over image-like data (eval mode)."""
    info = DatasetInfo("perf", classes, shape, (0.5,) * shape[0], (0.25,) * shape[0])
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(0, "perf", arch))
        model = create_model(arch, info)
    model.train()
    with torch.no_grad():
        model(to_float(smooth_images(256, "bn", shape)))
    return model.eval()
