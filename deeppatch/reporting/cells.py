"""A report table independent of its output format: numbers (mean, std, n over seeds), best marks, cell text.

Builders in `tables.py` produce `Table`s; the Markdown, HTML, LaTeX and CSV writers only render them, so
every format shows the same numbers, the same rounding and the same best marks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

HIGHER = "higher"
LOWER = "lower"
MISSING = "–"
NUMERIC_LABELS = frozenset({"seeds"})  # label columns that hold numbers: aligned right like the values


@dataclass(frozen=True)
class Column:
    """A numeric column: its header, which direction is better ("" for none), how it is printed."""

    name: str
    better: str = ""
    decimals: int = 2
    integer: bool = False
    signed: bool = False  # print "+" on positive values (changes)
    zero_std: bool = True  # print "± 0.00"; False for costs that are the same on every seed by construction


@dataclass(frozen=True)
class Cell:
    """One printed cell: the value text, the std text ("" when one seed), a note such as "n=2", a best mark."""

    value: str
    std: str = ""
    note: str = ""
    best: bool = False

    @property
    def missing(self) -> bool:
        return self.value == MISSING


@dataclass(frozen=True)
class Table:
    """Rows of label texts plus numeric columns; `mean`, `std`, `n` and `best` share the index of `labels`.

    `blocks`: label columns whose equal values form one comparison block (best marks are per block, and
    renderers draw a rule between blocks). `reference`: rows that are never marked best.
    """

    key: str
    title: str
    note: str
    labels: pd.DataFrame
    columns: tuple[Column, ...]
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    seeds: pd.Series
    reference: pd.Series
    blocks: tuple[str, ...]
    best: pd.DataFrame

    @property
    def label_names(self) -> list[str]:
        return list(self.labels.columns)

    def rows(self) -> Iterator[tuple[list[str], list[Cell], bool]]:
        """(label texts, cells, starts a new block) per row, in order."""
        previous = None
        for i, idx in enumerate(self.labels.index):
            block = tuple(self.labels.loc[idx, b] for b in self.blocks)
            cells = [self.cell(idx, c) for c in self.columns]
            yield [str(v) for v in self.labels.loc[idx]], cells, i > 0 and block != previous
            previous = block

    def cell(self, idx: object, column: Column) -> Cell:
        mean = self.mean.loc[idx, column.name]
        if not _finite(mean):
            return Cell(MISSING)
        n = int(self.n.loc[idx, column.name])
        std = self.std.loc[idx, column.name]
        std_text = ""
        if n > 1 and _finite(std) and (column.zero_std or std != 0):
            std_text = format_number(std, column, signed=False)
        note = f"n={n}" if n != int(self.seeds.loc[idx]) else ""
        return Cell(format_number(mean, column), std_text, note, bool(self.best.loc[idx, column.name]))

    def to_frame(self) -> pd.DataFrame:
        """Numbers for CSV: the labels, then per column its mean, "<name> std" and "<name> n"."""
        parts = [self.labels.reset_index(drop=True)]
        for c in self.columns:
            parts.append(pd.DataFrame({
                c.name: self.mean[c.name].to_numpy(dtype=float),
                f"{c.name} std": self.std[c.name].to_numpy(dtype=float),
                f"{c.name} n": self.n[c.name].to_numpy(dtype=int),
                f"{c.name} best": self.best[c.name].to_numpy(dtype=bool),
            }))
        return pd.concat(parts, axis=1)


def make_table(key: str, title: str, note: str, labels: pd.DataFrame, columns: Sequence[Column],
               per_seed: pd.DataFrame, row_of: pd.Series, seeds: pd.Series, reference: pd.Series,
               blocks: Sequence[str]) -> Table:
    """Aggregate per-seed values into mean ± std and mark the best values.

    per_seed: one row per (table row, seed), numeric columns named as `columns`; `row_of` maps each of its
    rows to an index value of `labels`.
    """
    names = [c.name for c in columns]
    values = per_seed.reindex(columns=names).astype(float)
    grouped = values.groupby(row_of.to_numpy(), sort=False)
    mean = grouped.mean().reindex(labels.index)
    std = grouped.std(ddof=1).reindex(labels.index)
    n = grouped.count().reindex(labels.index).fillna(0).astype(int)
    best = mark_best(mean, columns, labels, blocks, reference)
    return Table(key, title, note, labels, tuple(columns), mean, std, n, seeds.reindex(labels.index),
                 reference.reindex(labels.index).fillna(False).astype(bool), tuple(blocks), best)


def mark_best(mean: pd.DataFrame, columns: Sequence[Column], labels: pd.DataFrame, blocks: Sequence[str],
              reference: pd.Series) -> pd.DataFrame:
    """Best per column within each block, compared at the printed precision (ties all marked).

    Reference rows (the model under maintenance) are not candidates, and a block needs at least two
    candidates with a value before anything is marked.
    """
    best = pd.DataFrame(False, index=mean.index, columns=[c.name for c in columns])
    candidates = ~reference.reindex(mean.index).fillna(False).astype(bool)
    keys = labels[list(blocks)].astype(str).agg("\x1f".join, axis=1) if blocks else pd.Series("", index=mean.index)
    for c in columns:
        if c.better not in (HIGHER, LOWER):
            continue
        rounded = mean[c.name].astype(float).round(0 if c.integer else c.decimals)
        for _, idx in keys[candidates].groupby(keys[candidates], sort=False).groups.items():
            vals = rounded.loc[idx].dropna()
            if len(vals) < 2:
                continue
            target = vals.max() if c.better == HIGHER else vals.min()
            best.loc[vals.index[vals == target], c.name] = True
    return best


def format_number(value: float, column: Column, signed: bool | None = None) -> str:
    signed = column.signed if signed is None else signed
    if column.integer:
        text = f"{round(value):,}"
    else:
        text = f"{value:.{column.decimals}f}"
        if text.lstrip("-").strip("0.") == "":
            text = text.lstrip("-")  # no "-0.00"
    if signed and not text.startswith("-") and text.strip("0.,") != "":
        text = "+" + text
    return text


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def decimals_for(values: Sequence[float] | np.ndarray, metric: str) -> int:
    """Two decimals for percentages; three for scores within [0, 1] such as AUROC."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if metric != "accuracy" and arr.size and arr.min() >= 0 and arr.max() <= 1:
        return 3
    return 2
