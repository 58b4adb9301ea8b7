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
import secrets
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    """`write` a temp file beside `path`, then rename it into place; the temp file is created with
    mode 0666 less the umask (as a plain open would), not mkstemp's 0600."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    if path.is_dir():
        raise DeepPatchError(f"cannot write {str(path)!r}: it is a folder")
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise DeepPatchError(f"cannot create a temporary file beside {str(path)!r}")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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


def tensors_digest(named: Iterable[tuple[str, Any]], length: int = 16) -> str:
    """A short sha256 over named tensors (name, dtype, shape and bytes of each): cache keys that must
    change whenever the data or the weights do."""
    import torch  # lazy: specs and reports use this module without paying for a torch import

    h = hashlib.sha256()
    for name, tensor in named:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]


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
    except Exception as exc:  # pickle.UnpicklingError, and whatever random bytes make the reader raise
        if type(exc).__name__ == "UnpicklingError":
            raise DeepPatchError(
                f"checkpoint {str(p)!r} holds objects that are not allowed in a weights-only "
                "checkpoint (refusing to unpickle them)"
            ) from exc
        raise DeepPatchError(f"checkpoint {str(p)!r} is not a readable checkpoint ({type(exc).__name__}); delete "
                             "it and run the stage again") from exc


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


@dataclass(frozen=True)
class Cached:
    """A keyed artefact: its value, what computing it cost once, and whether this call computed it."""

    value: Any
    seconds: float
    computed_here: bool
    digest: str


def cached(folder: str | os.PathLike, key: dict[str, Any], compute: Callable[[], Any]) -> Cached:
    """The JSON artefact for `key` under `folder`, computed and stored once (under a lock)."""
    digest = stable_hash(key)
    path = Path(folder) / f"{digest}.json"
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():
            stored = read_json(path)
            if isinstance(stored, dict) and stored.get("key") == json.loads(json.dumps(key, default=str)) \
                    and "value" in stored:
                return Cached(stored["value"], float(stored.get("seconds", 0.0)), False, digest)
        t0 = time.perf_counter()
        value = compute()
        seconds = time.perf_counter() - t0
        atomic_write_json({"key": key, "value": value, "seconds": seconds}, path)
        return Cached(value, seconds, True, digest)


def cached_json(folder: str | os.PathLike, key: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """The value of `cached(folder, key, compute)`."""
    return cached(folder, key, compute).value


@dataclass
class RepairClock:
    """Wall time of one repair across interrupted attempts.

    Each checkpoint records the time spent so far (`save`); a resumed attempt starts from what the
    last checkpoint recorded, so a killed and resumed repair reports the time of the work it kept.
    Work shared between repairs (a cached blame ranking) is excluded (`exclude`) and reported apart.
    """

    path: Path | None = None
    earlier: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    excluded: float = 0.0
    shared: dict[str, dict[str, Any]] = field(default_factory=dict)

    def elapsed(self) -> float:
        return max(0.0, self.earlier + time.perf_counter() - self.start - self.excluded)

    def save(self) -> None:
        if self.path is not None:
            atomic_write_json({"seconds": self.elapsed()}, self.path)

    def exclude(self, kind: str, item: Cached) -> None:
        """Take shared work out of this repair's time; remember its one-off cost under `kind`."""
        if item.computed_here:
            self.excluded += item.seconds
        self.shared[kind] = {"seconds": item.seconds, "key": item.digest, "computed_here": item.computed_here}


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

    def cached(self, kind: str, key: dict[str, Any], compute: Callable[[], Any]) -> Cached:
        if self.cache_dir is None or self.scope is None:
            t0 = time.perf_counter()
            value = compute()
            return Cached(value, time.perf_counter() - t0, True, "")
        return cached(Path(self.cache_dir) / kind, {"scope": self.scope, "kind": kind, **key}, compute)

    def clock(self) -> RepairClock:
        """A repair clock; with `resume`, it continues from the time the last checkpoint recorded."""
        path = None if self.state_dir is None else Path(self.state_dir) / "repair-clock.json"
        earlier = 0.0
        if self.resume and path is not None and path.is_file():
            earlier = float(read_json(path).get("seconds", 0.0))
        return RepairClock(path=path, earlier=earlier)
