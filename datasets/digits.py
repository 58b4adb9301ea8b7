"""scikit-learn's 8x8 handwritten digits (1,797 images shipped with the package): tiny tests.

There is no official test split: a fixed stratified 20 % (random_state 0) is the test split.
Pixel values 0..16 are scaled to 0..255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deeppatch.data import DatasetSource


class Digits(DatasetSource):
    name = "digits"
    description = "scikit-learn digits, 10 classes, 1x8x8 (ships offline; for tests)"
    train_size = 1437
    num_classes = 10
    image_shape = (1, 8, 8)
    mean = (0.3053,)
    std = (0.3759,)
    default_epochs = 20

    def load(self, root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
        labels = bunch.target.astype(np.int64)
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0
        )
        idx = np.sort(train_idx if train else test_idx)
        return torch.from_numpy(images[idx]), torch.from_numpy(labels[idx])
