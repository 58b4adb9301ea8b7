"""Evaluation suites: each turns (model, test data) into result rows.

    clean        accuracy on the clean test split
    blur         the paper's six Gaussian blur sigmas (+ mean, + clean-and-blur union)
    corruptions  15 common corruptions x 5 severities (CIFAR-10-C/100-C arrays when present)
    attacks      PGD (Linf, L2) and AutoAttack
    spatial      SENSEI-style rotation/translation/shear/zoom/brightness/contrast neighbours
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType

from deeppatch.errors import unknown_choice
from deeppatch.suites.base import Suite, SuiteContext

# suite name -> "module:class", imported lazily
SUITES: Mapping[str, str] = MappingProxyType({
    "clean": "deeppatch.suites.clean:CleanSuite",
    "blur": "deeppatch.suites.blur:BlurSuite",
    "corruptions": "deeppatch.suites.corruptions:CorruptionSuite",
    "attacks": "deeppatch.suites.attacks:AttackSuite",
    "spatial": "deeppatch.suites.spatial:SpatialSuite",
})


def suite_names() -> list[str]:
    return sorted(SUITES)


def get_suite(name: str, **settings: object) -> Suite:
    """Instantiate a suite by name with validated settings."""
    if name not in SUITES:
        raise unknown_choice("suite", name, SUITES)
    module, _, cls = SUITES[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**settings)


__all__ = ["SUITES", "Suite", "SuiteContext", "get_suite", "suite_names"]
