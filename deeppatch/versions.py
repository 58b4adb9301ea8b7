"""Versions and provenance recorded with every result."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

__version__ = "0.1.0"  # keep equal to pyproject.toml's version (tests/test_layering.py checks)


@cache
def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _version(package: str) -> str | None:
    """An installed package's version: the module's own when it is loaded (torch's carries its build,
    e.g. +cu130), else its metadata (importing torchvision just for this would cost seconds)."""
    loaded = sys.modules.get(package)
    if loaded is not None and isinstance(getattr(loaded, "__version__", None), str):
        return str(loaded.__version__)
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_versions() -> dict[str, str | None]:
    return {"deeppatch": __version__, "torch": _version("torch"), "torchvision": _version("torchvision"),
            "python": platform.python_version(), "git_commit": git_commit()}


def device_name(device: Any) -> str:
    """A torch.device in words: the GPU's name, or the CPU with its thread count."""
    import torch  # lazy: `import deeppatch` (and its version) must not pay for torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
