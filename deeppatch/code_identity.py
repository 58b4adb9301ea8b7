"""Code identity: a hash of the source files that produce a result, for cache keys.

A cached result (a grid cell's rows, a repaired model, a blame ranking, a generated corruption set)
is valid only for the code that made it. `code_hash(paths)` hashes the given source files plus
every module of this package they import, directly or through each other (read statically from
their import statements, so nothing is imported or executed). Edit a baseline's file and only its
cells' keys change; edit the suites and every cell's key changes.
"""

from __future__ import annotations

import ast
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name


def _module_file(name: str) -> Path | None:
    """The source file of package module `name` (a module or a package's __init__), if it exists."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    if name == PACKAGE:
        return PACKAGE_DIR / "__init__.py"
    rel = Path(*name.split(".")[1:])
    for candidate in (PACKAGE_DIR / rel.with_suffix(".py"), PACKAGE_DIR / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_files(path: Path) -> set[Path]:
    """The package's source files that `path` imports (module level and inside functions)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return set()
    found: set[Path] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # a module import also runs its packages' __init__
                target = _module_file(".".join(parts[:i]))
                if target is not None:
                    found.add(target)
    return found


def source_closure(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """`paths` and every package source file they import, transitively, sorted."""
    todo = [Path(p).resolve() for p in paths]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        todo.extend(_imported_files(path) - seen)
    return sorted(seen)


def _display(path: Path) -> str:
    """A path that does not depend on where the checkout lies (package-relative, else the file name)."""
    try:
        return f"{PACKAGE}/{path.relative_to(PACKAGE_DIR).as_posix()}"
    except ValueError:
        return path.name


def code_hash(paths: Iterable[str | os.PathLike]) -> str:
    """12 hex digits of SHA-256 over the closure's (relative name, content) pairs."""
    digest = hashlib.sha256()
    for path in source_closure(paths):
        digest.update(_display(path).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def module_code_hash(module_name: str) -> str:
    """`code_hash` of one package module, by its dotted name (e.g. "deeppatch.harness.runner")."""
    path = _module_file(module_name)
    if path is None:
        raise ValueError(f"{module_name!r} is not a module of {PACKAGE}")
    return code_hash([path])
