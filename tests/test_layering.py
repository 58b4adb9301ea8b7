"""The package's dependency direction, checked by tools rather than by hand.

* import-linter's contracts in pyproject.toml: the layers (data, models, perturbations -> ... ->
  report, CLI, API) and no import circle anywhere in the package (run by `tox -e lint` too);
* no function-level import of the package's own modules (the usual way to hide a circle), and every
  other function-level import marked `# lazy:` with its reason (heavy optional packages).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "deeppatch"


def function_level_imports() -> list[tuple[Path, int, str, str]]:
    """(file, line, imported module, the import's source lines and the line above) for every import in a def."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        nodes = {node.lineno: node for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                 for node in ast.walk(fn) if isinstance(node, ast.Import | ast.ImportFrom)}
        for line, node in sorted(nodes.items()):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            text = "\n".join(lines[max(line - 2, 0):node.end_lineno])
            found.extend((path, line, name, text) for name in names)
    return found


def test_import_contracts_hold():
    """import-linter's contracts, in a subprocess (its logging setup would disable this process's loggers)."""
    pytest.importorskip("importlinter.cli")
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True, no_logo=True))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"Contracts: (\d+) kept, 0 broken", out.stdout), out.stdout


def test_no_function_level_import_of_our_own_modules():
    own = [f"{p.relative_to(ROOT)}:{line} imports {name}" for p, line, name, _ in function_level_imports()
           if name == "deeppatch" or name.startswith("deeppatch.")]
    assert own == [], "function-level imports of the package (hoist them; a circle means a layer is wrong):\n" + \
        "\n".join(own)


def test_every_function_level_import_says_why_it_is_lazy():
    unexplained = [f"{p.relative_to(ROOT)}:{line} imports {name}" for p, line, name, text in function_level_imports()
                   if "lazy" not in text]
    assert unexplained == [], "function-level imports need a '# lazy: <why>' comment:\n" + "\n".join(unexplained)


def test_version_is_written_once_in_each_place():
    from deeppatch.versions import __version__

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'version = "{__version__}"' in pyproject


def test_import_deeppatch_stays_cheap():
    """`import deeppatch` loads the facade only when one of its names is used (the CLI starts faster)."""
    code = "import sys, deeppatch; print('deeppatch.api' in sys.modules, 'deeppatch.harness' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.split()
    assert out == ["False", "False"]


def test_every_module_of_the_package_is_in_a_layer():
    """A new top-level module must be placed in the layers contract, or the contract would not cover it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    layers = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")["layers"]
    listed = {name.strip() for layer in layers for name in re.split(r"[|:]", layer)}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert modules - listed == set(), f"not in any layer: {sorted(modules - listed)}"
