"""CIFAR-100 (fine labels) via torchvision's download code; constants match chenyaofo's weights."""

from __future__ import annotations

from pathlib import Path

import torch

from deeppatch.data import DatasetSource
from deeppatch.formats import load_cifar_python


class CIFAR100(DatasetSource):
    name = "cifar100"
    description = "CIFAR-100 (fine labels), 100 classes, 3x32x32 (torchvision download)"
    train_size = 50000
    num_classes = 100
    image_shape = (3, 32, 32)
    mean = (0.507, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2761)
    default_epochs = 200

    def load(self, root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.datasets import CIFAR100 as TV

        files = ["train"] if train else ["test"]
        return load_cifar_python(root, "cifar-100-python", files, "fine_labels", TV, download, "CIFAR-100")
