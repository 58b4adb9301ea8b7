"""Plug-in folders read by path (like benchopt's `solvers/` and `datasets/`).

`datasets/` and `baselines/` are folders of plain Python files, not importable packages: a file
that defines a subclass of the plug-in base class adds that plug-in. Extra folders come from the
environment (``DEEPPATCH_DATASETS_PATH`` / ``DEEPPATCH_BASELINES_PATH``, ``os.pathsep``-separated)
or from the caller (a benchmark spec's ``plugin_dirs``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from deeppatch.errors import DeepPatchError, unknown_choice

T = TypeVar("T")

PLUGIN_KINDS = ("datasets", "baselines")


def builtin_plugin_dir(kind: str) -> Path:
    """The folder of built-in plug-ins: the checkout's top-level folder, else the wheel's copy."""
    if kind not in PLUGIN_KINDS:
        raise unknown_choice("plug-in kind", kind, PLUGIN_KINDS)
    package = Path(__file__).resolve().parent
    checkout = package.parent / kind
    if checkout.is_dir() and (package.parent / "pyproject.toml").is_file():
        return checkout
    return package / "_plugins" / kind


def plugin_dirs(kind: str, extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    dirs = [builtin_plugin_dir(kind)]
    env = os.environ.get(f"DEEPPATCH_{kind.upper()}_PATH", "")
    candidates = [*(p for p in env.split(os.pathsep) if p), *extra]
    for raw in candidates:
        p = Path(raw).expanduser().resolve()
        if not p.is_dir():
            raise DeepPatchError(f"plug-in folder {str(p)!r} for {kind} does not exist")
        if p not in dirs:
            dirs.append(p)
    return dirs


def _import_file(path: Path, kind: str) -> ModuleType:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    mod_name = f"deeppatch_plugins.{kind}.{path.stem}_{digest}"
    mtime = path.stat().st_mtime_ns
    cached = sys.modules.get(mod_name)
    if cached is not None and getattr(cached, "__deeppatch_mtime__", None) == mtime:
        return cached
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise DeepPatchError(f"cannot import plug-in file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    module.__deeppatch_mtime__ = mtime  # type: ignore[attr-defined]
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        raise DeepPatchError(f"plug-in file {str(path)!r} failed to import: {exc!r}") from exc
    return module


def discover(kind: str, base: type[T], extra_dirs: Iterable[str | os.PathLike] = ()) -> dict[str, type[T]]:
    """All concrete subclasses of `base` defined in the plug-in files, keyed by their `name`."""
    found: dict[str, type[T]] = {}
    origin: dict[str, Path] = {}
    for folder in plugin_dirs(kind, extra_dirs):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            module = _import_file(path, kind)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if (
                    issubclass(obj, base)
                    and obj is not base
                    and obj.__module__ == module.__name__
                    and not inspect.isabstract(obj)
                    and getattr(obj, "name", None)
                ):
                    name = obj.name  # type: ignore[attr-defined]
                    if name in found and origin[name] != path:
                        raise DeepPatchError(
                            f"two {kind} plug-ins are named {name!r}: {origin[name]} and {path}"
                        )
                    found[name] = obj
                    origin[name] = path
    return found
