"""Versions and provenance recorded with every result."""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from pathlib import Path

import torch
import torchvision

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


def environment_versions() -> dict[str, str | None]:
    return {"deeppatch": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "git_commit": git_commit()}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
