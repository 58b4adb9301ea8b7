"""Per-sample correctness beside the rows (`<results>/samples/<cell key>.json`), attached to report entries.

Every cell of a benchmark is evaluated on the same test images (the evaluation seed is independent of the
repair seeds), so the arrays of one (suite, condition) line up across correctors and seeds and the report
can test differences on the same images. Results written before samples existed simply have none: the
report then shows intervals without paired tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeppatch.errors import DeepPatchError
from deeppatch.reporting.frame import ENTRY_KEYS
from deeppatch.results import read_samples

Part = tuple[str, str]  # (suite, condition): one stored array


@dataclass(frozen=True)
class Samples:
    """{(entry, seed): {(suite, condition): bool array per test image}} plus where it came from."""

    arrays: Mapping[tuple[int, int], Mapping[Part, np.ndarray]] = field(default_factory=dict)
    cells: int = 0  # cells of the report that have a samples file
    total: int = 0  # cells of the report
    problem: str = ""  # why the samples could not be used ("" when they could, or there are none)

    def array(self, entry: int, seed: int, parts: Iterable[Part] | None) -> np.ndarray | None:
        """The concatenation of `parts` for one (entry, seed), or None when any part is missing."""
        if not parts:
            return None
        stored = self.arrays.get((int(entry), int(seed)))
        if stored is None:
            return None
        found = [stored.get(p) for p in parts]
        if any(a is None for a in found):
            return None
        return found[0] if len(found) == 1 else np.concatenate(found)

    @property
    def any(self) -> bool:
        return bool(self.arrays)


def load_samples(results_dir: str | Path, by_cell: Mapping[str, list[dict[str, Any]]], df: pd.DataFrame) -> Samples:
    """The samples of the cells in `by_cell` ({cell key: rows}), keyed by the prepared frame's entries.

    An array whose length differs from its row's `n` is dropped (it cannot belong to that row); a samples
    file without a rows file is ignored; an unreadable samples folder gives no samples and a `problem`.
    """
    total = len(by_cell)
    try:
        stored = read_samples(results_dir)
    except DeepPatchError as exc:
        name = str(exc).split(":", 1)[0]
        return Samples(total=total, problem=f"unreadable per-sample file {Path(name).name}")
    if not stored:
        return Samples(total=total)
    entry_of = {tuple(k): int(e) for k, e in
                zip(df[list(ENTRY_KEYS)].itertuples(index=False, name=None), df["entry"], strict=True)}
    arrays: dict[tuple[int, int], dict[Part, np.ndarray]] = {}
    for key, rows in by_cell.items():
        cell = stored.get(key)
        if not cell or not rows:
            continue
        first = rows[0]
        entry = entry_of.get(tuple(_text(first.get(k)) for k in ENTRY_KEYS))
        if entry is None:
            continue
        sizes = {(str(r["suite"]), str(r["condition"])): r.get("n") for r in rows}
        kept = {part: arr for part, arr in cell.items() if sizes.get(part) == arr.size}
        if kept:
            arrays.setdefault((entry, int(first["seed"])), {}).update(kept)
    return Samples(arrays, cells=sum(1 for k in by_cell if k in stored), total=total)


def _text(value: Any) -> str:
    return "" if value is None else str(value)
