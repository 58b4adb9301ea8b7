"""Storage: atomic writes, safe checkpoint reads, stable hashes, locks and keyed caches.

Every artefact is written to a temporary file beside its destination and renamed into place, so a
killed process never leaves a half-written file under the final name. Checkpoints are read with
``weights_only=True``: we never unpickle arbitrary objects. Several workers (processes, Slurm array
tasks) may share one results folder: work that two of them share is computed under an exclusive file
lock (`file_lock`), so the second waits and then reuses it (`cached_json`, `Workspace`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    import torch  # lazy: specs and reports use this module without paying for a torch import

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
    import torch  # lazy: specs and reports use this module without paying for a torch import

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


# --------------------------------------------------------------------------------------------
# keys, locks and keyed caches


def stable_hash(obj: Any) -> str:
    """12 hex digits of SHA-256 over canonical JSON: the key of every cached artefact and result."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock (flock) on `path` for the duration of the block."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def cached_json(folder: str | os.PathLike, key: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """The JSON artefact for `key` under `folder`, computed and stored once (under a lock)."""
    path = Path(folder) / f"{stable_hash(key)}.json"
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():
            return read_json(path)["value"]
        value = compute()
        atomic_write_json({"key": key, "value": value}, path)
        return value


@dataclass(frozen=True)
class Workspace:
    """Where a repair keeps its training state (for resume) and artefacts shared between repairs.

    The default keeps nothing: no resume, no cache, so a repair from a notebook leaves no files.
    `scope` identifies the inputs the shared artefacts depend on (the model under maintenance); the
    cache is used only when it is set.
    """

    state_dir: Path | None = None
    cache_dir: Path | None = None
    resume: bool = False
    scope: str | None = None

    def state_path(self, tag: str) -> Path | None:
        return None if self.state_dir is None else Path(self.state_dir) / f"{tag}.state.pt"

    def cached_json(self, kind: str, key: dict[str, Any], compute: Callable[[], Any]) -> Any:
        if self.cache_dir is None or self.scope is None:
            return compute()
        return cached_json(Path(self.cache_dir) / kind, {"scope": self.scope, "kind": kind, **key}, compute)
