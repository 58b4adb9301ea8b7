"""A ranked leaderboard (RobustBench-style): one row per corrector, per dataset and model.

The criterion comes from the spec (manifest.json "spec_content"), a top-level table

    [leaderboard]
    metric = "blur mean"            # a headline column: "blur mean", "corruptions mean", "clean", an attack, ...
    clean_drop_tolerance = 1.0      # percentage points of clean accuracy a corrector may lose

Defaults: robust accuracy (blur mean, else corruptions mean, else the attacks, else clean) and a tolerance of
1.0 points. Ranked: the correctors whose clean drop is not significantly larger than the tolerance (the upper
end of the 95 % interval of Δ clean is not below -tolerance), by the metric; the others follow, unranked and
marked, then the model under maintenance as the reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from deeppatch.reporting.cells import COST, DELTA, Column, Table, ascii_text, format_number
from deeppatch.reporting.tables import Section

SPEC_KEY = "leaderboard"
METRIC_KEY = "metric"
TOLERANCE_KEY = "clean_drop_tolerance"
DEFAULT_TOLERANCE = 1.0
ROBUST_DEFAULTS = ("blur mean", "corruptions mean", "attacks mean")
CLEAN = "clean"
DELTA_CLEAN = "Δ clean"


@dataclass(frozen=True)
class Criterion:
    metric: str | None  # as the spec names it (None: the default)
    tolerance: float
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ranking:
    """One dataset/model's leaderboard: rows of the headline table in leaderboard order."""

    dataset: str
    model: str
    metric: str  # the headline column ranked by
    tolerance: float
    order: tuple[int, ...]  # headline row indices
    rank: Mapping[int, str]  # row -> "1", "2", ..., "–" (not ranked), "ref"
    eligible: Mapping[int, bool]
    status: Mapping[int, str]
    tested: Mapping[int, bool]  # whether the clean-drop decision rests on an interval (else the point value)


def criterion(manifest: Mapping[str, Any]) -> Criterion:
    """The spec's `[leaderboard]` table (metric, clean_drop_tolerance), or the defaults; problems are noted."""
    content = manifest.get("spec_content")
    table = content.get(SPEC_KEY) if isinstance(content, Mapping) else None
    if table is None:
        return Criterion(None, DEFAULT_TOLERANCE)
    if not isinstance(table, Mapping):
        return Criterion(None, DEFAULT_TOLERANCE, (f"spec key {SPEC_KEY!r} is not a table; defaults used",))
    problems = [f"unknown {SPEC_KEY} key {k!r} ignored" for k in sorted(set(table) - {METRIC_KEY, TOLERANCE_KEY})]
    metric = table.get(METRIC_KEY)
    if metric is not None and not (isinstance(metric, str) and metric):
        problems.append(f"{SPEC_KEY}.{METRIC_KEY} must be a column name; default used")
        metric = None
    tol = table.get(TOLERANCE_KEY, DEFAULT_TOLERANCE)
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not math.isfinite(tol) or tol < 0:
        problems.append(f"{SPEC_KEY}.{TOLERANCE_KEY} must be a number >= 0; {DEFAULT_TOLERANCE:g} used")
        tol = DEFAULT_TOLERANCE
    return Criterion(metric, float(tol), tuple(problems))


def _resolve(head: Table, rows: list[int], wanted: str | None) -> tuple[str | None, str]:
    """The headline column to rank by (and a problem note when the spec's metric is not there)."""
    usable = [c for c in head.columns if c.kind not in (DELTA, COST)]
    has = {c.name for c in usable if head.mean.loc[rows, c.name].notna().any()}
    if wanted:
        for c in usable:
            if wanted in (c.name, c.title, c.csv) and c.name in has:
                return c.name, ""
    attacks = [c.name for c in usable if c.legend or c.title not in ("", c.name)]
    for name in (*ROBUST_DEFAULTS, *attacks, CLEAN):
        if name in has:
            note = f"the spec's metric {wanted!r} is not in the results; ranked by {name}" if wanted else ""
            return name, note
    return None, ""


def rankings(head: Table, crit: Criterion) -> list[tuple[Ranking, str]]:
    """(ranking, note) per dataset/model block of the headline table."""
    out = []
    keys = head.labels[["dataset", "model"]].astype(str).agg("\x1f".join, axis=1)
    for block in dict.fromkeys(keys):
        rows = list(keys.index[keys == block])
        metric, note = _resolve(head, rows, crit.metric)
        if metric is None:
            continue
        delta = head.mean[DELTA_CLEAN] if DELTA_CLEAN in head.mean else None
        ranked, excluded, missing, refs = [], [], [], []
        eligible, status, tested = {}, {}, {}
        for r in rows:
            value = head.mean.loc[r, metric]
            if head.reference.loc[r]:
                refs.append(r)
                status[r] = "reference (model under maintenance)"
                continue
            if not math.isfinite(value):
                missing.append(r)
                status[r] = f"no {metric}"
                continue
            ok, text, by_interval = _clean_ok(head, r, delta, crit.tolerance)
            eligible[r], status[r], tested[r] = ok, text, by_interval
            (ranked if ok else excluded).append(r)
        by_value = sorted(ranked, key=lambda r: (-head.mean.loc[r, metric], head.labels.loc[r, "corrector"]))
        rank: dict[int, str] = {}
        previous, place = None, 0
        column = next(c for c in head.columns if c.name == metric)
        for i, r in enumerate(by_value, start=1):
            shown = format_number(head.mean.loc[r, metric], column)
            if shown != previous:
                place = i
            rank[r], previous = str(place), shown
        excluded.sort(key=lambda r: (-head.mean.loc[r, metric], head.labels.loc[r, "corrector"]))
        rank.update({r: "–" for r in excluded + missing})
        rank.update({r: "ref" for r in refs})
        info = head.labels.loc[rows[0]]
        out.append((Ranking(str(info["dataset"]), str(info["model"]), metric, crit.tolerance,
                            tuple(by_value + excluded + missing + refs), rank, eligible, status, tested), note))
    return out


def _clean_ok(head: Table, r: int, delta: pd.Series | None, tolerance: float) -> tuple[bool, str, bool]:
    """Within the clean-drop tolerance? Not when the whole 95 % interval of Δ clean lies below -tolerance
    (without an interval: when the point value does)."""
    if delta is None or not math.isfinite(delta.loc[r]):
        return True, "no Δ clean (no reference)", False
    high = head.high.loc[r, DELTA_CLEAN]
    if math.isfinite(high):
        if high < -tolerance:
            return False, f"excluded: clean drop significantly > {tolerance:g}", True
        return True, f"clean drop not significantly > {tolerance:g}", True
    if delta.loc[r] < -tolerance:
        return False, f"excluded: clean drop > {tolerance:g} (untested)", False
    return True, f"clean drop ≤ {tolerance:g} (untested)", False


def leaderboard_section(head: Table | None, crit: Criterion) -> tuple[Section | None, list[Ranking]]:
    if head is None or "dataset" not in head.labels:
        return None, []
    found = rankings(head, crit)
    if not found:
        return None, []
    tables, notes = [], list(crit.problems)
    for ranking, note in found:
        if note:
            notes.append(note)
        labels = pd.DataFrame({"rank": [ranking.rank[r] for r in ranking.order],
                               "corrector": [head.labels.loc[r, "corrector"] for r in ranking.order],
                               "seeds": [head.labels.loc[r, "seeds"] for r in ranking.order],
                               "status": [ranking.status.get(r, "") for r in ranking.order]})
        metric = ranking.metric
        columns = [metric] + ([f"Δ {metric}"] if f"Δ {metric}" in head.mean and metric != CLEAN else [])
        columns += [CLEAN, DELTA_CLEAN] if metric != CLEAN else [DELTA_CLEAN]
        table = head.select(list(ranking.order), labels, columns, key=f"leaderboard-{ranking.dataset}-{ranking.model}",
                            title=f"{ranking.dataset} / {ranking.model}: ranked by {_title(head, metric)}", note="")
        tables.append(table)
    tol = found[0][0].tolerance
    points = f"{tol:g} point{'s' if tol != 1 else ''}"
    note = (f"One row per corrector, ranked by the metric in each title among the correctors whose clean accuracy "
            f"does not drop significantly more than {points} (the upper end of the 95 % interval of Δ clean "
            f"is not below -{tol:g}; without an interval, the value itself); correctors beyond it follow unranked "
            "(–), then the model under maintenance (ref). Equal values at the printed precision share a rank. The "
            f"criterion is the spec's top-level [{SPEC_KEY}] table ({METRIC_KEY} = a headline column, "
            f"{TOLERANCE_KEY} = points); default: blur mean, else corruptions mean, and {DEFAULT_TOLERANCE:g} point. "
            "Numbers, intervals and tests as in the headline. Also in leaderboard.csv.")
    note = " ".join([note, *notes])
    return Section(SPEC_KEY, "Leaderboard", tuple(replace(t, note=note) for t in tables), note), \
        [r for r, _ in found]


def _title(head: Table, name: str) -> str:
    column = next((c for c in head.columns if c.name == name), None)
    return (column.title or column.name) if column else name


def to_frame(head: Table, found: list[Ranking]) -> pd.DataFrame:
    """leaderboard.csv: one row per corrector and dataset/model, ASCII headers."""
    records = []
    for ranking in found:
        metric = ranking.metric
        for r in ranking.order:
            record: dict[str, Any] = {
                "dataset": ascii_text(ranking.dataset), "model": ascii_text(ranking.model),
                "rank": ascii_text(ranking.rank[r]), "corrector": ascii_text(head.labels.loc[r, "corrector"]),
                "eligible": ranking.eligible.get(r), "status": ascii_text(ranking.status.get(r, "")),
                "seeds": int(head.labels.loc[r, "seeds"]), "metric": _csv(head, metric)}
            for prefix, name in (("value", metric), ("delta", f"Δ {metric}"), ("clean", CLEAN),
                                 ("delta_clean", DELTA_CLEAN)):
                record.update(_numbers(head, r, name, prefix))
            records.append(record)
    return pd.DataFrame.from_records(records)


def _csv(head: Table, name: str) -> str:
    column = next((c for c in head.columns if c.name == name), None)
    return (column.csv or ascii_text(column.name)) if column else ascii_text(name)


def _numbers(head: Table, r: int, name: str, prefix: str) -> dict[str, Any]:
    present = name in head.mean.columns
    column: Column | None = next((c for c in head.columns if c.name == name), None)
    out = {prefix: float(head.mean.loc[r, name]) if present else None,
           f"{prefix}_ci_low": float(head.low.loc[r, name]) if present else None,
           f"{prefix}_ci_high": float(head.high.loc[r, name]) if present else None}
    if column is not None and column.kind == DELTA:
        tested = bool(head.tested.loc[r, name])
        out[f"{prefix}_p"] = float(head.p.loc[r, name]) if tested else None
        out[f"{prefix}_significant"] = bool(head.significant.loc[r, name]) if tested else None
    elif prefix.startswith("delta"):
        out[f"{prefix}_p"] = None
        out[f"{prefix}_significant"] = None
    return out
