"""Make `import robustbench` work with the PyPI releases of its dependencies.

robustbench 1.1.1 has two import problems (see docs/environment.md):

* it imports ``autoattack``, but PyPI's AutoAttack installs as ``pyautoattack``;
* it imports ``pkg_resources``, which setuptools >= 81 no longer ships (pinned in pyproject).

`install_autoattack_alias` registers an import hook that resolves ``autoattack`` and every
``autoattack.<sub>`` to the matching ``pyautoattack`` module, lazily, so nothing is imported until
robustbench asks for it. It is idempotent.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

from deeppatch.errors import DeepPatchError

_ALIAS = "autoattack"
_TARGET = "pyautoattack"


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:  # the target is already executed
        return None


class _AutoAttackAliasFinder(importlib.abc.MetaPathFinder):
    """Resolves `autoattack[.x]` to `pyautoattack[.x]` when no real `autoattack` is installed."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: D401 - importlib protocol
        if fullname != _ALIAS and not fullname.startswith(_ALIAS + "."):
            return None
        real = _TARGET + fullname[len(_ALIAS):]
        if importlib.util.find_spec(real.split(".")[0]) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(real), is_package=True)


def install_autoattack_alias() -> None:
    """Register the alias unless a genuine `autoattack` package is importable."""
    if any(isinstance(f, _AutoAttackAliasFinder) for f in sys.meta_path):
        return
    # A real `autoattack` (e.g. installed from GitHub) wins: append the finder at the end.
    sys.meta_path.append(_AutoAttackAliasFinder())


def import_robustbench() -> ModuleType:
    """Import robustbench with a clear error when its environment is broken."""
    install_autoattack_alias()
    try:
        return importlib.import_module("robustbench")
    except ModuleNotFoundError as exc:
        if exc.name == "pkg_resources":
            raise DeepPatchError(
                "robustbench needs pkg_resources, which setuptools>=81 removed; "
                "run: pip install 'setuptools<81'"
            ) from exc
        if exc.name in {"robustbench", _TARGET}:
            raise DeepPatchError(
                f"package {exc.name!r} is not installed; run: pip install robustbench pyautoattack"
            ) from exc
        raise
