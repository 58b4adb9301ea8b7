"""Result rows: the one flat record that suites produce, the harness stores and reports read.

A suite returns `SuiteRow`s (what it measured). The harness completes each into a full row (which
cell, which corrector, what it cost, versions) with `complete_row` and stores one JSON-lines file
per grid cell. `rows_to_frame` turns rows into a pandas DataFrame with the columns of `COLUMNS`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from deeppatch.errors import DeepPatchError
from deeppatch.storage import atomic_write_text

# Every full row has exactly these keys (values JSON-serialisable).
COLUMNS = (
    # which cell
    "benchmark", "dataset", "model", "corrector", "params", "params_hash", "seed",
    # what was measured
    "suite", "condition", "group", "severity", "metric", "value", "n", "source", "settings",
    # what it cost
    "eval_time_s", "repair_time_s", "trainable_params", "added_params", "epochs",
    # provenance
    "device", "versions", "created",
)


@dataclass
class SuiteRow:
    """One measurement of a suite.

    condition: unique label within the suite, e.g. "clean", "sigma=1.5", "fog/3",
        "pgd-linf/eps=0.0314/steps=10", "autoattack-standard-linf/eps=0.0314", "mean", "union".
    group: what the condition varies over, for per-condition tables and curves: "sigma", the
        corruption name, the attack name, the spatial transform; "aggregate" for means/unions.
    severity: the numeric strength (sigma, 1..5, eps), or None.
    metric: "accuracy" (percent) unless stated: e.g. "routing_accuracy", "auroc", "patched_fraction".
    source: where the data came from, e.g. "cifar10-c" (canonical arrays) or "generated" (ours).
    settings: suite settings that produced it (attack steps, eps, seed, batch size, ...).
    """

    suite: str
    condition: str
    value: float
    n: int
    group: str = ""
    severity: float | None = None
    metric: str = "accuracy"
    source: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    eval_time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def complete_row(row: SuiteRow, cell: dict[str, Any]) -> dict[str, Any]:
    """Merge a suite row with the cell's identity, cost and provenance into a full row."""
    full = {c: None for c in COLUMNS}
    full.update({k: v for k, v in cell.items() if k in full})
    full.update({k: v for k, v in row.to_dict().items() if k in full})
    for key in ("params", "settings", "versions"):
        if not isinstance(full[key], str):
            full[key] = json.dumps(full[key] or {}, sort_keys=True, default=str)
    unknown = set(cell) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown row fields {sorted(unknown)}")
    return full


def rows_to_frame(rows: list[dict[str, Any]]):

    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame


# --------------------------------------------------------------------------------------------
# the result store on disk
#
#   <results_dir>/manifest.json            what was run: benchmark name, spec, versions, device
#   <results_dir>/rows/<cell_key>.jsonl    all full rows of one grid cell, one JSON object per line
#   <results_dir>/failures/<cell_key>.json a failed cell: its identity, error and traceback


def write_cell_rows(results_dir, cell_key: str, rows: list[dict[str, Any]]) -> None:
    """Write one cell's rows atomically (a reader sees all of them or none)."""

    text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows)
    atomic_write_text(text, Path(results_dir) / "rows" / f"{cell_key}.jsonl")


def read_rows(results_dir) -> list[dict[str, Any]]:

    folder = Path(results_dir) / "rows"
    if not folder.is_dir():
        raise DeepPatchError(f"no result rows under {str(results_dir)!r} (expected a rows/ folder)")
    rows = []
    for path in sorted(folder.glob("*.jsonl")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DeepPatchError(f"{path}:{i + 1} is not valid JSON: {exc}") from exc
    return rows


def load_rows(results_dir):
    """All rows under `results_dir` as one pandas DataFrame with the columns of `COLUMNS`."""
    return rows_to_frame(read_rows(results_dir))


def read_manifest(results_dir) -> dict[str, Any]:

    path = Path(results_dir) / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
