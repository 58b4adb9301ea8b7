"""CIFAR VGG-BN (Simonyan & Zisserman 2015) with chenyaofo/pytorch-cifar-models names."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deeppatch.models.layers import InputNormalize, kaiming_init

M = "M"
CONFIGS: dict[str, list[int | str]] = {
    "vgg11_bn": [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "vgg13_bn": [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "vgg16_bn": [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
    "vgg19_bn": [64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M,
                 512, 512, 512, 512, M],
}


class VGG(nn.Module):
    def __init__(
        self, config: list[int | str], num_classes: int = 10, in_channels: int = 3,
        mean: Sequence[float] = (0.0,) * 3, std: Sequence[float] = (1.0,) * 3,
    ) -> None:
        super().__init__()
        # Five 2x max-pools need 32 px: smaller inputs (28 px Fashion-MNIST) are zero-padded.
        self.normalize = InputNormalize(mean, std, pad_to=32)
        layers: list[nn.Module] = []
        cin = in_channels
        for v in config:
            if v == M:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, int(v), kernel_size=3, padding=1), nn.BatchNorm2d(int(v)),
                           nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512, 512), nn.ReLU(True), nn.Dropout(),
            nn.Linear(512, 512), nn.ReLU(True), nn.Dropout(),
            nn.Linear(512, num_classes),
        )
        kaiming_init(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.normalize(x))
        # 1x1 after five pools at 32 px (a no-op then); averages larger inputs down to 1x1
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.classifier(torch.flatten(x, 1))


def build(name: str, **kwargs) -> VGG:
    return VGG(CONFIGS[name], **kwargs)
