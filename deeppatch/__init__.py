"""DeepPatch: filter-level patching of CNNs with a runtime switch, and a benchmark harness."""

from deeppatch._robustbench_compat import install_autoattack_alias

__version__ = "0.1.0"

# robustbench imports `autoattack`, which PyPI ships as `pyautoattack`; alias it once here so
# `import robustbench` works anywhere after `import deeppatch`.
install_autoattack_alias()

__all__ = ["__version__"]
