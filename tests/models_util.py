"""Seeded zoo models with non-trivial BatchNorm statistics, for tests that compare engines or paths."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from deeppatch.corrector import Corrector, RepairTask, get_corrector, run_repair
from deeppatch.models import create_model


def bn_trained(model: torch.nn.Module, image_shape: tuple[int, ...]) -> torch.nn.Module:
    """One train-mode pass over random images gives BN statistics other than 0/1; returns it in eval mode."""
    model.train()
    with torch.no_grad():
        model(torch.rand(64, *image_shape))
    return model.eval()


def seeded_model(arch: str, info, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return bn_trained(create_model(arch, info), info.image_shape)


def run(corrector: str | Corrector, task: RepairTask, **params) -> SimpleNamespace:
    """Repair through `run_repair` (as the harness does): the Repaired fields plus its measured `cost`."""
    if isinstance(corrector, str):
        corrector = get_corrector(corrector, **params)
    repaired, cost = run_repair(corrector, task)
    return SimpleNamespace(**vars(repaired), cost=cost)
