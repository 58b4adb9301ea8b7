"""The one exception type that means "the user asked for something we cannot do"."""

from __future__ import annotations

from collections.abc import Iterable


class DeepPatchError(Exception):
    """An error caused by user input or the environment; the CLI prints it as one line."""


def unknown_choice(kind: str, value: object, choices: Iterable[str]) -> DeepPatchError:
    """Build the standard 'unknown X; valid choices: ...' error."""
    listed = ", ".join(sorted(choices)) or "(none)"
    return DeepPatchError(f"unknown {kind} {value!r}; valid choices: {listed}")
