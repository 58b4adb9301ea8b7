"""What the baseline tests share beside the fixtures in conftest.py."""

from __future__ import annotations

import sys

from deeppatch.corrector import corrector_registry


def plugin(name: str):
    """The module of a baseline plug-in file (for its functions)."""
    return sys.modules[corrector_registry()[name].__module__]
