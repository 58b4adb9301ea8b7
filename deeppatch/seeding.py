"""Seeds and generators owned by a run.

A run has one integer seed. Each consumer of randomness (val split, data order, patch init,
perturbation draws, ...) derives its own generator from (seed, purpose), so adding a new consumer
never shifts the numbers another one sees.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *purpose: object) -> int:
    """A stable 63-bit seed for `purpose` under the run seed `seed`."""
    text = "/".join([str(int(seed)), *map(str, purpose)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def make_generator(seed: int, *purpose: object, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *purpose))
    return g


def numpy_rng(seed: int, *purpose: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *purpose))


def seed_everything(seed: int) -> None:
    """Seed the global RNGs too, for library code that draws from them (init of new layers)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
