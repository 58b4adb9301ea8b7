"""Writers for the exact upstream file formats, so tests load data through the real code path."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """IDX as in MNIST/Fashion-MNIST: magic 0x0000 08 <ndim>, big-endian dims, uint8 data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def write_fashion_mnist(folder: Path, n_train: int = 200, n_test: int = 50, seed: int = 0,
                        compress: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, size=(n, 28, 28))
        images[:, :4, :4] = labels[:, None, None] * 25  # learnable signal in a corner
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
    return folder


class Py2Pickler(pickle._Pickler):
    """Writes pickles as Python 2's cPickle did for the CIFAR release.

    Python 2 `str` objects (dict keys, the array bytes) are BINSTRING opcodes, which Python 3 reads
    back as str under ``encoding="latin1"``; numpy's reconstructor is named
    ``numpy.core.multiarray._reconstruct``.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_global(self, obj, name=None) -> None:
        if getattr(obj, "__name__", "") == "_reconstruct" and "numpy" in getattr(obj, "__module__", ""):
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[bytes] = save_py2_str


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: str = "labels") -> Path:
    """A CIFAR python batch: dict of py2 str keys, data (N, 3072) uint8 row-major CHW, label list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = {b"batch_label": b"testing batch", b"data": images.reshape(len(images), -1).astype(np.uint8),
             label_key.encode(): [int(v) for v in labels], b"filenames": [b"x.png"] * len(labels)}
    with open(path, "wb") as fh:
        Py2Pickler(fh, protocol=2).dump(batch)
    return path


def write_cifar10(root: Path, n_per_batch: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, n_per_batch)
        write_cifar_batch(base / name, rng.integers(0, 256, (n_per_batch, 3, 32, 32)), labels)
    with open(base / "batches.meta", "wb") as fh:
        Py2Pickler(fh, protocol=2).dump({b"label_names": [b"c%d" % i for i in range(10)]})
    return base


def write_cifar100(root: Path, n: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = root / "cifar-100-python"
    for name in ("train", "test"):
        labels = np.arange(n) % 100
        write_cifar_batch(base / name, rng.integers(0, 256, (n, 3, 32, 32)), labels, "fine_labels")
    with open(base / "meta", "wb") as fh:
        Py2Pickler(fh, protocol=2).dump({b"fine_label_names": [b"c%d" % i for i in range(100)]})
    return base


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_tar_gz(src_dir: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src_dir, arcname=src_dir.name)
    return archive
