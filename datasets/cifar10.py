"""CIFAR-10 via torchvision's download code; constants match chenyaofo's pretrained weights."""

from __future__ import annotations

from pathlib import Path

import torch

from deeppatch.data import DatasetSource
from deeppatch.formats import load_cifar_python


class CIFAR10(DatasetSource):
    name = "cifar10"
    description = "CIFAR-10, 10 classes, 3x32x32 (torchvision download)"
    train_size = 50000
    num_classes = 10
    image_shape = (3, 32, 32)
    # The normalisation chenyaofo/pytorch-cifar-models trained with (DEEPPATCH-SPEC section 1).
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2023, 0.1994, 0.201)
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    default_epochs = 200

    def load(self, root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.datasets import CIFAR10 as TV

        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        return load_cifar_python(root, "cifar-10-batches-py", files, "labels", TV, download, "CIFAR-10")
