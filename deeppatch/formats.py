"""Readers for the upstream file formats of the built-in data sets.

* IDX (MNIST / Fashion-MNIST), plain or gzip-compressed.
* CIFAR-10/100 "python version" batches: Python pickles of a dict of numpy arrays and lists. They
  are read with a restricted unpickler that only admits numpy's array reconstruction, so a
  tampered file cannot run code.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from deeppatch.errors import DeepPatchError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally .gz) into a numpy array, checking its declared size."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DeepPatchError(f"cannot read IDX file {str(p)!r}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DeepPatchError(f"{str(p)!r} is not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DeepPatchError(f"IDX file {str(p)!r} is truncated (header)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DeepPatchError(
            f"IDX file {str(p)!r} is truncated or padded: {len(data) - header} bytes of data, "
            f"expected {expected} for shape {shape}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def read_cifar_batch(path: str | Path) -> dict[str, Any]:
    """Read one CIFAR python batch; keys are returned as str (the files use latin-1 bytes)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            raw = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except FileNotFoundError as exc:
        raise DeepPatchError(f"CIFAR batch file not found: {str(p)!r}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DeepPatchError(f"CIFAR batch {str(p)!r} is corrupt or not a CIFAR batch: {exc}") from exc
    if not isinstance(raw, dict):
        raise DeepPatchError(f"CIFAR batch {str(p)!r} does not hold a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in raw.items()}


def cifar_images(batch: dict[str, Any], path: str | Path) -> np.ndarray:
    data = np.asarray(batch.get("data"))
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DeepPatchError(f"CIFAR batch {str(path)!r} has data of shape {data.shape}, expected (N, 3072)")
    return data.reshape(-1, 3, 32, 32).astype(np.uint8)


def load_cifar_python(
    root: Path, folder: str, files: list[str], label_key: str, download_cls: Any, download: bool,
    title: str,
) -> tuple[Any, Any]:
    """Load CIFAR python batches from ``root/folder``; fetch them with torchvision if asked.

    `download_cls` is torchvision's dataset class (CIFAR10/CIFAR100): its constructor downloads
    the archive, checks the md5 and extracts it. Reading is ours (restricted unpickler).
    """
    import torch  # lazy: reading upstream formats' headers must not pay for a torch import

    base = Path(root) / folder
    missing = [f for f in files if not (base / f).is_file()]
    if missing and download:
        try:
            download_cls(str(root), train=True, download=True)
        except Exception as exc:
            raise DeepPatchError(f"downloading {title} into {str(root)!r} failed: {exc}") from exc
        missing = [f for f in files if not (base / f).is_file()]
    if missing:
        raise DeepPatchError(
            f"{title} not found: {', '.join(missing)} missing in {str(base)!r}; pass --download "
            "(with network) or put the python-version batches there"
        )
    xs, ys = [], []
    for f in files:
        batch = read_cifar_batch(base / f)
        xs.append(cifar_images(batch, base / f))
        if label_key not in batch:
            raise DeepPatchError(f"{base / f}: no {label_key!r} in the batch")
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))
