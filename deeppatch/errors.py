"""The one exception type that means "the user asked for something we cannot do"."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set


class DeepPatchError(Exception):
    """An error caused by user input or the environment; the CLI prints it as one line."""


def unknown_choice(kind: str, value: object, choices: Iterable[object], where: str = "") -> DeepPatchError:
    """The one 'unknown X 'v'; valid choices: ...' error. Registries (mappings, sets) are listed sorted,
    sequences in their own order (sigmas, severities); `where` prefixes the file or owner."""
    items = sorted(map(str, choices)) if isinstance(choices, Mapping | Set) else [str(c) for c in choices]
    prefix = f"{where}: " if where else ""
    return DeepPatchError(f"{prefix}unknown {kind} {value!r}; valid choices: {', '.join(items) or '(none)'}")
