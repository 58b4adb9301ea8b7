"""Choosing the compute device, with clear errors instead of CUDA tracebacks."""

from __future__ import annotations

import torch

from deeppatch.errors import DeepPatchError, unknown_choice

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto", gpu: int | None = None) -> torch.device:
    """Map --device/--gpu to a torch.device; 'auto' takes the GPU when there is one."""
    name = (name or "auto").lower()
    if name.startswith("cuda:"):
        name, gpu = "cuda", int(name.split(":", 1)[1])
    if name not in DEVICE_CHOICES:
        raise unknown_choice("device", name, DEVICE_CHOICES)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeepPatchError(
            "--device cuda was asked for but no CUDA GPU is available here; use --device cpu"
        )
    count = torch.cuda.device_count()
    index = 0 if gpu is None else int(gpu)
    if not 0 <= index < count:
        raise DeepPatchError(f"--gpu {index} does not exist; valid choices: 0..{count - 1}")
    return torch.device("cuda", index)
