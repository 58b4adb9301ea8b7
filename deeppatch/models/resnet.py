"""CIFAR ResNets (He et al. 2016, the 6n+2 family) with chenyaofo/pytorch-cifar-models names."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deeppatch.models.layers import InputNormalize, kaiming_init


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    def __init__(
        self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3,
        mean: Sequence[float] = (0.0,) * 3, std: Sequence[float] = (1.0,) * 3,
    ) -> None:
        super().__init__()
        self.normalize = InputNormalize(mean, std)
        self.conv1 = _conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        widths, cin = (16, 32, 64), 16
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(cin, width, stride)]
            stage += [BasicBlock(width, width) for _ in range(blocks_per_stage - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            cin = width
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}


def build(name: str, **kwargs) -> CifarResNet:
    return CifarResNet(DEPTHS[name], **kwargs)
