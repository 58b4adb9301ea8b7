"""CIFAR ShuffleNetV2 (Ma et al. 2018) with chenyaofo/pytorch-cifar-models names.

CIFAR changes: 3x3 stride-1 stem and no max-pool.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deeppatch.models.layers import InputNormalize, kaiming_init

REPEATS = (4, 8, 4)
CHANNELS = {
    "shufflenetv2_x0_5": (24, 48, 96, 192, 1024),
    "shufflenetv2_x1_0": (24, 116, 232, 464, 1024),
    "shufflenetv2_x1_5": (24, 176, 352, 704, 1024),
    "shufflenetv2_x2_0": (24, 244, 488, 976, 2048),
}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, bias=False, groups=channels)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(cin, stride), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, half, 1, 1, 0, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            )
        else:
            if cin != 2 * half:
                raise ValueError(f"stride-1 block needs cin == cout, got {cin} -> {cout}")
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin if stride > 1 else half, half, 1, 1, 0, bias=False), nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            _depthwise(half, stride), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, 1, 0, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(
        self, channels: Sequence[int], num_classes: int = 10, in_channels: int = 3,
        mean: Sequence[float] = (0.0,) * 3, std: Sequence[float] = (1.0,) * 3,
    ) -> None:
        super().__init__()
        self.normalize = InputNormalize(mean, std)
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False), nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
        cin = channels[0]
        for i, (repeats, cout) in enumerate(zip(REPEATS, channels[1:4], strict=True)):
            blocks = [InvertedResidual(cin, cout, 2)] + [InvertedResidual(cout, cout, 1) for _ in range(repeats - 1)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*blocks))
            cin = cout
        self.conv5 = nn.Sequential(
            nn.Conv2d(cin, channels[4], 1, 1, 0, bias=False), nn.BatchNorm2d(channels[4]), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(channels[4], num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.normalize(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean((2, 3)))


def build(name: str, **kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(CHANNELS[name], **kwargs)
