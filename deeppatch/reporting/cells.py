"""A report table independent of its output format: numbers with their uncertainty, tests, best marks, cell text.

Builders in `tables.py` produce `Table`s; the Markdown, HTML, LaTeX and CSV writers only render them, so
every format shows the same numbers, the same rounding, the same intervals and the same marks.

Per cell: the mean over seeds, a 95 % interval (`inference.value_interval`: t across seeds, or Wilson on
the n test images for one seed), for a change against the model under maintenance a paired test on the
same images (Holm-corrected over the table's changes), and a best mark only where a paired test separates
the best from the runner-up (Holm-corrected over the table's best-vs-runner-up tests).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from deeppatch.reporting import inference
from deeppatch.reporting.samples import Samples

HIGHER = "higher"
LOWER = "lower"
MISSING = "–"
NUMERIC_LABELS = frozenset({"seeds"})  # label columns that hold numbers: aligned right like the values
# what a column holds, which decides its interval
SHARE = "share"  # a percentage of the test images (accuracy, routing): Wilson on n for one seed
SCORE = "score"  # another measurement (AUROC, ...): t interval across seeds only
COST = "cost"  # repair time, parameters: t interval across seeds only, none where every seed agrees
DELTA = "delta"  # a change against the model under maintenance: the paired test's interval
ASCII = {"Δ": "delta", "∞": "inf", "σ": "sigma", "±": "+/-", "–": "-", "—": "-", "·": "-", "≤": "<=", "≥": ">="}


@dataclass(frozen=True)
class Column:
    """A numeric column: its key, which direction is better ("" for none), how it is printed and tested."""

    name: str
    better: str = ""
    title: str = ""  # the header's text (before the "(n=...)"); the name when empty
    decimals: int = 2
    integer: bool = False
    signed: bool = False  # print "+" on positive values (changes)
    kind: str = SHARE
    delta_of: str = ""  # DELTA columns: the column whose change against the reference this is
    show_n: bool = True  # the header carries the number of test images, "(n=100)"
    csv: str = ""  # the name in CSV files (ASCII); the column name made ASCII when empty
    legend: str = ""  # the full setting behind a short name, listed under the table


@dataclass(frozen=True)
class Cell:
    """One printed cell: value, interval text, test text (changes), a note such as "1 of 2 seeds", marks."""

    value: str
    interval: str = ""
    test: str = ""
    note: str = ""
    best: bool = False
    significant: bool = False

    @property
    def missing(self) -> bool:
        return self.value == MISSING


@dataclass(frozen=True)
class Table:
    """Rows of label texts plus numeric columns; the frames share the index of `labels` and column names.

    `blocks`: label columns whose equal values form one comparison block (best marks are per block;
    renderers draw a rule between blocks, or a heading row per block when `block_rows`, and then leave
    those label columns out). `reference`: rows that are never marked best.
    """

    key: str
    title: str
    note: str
    labels: pd.DataFrame
    columns: tuple[Column, ...]
    mean: pd.DataFrame
    low: pd.DataFrame
    high: pd.DataFrame
    method: pd.DataFrame
    n: pd.DataFrame  # seeds behind each value
    images: pd.DataFrame  # test images behind each value (per seed and condition)
    p: pd.DataFrame  # Holm-adjusted p-value of the cell's test (changes), NaN where none
    tested: pd.DataFrame
    significant: pd.DataFrame
    best: pd.DataFrame
    seeds: pd.Series
    reference: pd.Series
    blocks: tuple[str, ...]
    block_rows: bool = False
    legend: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    lead: pd.DataFrame | None = None  # at a column's printed best: Holm-adjusted p of best vs runner-up

    @property
    def label_names(self) -> list[str]:
        hidden = set(self.blocks) if self.block_rows else set()
        return [c for c in self.labels.columns if c not in hidden]

    def header(self, column: Column) -> str:
        return self.headers.get(column.name, column.name)

    def block_title(self, idx: object) -> str:
        return " / ".join(str(self.labels.loc[idx, b]) for b in self.blocks)

    def rows(self) -> Iterator[tuple[list[str], list[Cell], bool, str]]:
        """(label texts, cells, starts a new block, block title when `block_rows` and a block starts) per row."""
        previous = None
        names = self.label_names
        for i, idx in enumerate(self.labels.index):
            block = tuple(self.labels.loc[idx, b] for b in self.blocks)
            cells = [self.cell(idx, c) for c in self.columns]
            starts = block != previous
            title = self.block_title(idx) if self.block_rows and starts and self.blocks else ""
            yield [str(self.labels.loc[idx, c]) for c in names], cells, i > 0 and starts, title
            previous = block

    def cell(self, idx: object, column: Column) -> Cell:
        mean = self.mean.loc[idx, column.name]
        if not _finite(mean):
            return Cell(MISSING)
        n = int(self.n.loc[idx, column.name])
        interval = ""
        low, high = self.low.loc[idx, column.name], self.high.loc[idx, column.name]
        if _finite(low) and _finite(high):
            interval = f"[{format_bound(low, column)}, {format_bound(high, column)}]"
        test = ""
        if column.kind == DELTA:
            p = self.p.loc[idx, column.name]
            test = inference.p_text(float(p) if _finite(p) else None, bool(self.tested.loc[idx, column.name]))
        seeds = int(self.seeds.loc[idx])
        note = f"{n} of {seeds} seeds" if n != seeds else ""
        return Cell(format_number(mean, column), interval, test, note, bool(self.best.loc[idx, column.name]),
                    bool(self.significant.loc[idx, column.name]))

    def to_frame(self) -> pd.DataFrame:
        """Tidy numbers for CSV: one row per (table row, column) with a value, ASCII names throughout."""
        records = []
        labels = [c for c in self.labels.columns if c != "seeds"]
        for idx in self.labels.index:
            for c in self.columns:
                mean = self.mean.loc[idx, c.name]
                if not _finite(mean):
                    continue
                tested = bool(self.tested.loc[idx, c.name])
                images = self.images.loc[idx, c.name]
                record = {ascii_text(k): ascii_text(self.labels.loc[idx, k]) for k in labels}
                record.update({
                    "metric": c.csv or ascii_text(c.name), "mean": float(mean),
                    "ci_low": float(self.low.loc[idx, c.name]), "ci_high": float(self.high.loc[idx, c.name]),
                    "ci_method": str(self.method.loc[idx, c.name]),
                    "n": int(images) if _finite(images) else None, "seeds": int(self.n.loc[idx, c.name]),
                    "p": float(self.p.loc[idx, c.name]) if tested else None,
                    "significant": bool(self.significant.loc[idx, c.name]) if tested else None,
                    "best": bool(self.best.loc[idx, c.name])})
                records.append(record)
        columns = [ascii_text(k) for k in labels] + ["metric", "mean", "ci_low", "ci_high", "ci_method", "n",
                                                      "seeds", "p", "significant", "best"]
        frame = pd.DataFrame.from_records(records, columns=columns)
        frame["n"] = frame["n"].astype("Int64")
        return frame

    def select(self, order: Sequence[object], labels: pd.DataFrame, columns: Sequence[str], *, key: str, title: str,
               note: str, clear_best: bool = True) -> Table:
        """Another view of the same numbers: rows `order` (index values) with new `labels`, some columns."""
        cols = [c for c in self.columns if c.name in set(columns)]
        cols.sort(key=lambda c: list(columns).index(c.name))
        names = [c.name for c in cols]
        index = pd.RangeIndex(len(order))

        def pick(frame: pd.DataFrame) -> pd.DataFrame:
            return frame.loc[list(order), names].set_index(index)

        best = pick(self.best)
        if clear_best:
            best = best & False
        return replace(self, key=key, title=title, note=note, labels=labels.set_index(index), columns=tuple(cols),
                       mean=pick(self.mean), low=pick(self.low), high=pick(self.high), method=pick(self.method),
                       n=pick(self.n), images=pick(self.images), p=pick(self.p), tested=pick(self.tested),
                       significant=pick(self.significant), best=best,
                       lead=pick(self.lead) if self.lead is not None else None,
                       seeds=self.seeds.loc[list(order)].set_axis(index), blocks=(), block_rows=False,
                       reference=self.reference.loc[list(order)].set_axis(index), legend=(),
                       headers={k: v for k, v in self.headers.items() if k in set(names)})


def make_table(key: str, title: str, note: str, labels: pd.DataFrame, columns: Sequence[Column],
               long: pd.DataFrame, entry_of: pd.Series, reference: pd.Series, blocks: Sequence[str],
               samples: Samples, reference_row: Mapping[int, int] | None = None, *, block_rows: bool = False,
               legend: Sequence[tuple[str, str]] = ()) -> Table:
    """Aggregate per-seed values into means with intervals, test changes and mark the best values.

    long: one row per (table row `pos`, `seed`, `column`) with `value`, `images` (test images, NaN when
    unknown) and `parts` (the stored (suite, condition) arrays whose concatenation is the value, or None).
    `entry_of` maps each table row to its entry (for the per-sample arrays); `reference_row` maps a row to
    the row of its model under maintenance (for changes).
    """
    names = [c.name for c in columns]
    index = labels.index
    grouped = long.groupby(["pos", "column"], sort=False)
    mean = grouped["value"].mean().unstack("column").reindex(index=index, columns=names).astype(float)
    n = grouped["value"].count().unstack("column").reindex(index=index, columns=names).fillna(0).astype(int)
    images = grouped["images"].median().unstack("column").reindex(index=index, columns=names).astype(float)
    for c in columns:  # a change is measured on its column's images
        if c.kind == DELTA and c.delta_of in images:
            images[c.name] = images[c.delta_of].where(mean[c.name].notna())
    seeds = long.groupby("pos")["seed"].nunique().reindex(index).fillna(0).astype(int)
    values = {k: list(v) for k, v in grouped["value"]}
    parts: dict[tuple[int, str], dict[int, object]] = {}
    for p, c, s, prt in long[["pos", "column", "seed", "parts"]].itertuples(index=False):
        parts.setdefault((int(p), c), {})[int(s)] = prt
    by_column = {c.name: c for c in columns}

    def arrays(pos: int, column: str) -> dict[int, np.ndarray | None]:
        here = parts.get((int(pos), column), {})
        return {s: samples.array(int(entry_of.loc[pos]), s, here[s]) for s in sorted(here)}

    low = pd.DataFrame(np.nan, index=index, columns=names)
    high = low.copy()
    method = pd.DataFrame("", index=index, columns=names)
    p_values = pd.DataFrame(np.nan, index=index, columns=names)
    tested = pd.DataFrame(False, index=index, columns=names)
    significant = pd.DataFrame(False, index=index, columns=names)

    changes: list[tuple[int, str, float]] = []
    for (pos, col), vals in values.items():
        column = by_column[col]
        if column.kind == DELTA:
            test = None
            ref = (reference_row or {}).get(pos)
            if ref is not None and column.delta_of:
                test = inference.change_test(arrays(pos, column.delta_of), arrays(ref, column.delta_of))
            if test is not None:
                low.loc[pos, col] = test.ci_low * inference.PERCENT
                high.loc[pos, col] = test.ci_high * inference.PERCENT
                method.loc[pos, col] = test.method
                tested.loc[pos, col] = True
                changes.append((pos, col, test.p_value))
                continue
        spread = inference.value_interval(vals, images.loc[pos, col], column.kind == SHARE)
        if spread is not None and not (column.kind in (COST, DELTA) and spread.low == spread.high):
            lo, hi = spread.low, spread.high
            if column.kind == SHARE:  # a t interval can reach past 0 or 100 %: a share cannot
                lo, hi = max(lo, 0.0), min(hi, inference.PERCENT)
            elif column.kind == SCORE and all(0.0 <= v <= 1.0 for v in vals):  # AUROC: within [0, 1]
                lo, hi = max(lo, 0.0), min(hi, 1.0)
            elif column.kind == COST:  # times and counts are not negative
                lo = max(lo, 0.0)
            low.loc[pos, col], high.loc[pos, col], method.loc[pos, col] = lo, hi, spread.method
    adjusted, passed = inference.holm_adjusted([p for _, _, p in changes])
    for (pos, col, _), p, ok in zip(changes, adjusted, passed, strict=True):
        p_values.loc[pos, col] = p
        significant.loc[pos, col] = bool(ok)

    reference = reference.reindex(index).fillna(False).astype(bool)
    best, lead = mark_best(mean, columns, labels, blocks, reference, arrays)
    headers = {c.name: (c.title or c.name) + (_n_text(images[c.name]) if c.show_n else "") for c in columns}
    return Table(key, title, note, labels, tuple(columns), mean, low, high, method, n, images, p_values, tested,
                 significant, best, seeds, reference, tuple(blocks), block_rows, tuple(legend), headers, lead)


def mark_best(mean: pd.DataFrame, columns: Sequence[Column], labels: pd.DataFrame, blocks: Sequence[str],
              reference: pd.Series, arrays) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Best per column within each block, only where it is significantly ahead of the runner-up.

    Candidates: the rows that are not the reference, with a value. The printed best must be unique (a tie at
    the printed precision is not marked), every candidate needs per-sample data, and the paired test of the
    best against the runner-up (`stats.compare_best`) must stay significant at 0.05 after Holm over all such
    tests of the table. Returns (best marks, the Holm-adjusted p of each test at the tested best's cell).
    """
    best = pd.DataFrame(False, index=mean.index, columns=[c.name for c in columns])
    lead = pd.DataFrame(np.nan, index=mean.index, columns=[c.name for c in columns])
    candidates = ~reference
    keys = labels[list(blocks)].astype(str).agg("\x1f".join, axis=1) if blocks else pd.Series("", index=mean.index)
    found: list[tuple[object, str, float]] = []
    for c in columns:
        if c.better not in (HIGHER, LOWER) or c.kind == DELTA:
            continue
        rounded = mean[c.name].astype(float).round(0 if c.integer else c.decimals)
        for _, idx in keys[candidates].groupby(keys[candidates], sort=False).groups.items():
            vals = rounded.loc[idx].dropna()
            if len(vals) < 2:
                continue
            target = vals.max() if c.better == HIGHER else vals.min()
            top = list(vals.index[vals == target])
            if len(top) != 1:
                continue
            rows = list(vals.index)
            result = inference.best_test([arrays(int(r), c.name) for r in rows], c.better)
            if result is None or rows[result[0]] != top[0]:
                continue
            found.append((top[0], c.name, result[1].p_value))
    adjusted, passed = inference.holm_adjusted([p for _, _, p in found])
    for (row, col, _), p, ok in zip(found, adjusted, passed, strict=True):
        best.loc[row, col] = bool(ok)
        lead.loc[row, col] = p
    return best, lead


def _n_text(images: pd.Series) -> str:
    sizes = sorted({int(v) for v in images.dropna()})
    return f" (n={'/'.join(str(s) for s in sizes)})" if sizes else ""


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


def format_bound(value: float, column: Column) -> str:
    """An interval bound: one decimal fewer than the value (the interval's width is what it tells)."""
    if column.integer:
        return f"{round(value):,}"
    decimals = column.decimals - 1 if column.decimals >= 2 else column.decimals
    text = f"{value:.{decimals}f}"
    return text.lstrip("-") if text.lstrip("-").strip("0.") == "" else text


def ascii_text(value: object) -> str:
    text = str(value)
    for ch, rep in ASCII.items():
        text = text.replace(ch, rep)
    return text.encode("ascii", "replace").decode("ascii")


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
