"""DeepPatch: filter-level patching of CNNs with a runtime switch, and a benchmark harness.

    import deeppatch as dp
    data = dp.load_data("fashion_mnist")
    model = dp.train("smallcnn", data, epochs=6)
    fixed = dp.repair(model, data, "deeppatch", perturbation="blur", epochs=5)
    table = dp.evaluate({"original": model, "deeppatch": fixed}, data, suites=["clean", "blur"])
    dp.report(table, "reports/mine")

See docs/python-api.md. The facade loads on first use of one of its names, so `import deeppatch`
(and the CLI's start-up) does not pay for torch, the harness and the report until they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

from deeppatch.versions import __version__

API = ("load_data", "load_model", "train", "repair", "evaluate", "report", "get_corrector", "list_correctors",
       "Data", "Budget")

__all__ = ["__version__", *API]


def __getattr__(name: str) -> Any:
    if name in API:
        return getattr(importlib.import_module("deeppatch.api"), name)  # lazy: see the module docstring
    raise AttributeError(f"module 'deeppatch' has no attribute {name!r}")
