"""Data sets as tensors: the plug-in interface, train/val/test splits and batching.

Images are kept as uint8 tensors (N, C, H, W) in memory, or on the GPU when they fit, and become
float pixels in [0, 1] only batch by batch. Normalisation is the model's first layer, so every
perturbation and attack works in pixel space.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.plugins import discover

DEFAULT_DATASET = "fashion_mnist"
DEFAULT_VAL_FRACTION = 0.02  # 1/50 as in the reference implementation
DEFAULT_SPLIT_SEED = 2021  # the reference's random_state for the val split


def default_data_dir() -> Path:
    return Path(os.environ.get("DEEPPATCH_DATA_DIR", "data"))


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a perturbation need to know about a data set."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()

    @property
    def in_channels(self) -> int:
        return self.image_shape[0]

    @property
    def image_size(self) -> int:
        return self.image_shape[1]


class DatasetSource(ABC):
    """A data-set plug-in: one subclass per file in `datasets/`.

    Subclasses set the class attributes and implement `load`, which returns the official train or
    test split as (uint8 images (N, C, H, W), int64 labels).
    """

    name: ClassVar[str]
    num_classes: ClassVar[int]
    image_shape: ClassVar[tuple[int, int, int]]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]
    class_names: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    # Default epochs for training a model from scratch on this data set (pretrain stage).
    default_epochs: ClassVar[int] = 10
    # Images in the official training split (before the validation slice), when known: lets a spec's
    # train_subset be checked before any data is read.
    train_size: ClassVar[int | None] = None

    @abstractmethod
    def load(self, root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (images uint8 NCHW, labels int64) of the official train or test split."""

    @classmethod
    def info(cls) -> DatasetInfo:
        return DatasetInfo(
            cls.name, cls.num_classes, tuple(cls.image_shape), tuple(cls.mean), tuple(cls.std),
            tuple(cls.class_names),
        )


def dataset_registry(extra_dirs: Iterable[str | os.PathLike] = ()) -> dict[str, type[DatasetSource]]:
    return discover("datasets", DatasetSource, extra_dirs)


def get_dataset_source(name: str, extra_dirs: Iterable[str | os.PathLike] = ()) -> DatasetSource:
    registry = dataset_registry(extra_dirs)
    if name not in registry:
        raise unknown_choice("data set", name, registry)
    return registry[name]()


def dataset_info(name: str) -> DatasetInfo:
    return get_dataset_source(name).info()


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1]; float tensors pass through."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float() if x.dtype != torch.float32 else x


@dataclass
class TensorSplit:
    """One split held as tensors: images (uint8 or float in [0, 1]) and int64 labels."""

    x: torch.Tensor
    y: torch.Tensor
    # positions in the official split this one was cut from (None: it is the official split, in order),
    # so that data aligned with the official split (CIFAR-10-C's released arrays) can be indexed alike
    index: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.x.shape)}")
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor | Sequence[int]) -> TensorSplit:
        idx = torch.as_tensor(index, dtype=torch.long, device=self.x.device)
        cpu = idx.cpu()
        return TensorSplit(self.x[idx], self.y[idx.to(self.y.device)],
                           self.index[cpu] if self.index is not None else cpu)

    def head(self, n: int | None) -> TensorSplit:
        return self if n is None or n >= len(self) else self.subset(torch.arange(n))

    def to(self, device: torch.device | str) -> TensorSplit:
        return TensorSplit(self.x.to(device), self.y.to(device), self.index)

    def positions(self) -> torch.Tensor:
        """Positions of these images in the official split."""
        return self.index if self.index is not None else torch.arange(len(self))

    def batches(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (float images in [0, 1], labels) on `device`, optionally in a seeded order."""
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator)
        else:
            order = None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            if order is None:
                xb, yb = self.x[start : start + batch_size], self.y[start : start + batch_size]
            else:
                idx = order[start : start + batch_size].to(self.x.device)
                xb, yb = self.x[idx], self.y[idx.to(self.y.device)]
            if device is not None:
                xb = xb.to(device, non_blocking=True)
                yb = yb.to(device, non_blocking=True)
            yield to_float(xb), yb

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)


@dataclass
class Splits:
    info: DatasetInfo
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    provenance: dict[str, object] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Splits:
        return Splits(self.info, self.train.to(device), self.val.to(device), self.test.to(device),
                      dict(self.provenance))


def stratified_val_split(
    labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train/val indices: a stratified, seeded slice (sklearn's train_test_split, as the reference)."""
    from sklearn.model_selection import train_test_split  # lazy: scikit-learn costs seconds to import

    if not 0.0 < val_fraction < 1.0:
        raise DeepPatchError(f"val fraction must be in (0, 1), got {val_fraction}")
    idx = np.arange(len(labels))
    y = labels.cpu().numpy()
    n_val, n_classes = int(np.ceil(val_fraction * len(y))), len(np.unique(y))
    if n_val < n_classes:
        raise DeepPatchError(
            f"val fraction {val_fraction} of {len(y)} training images gives {n_val} validation images, "
            f"fewer than the {n_classes} classes; raise --val_fraction"
        )
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, stratify=y, random_state=seed)
    return np.sort(train_idx), np.sort(val_idx)


def stratified_subset(split: TensorSplit, n: int | None, seed: int) -> TensorSplit:
    """A class-balanced, seeded subset of `n` samples (the whole split when n is None or larger)."""
    if n is None or n >= len(split):
        return split
    if n <= 0:
        raise DeepPatchError(f"subset size must be positive, got {n}")
    from sklearn.model_selection import train_test_split  # lazy: scikit-learn costs seconds to import

    y = split.y.cpu().numpy()
    counts = np.bincount(y)
    stratify = y if n >= np.count_nonzero(counts) and counts[counts > 0].min() >= 2 else None
    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=stratify, random_state=seed)
    return split.subset(np.sort(idx))


def load_splits(
    name: str = DEFAULT_DATASET,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = False,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    split_seed: int = DEFAULT_SPLIT_SEED,
) -> Splits:
    """Load a data set by name and cut train/val/test (val from the official training split)."""
    source = get_dataset_source(name)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    x_train, y_train = source.load(root, train=True, download=download)
    x_test, y_test = source.load(root, train=False, download=download)
    for what, x in (("train", x_train), ("test", x_test)):
        if x.dtype != torch.uint8 or tuple(x.shape[1:]) != tuple(source.image_shape):
            raise DeepPatchError(
                f"data set {name!r} {what} split has images {tuple(x.shape)} {x.dtype}, "
                f"expected uint8 (N, {', '.join(map(str, source.image_shape))})"
            )
    train_idx, val_idx = stratified_val_split(y_train, val_fraction, split_seed)
    full = TensorSplit(x_train, y_train)
    return Splits(
        info=source.info(),
        train=full.subset(train_idx),
        val=full.subset(val_idx),
        test=TensorSplit(x_test, y_test),
        provenance={"val_fraction": val_fraction, "split_seed": split_seed, "root": str(root)},
    )
