"""Artefacts on disk, keyed by the configuration that made them; locks between workers.

Several workers (processes, Slurm array tasks) may share one results folder. Every file is written
atomically (temp file + rename) and work that two cells share (the model under maintenance, blame
rankings) is computed under an exclusive file lock, so the second worker waits and then reuses it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deeppatch.harness.spec import stable_hash
from deeppatch.storage import atomic_write_json


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on `path` for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def cached_json(folder: Path, key: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """The JSON artefact for `key` under `folder`, computing and storing it once."""
    digest = stable_hash(key)
    path = Path(folder) / f"{digest}.json"
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))["value"]
        value = compute()
        atomic_write_json({"key": key, "value": value}, path)
        return value
