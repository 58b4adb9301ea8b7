"""Atomic file writes and safe checkpoint reads.

Every artefact is written to a temporary file beside its destination and renamed into place, so a
killed process never leaves a half-written file under the final name. Checkpoints are read with
``weights_only=True``: we never unpickle arbitrary objects.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deeppatch.errors import DeepPatchError

# torch is imported inside the two functions that need it: reports and specs use this module
# without paying for a torch import.


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` (and parents) and check that we can write there; one clear error if not."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepPatchError(f"cannot create output folder {str(p)!r}: {exc.strerror}") from exc
    if not p.is_dir():
        raise DeepPatchError(f"output folder {str(p)!r} exists but is not a folder")
    if not os.access(p, os.W_OK | os.X_OK):
        raise DeepPatchError(f"output folder {str(p)!r} is not writable")
    return p


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` to a temp file, then rename: readers see the old file or the new one."""
    import torch

    return _atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    return _atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    return _atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def read_json(path: str | os.PathLike) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DeepPatchError(f"file not found: {str(p)!r}") from exc
    except json.JSONDecodeError as exc:
        raise DeepPatchError(f"{str(p)!r} is not valid JSON: {exc}") from exc


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``; missing or corrupt files give one clear line."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise DeepPatchError(f"checkpoint not found: {str(p)!r}")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeepPatchError(
            f"checkpoint {str(p)!r} is corrupt, truncated or not a weights-only checkpoint "
            f"({first[:160]}); delete it and run the stage again"
        ) from exc
    except Exception as exc:  # pickle.UnpicklingError and friends
        if type(exc).__name__ == "UnpicklingError":
            raise DeepPatchError(
                f"checkpoint {str(p)!r} holds objects that are not allowed in a weights-only "
                "checkpoint (refusing to unpickle them)"
            ) from exc
        raise
