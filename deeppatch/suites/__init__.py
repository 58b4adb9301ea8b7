"""Evaluation suites: each turns (model, test data) into result rows.

    clean        accuracy on the clean test split
    blur         the paper's six Gaussian blur sigmas (+ mean, + clean-and-blur union)
    corruptions  15 common corruptions x 5 severities (CIFAR-10-C/100-C arrays when present)
    attacks      PGD (Linf, L2) and AutoAttack
    spatial      SENSEI-style rotation/translation/shear/zoom/brightness/contrast neighbours
    routing      per condition of a family: a switched model next to each of its paths, share routed
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from deeppatch.errors import unknown_choice
from deeppatch.suites import attacks, blur, clean, corruptions, routing, spatial
from deeppatch.suites.base import Suite, SuiteContext

SUITES: Mapping[str, type[Suite]] = MappingProxyType({
    "clean": clean.CleanSuite,
    "blur": blur.BlurSuite,
    "corruptions": corruptions.CorruptionSuite,
    "attacks": attacks.AttackSuite,
    "spatial": spatial.SpatialSuite,
    "routing": routing.RoutingSuite,
})


def suite_names() -> list[str]:
    return sorted(SUITES)


def get_suite(name: str, **settings: object) -> Suite:
    """Instantiate a suite by name with validated settings."""
    if name not in SUITES:
        raise unknown_choice("suite", name, SUITES)
    return SUITES[name](**settings)


__all__ = ["SUITES", "Suite", "SuiteContext", "get_suite", "suite_names"]
