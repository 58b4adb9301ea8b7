"""The report's tables, built from prepared rows (`frame.prepare`) with pandas.

Every table goes through one path: per-seed values in long form (row group, entry, seed, column, value)
-> mean ± std over seeds -> best marks (`cells.make_table`). Stored aggregate rows ("mean", "union",
"<name>/mean", "severity=k/mean") are used as the suites wrote them; where one is missing it is computed
from the per-condition rows of the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from deeppatch.reporting.cells import HIGHER, LOWER, Column, Table, decimals_for, make_table
from deeppatch.reporting.frame import AGGREGATE

MAX_ATTACK_COLUMNS = 3  # more attack conditions than this: the headline shows their mean
LONG = ("row", "entry", "seed", "column", "value")
HIGHER_METRICS = ("accuracy", "auroc")

BEST_RULE = ("Best per column within each dataset and model in bold: the highest accuracy (and change in "
             "clean accuracy), the lowest repair time and added parameters, compared at the printed precision "
             "(ties all marked), among the correctors: the model under maintenance (none) is the reference "
             "and is never marked, and nothing is marked where fewer than two correctors have a value.")
SEEDS_RULE = "Values are mean ± sample std over seeds; n=k marks a value measured on fewer seeds than its row."


@dataclass(frozen=True)
class Section:
    """A titled group of tables (one per dataset and model) for one suite."""

    key: str
    title: str
    tables: tuple[Table, ...]


def higher_is_better(metric: str) -> bool:
    return metric in HIGHER_METRICS or metric.endswith("_accuracy")


def blocks(df: pd.DataFrame) -> list[tuple[str, str]]:
    """The (dataset, model) pairs, sorted."""
    return sorted({(d, m) for d, m in df[["dataset", "model"]].to_numpy()})


# ---------------------------------------------------------------------------------------------------------
# per-seed values


def _values(df: pd.DataFrame, suite: str, condition: str | None = None, metric: str = "accuracy",
            aggregates: bool | None = None) -> pd.DataFrame:
    sel = (df["suite"] == suite) & (df["metric"] == metric)
    if condition is not None:
        sel &= df["condition"] == condition
    if aggregates is not None:
        sel &= (df["group"] == AGGREGATE) == aggregates
    return df.loc[sel & df["value"].notna()]


def _per_run(rows: pd.DataFrame) -> pd.Series:
    """Mean value per (entry, seed)."""
    return rows.groupby(["entry", "seed"])["value"].mean()


def _stored_or_mean(df: pd.DataFrame, suite: str, condition: str, parts: pd.DataFrame) -> pd.Series:
    """A stored aggregate row per (entry, seed), else the mean of `parts` for that seed."""
    stored = _per_run(_values(df, suite, condition, aggregates=True))
    return stored.combine_first(_per_run(parts)) if not parts.empty else stored


def _long(series: pd.Series, column: str, row: str = "") -> pd.DataFrame:
    out = series.rename("value").reset_index()
    return out.assign(row=row, column=column)[list(LONG)]


def _runs_cost(df: pd.DataFrame, column: str) -> pd.Series:
    return df.groupby(["entry", "seed"])[column].max().dropna()


def condition_order(rows: pd.DataFrame) -> list[str]:
    """Per-condition rows by (group, severity, condition), then aggregates by name."""
    plain = rows[rows["group"] != AGGREGATE].drop_duplicates("condition")
    plain = plain.sort_values(["group", "severity", "condition"], kind="mergesort", na_position="first")
    aggs = sorted(set(rows.loc[rows["group"] == AGGREGATE, "condition"]))
    return list(plain["condition"]) + [c for c in aggs if c not in set(plain["condition"])]


# ---------------------------------------------------------------------------------------------------------
# assembling


def assemble(key: str, title: str, note: str, long: pd.DataFrame, entries: pd.DataFrame,
             columns: Sequence[Column], *, row_name: str | None = None, row_order: Sequence[str] = ("",),
             with_block: bool = False, block_by_row: bool = False) -> Table | None:
    """Turn long per-seed values into a Table; None when nothing has a value.

    Rows: one per (row group, entry) that has values, in `row_order` then entry order. Labels: the row group
    (when `row_name`), dataset and model (when `with_block`), corrector, seeds.
    """
    long = long.dropna(subset=["value"])
    if long.empty:
        return None
    columns = [c for c in columns if c.name in set(long["column"])]
    rank = {r: i for i, r in enumerate(row_order)}
    pairs = long[["row", "entry"]].drop_duplicates()
    pairs = pairs.assign(rank=pairs["row"].map(rank)).sort_values(["rank", "entry"], kind="mergesort")
    pairs = pairs.reset_index(drop=True)
    seeds = long.groupby(["row", "entry"])["seed"].nunique()

    info = entries.loc[pairs["entry"].to_numpy()].reset_index(drop=True)
    labels = pd.DataFrame(index=pairs.index)
    if row_name:
        labels[row_name] = pairs["row"].to_numpy()
    if with_block:
        labels["dataset"] = info["dataset"].to_numpy()
        labels["model"] = info["model"].to_numpy()
    labels["corrector"] = info["label"].to_numpy()
    seed_counts = pd.Series([int(seeds.loc[(r, e)]) for r, e in pairs[["row", "entry"]].to_numpy()],
                            index=pairs.index)
    labels["seeds"] = seed_counts.astype(str)

    wide = long.pivot_table(index=["row", "entry", "seed"], columns="column", values="value", aggfunc="mean")
    position = {(r, e): i for i, (r, e) in enumerate(pairs[["row", "entry"]].to_numpy())}
    row_of = pd.Series([position[(r, e)] for r, e, _ in wide.index], index=wide.index)
    block_cols = (["dataset", "model"] if with_block else []) + ([row_name] if block_by_row and row_name else [])
    reference = pd.Series(info["reference"].to_numpy(dtype=bool), index=pairs.index)
    return make_table(key, title, note, labels, columns, wide.reset_index(drop=True),
                      row_of.reset_index(drop=True), seed_counts, reference, block_cols)


def _accuracy_column(name: str, values: pd.Series, metric: str = "accuracy") -> Column:
    better = HIGHER if higher_is_better(metric) else ""
    return Column(name, better=better, decimals=decimals_for(values.to_numpy(dtype=float), metric))


# ---------------------------------------------------------------------------------------------------------
# the headline


def headline(df: pd.DataFrame, entries: pd.DataFrame) -> Table | None:
    """One row per entry: clean, its change from the model under maintenance, robust means, attacks, cost."""
    parts: list[pd.DataFrame] = []
    columns: list[Column] = []
    notes = ["Accuracy in %."]

    clean = _per_run(_values(df, "clean", "clean"))
    if not clean.empty:
        parts.append(_long(clean, "clean"))
        columns.append(Column("clean", HIGHER))
        delta = _clean_change(clean, entries)
        if not delta.empty:
            parts.append(_long(delta, "Δ clean"))
            columns.append(Column("Δ clean", HIGHER, signed=True))
            notes.append("Δ clean: change in clean accuracy (percentage points) from the model under maintenance "
                         "(corrector none) of the same dataset and model, paired by seed (against its mean over "
                         "seeds where it lacks the seed).")

    blur_parts = _values(df, "blur", aggregates=False)
    for name, series in (("blur mean", _stored_or_mean(df, "blur", "mean", blur_parts)),
                         ("blur union", _per_run(_values(df, "blur", "union", aggregates=True)))):
        if not series.empty:
            parts.append(_long(series, name))
            columns.append(Column(name, HIGHER))
    if "blur union" in {c.name for c in columns}:
        notes.append("blur union: accuracy on the clean test set and all blurred copies together.")

    corr = _stored_or_mean(df, "corruptions", "mean", _values(df, "corruptions", aggregates=False))
    if not corr.empty:
        parts.append(_long(corr, "corruptions mean"))
        columns.append(Column("corruptions mean", HIGHER))
        notes.append("corruptions mean: over all corruptions and severities.")

    attack_rows = _values(df, "attacks", aggregates=False)
    attack_rows = attack_rows[attack_rows["group"] != "clean"]  # the subsets' clean accuracy is no attack
    attack_conditions = condition_order(attack_rows)
    if 0 < len(attack_conditions) <= MAX_ATTACK_COLUMNS:
        for cond in attack_conditions:
            parts.append(_long(_per_run(attack_rows[attack_rows["condition"] == cond]), cond))
            columns.append(Column(cond, HIGHER))
        notes.append("One column per attack (robust accuracy under the attack).")
    elif attack_conditions:
        parts.append(_long(_per_run(attack_rows), "attacks mean"))
        columns.append(Column("attacks mean", HIGHER))
        notes.append(f"attacks mean: robust accuracy averaged over the {len(attack_conditions)} attack conditions "
                     f"(more than {MAX_ATTACK_COLUMNS}; see the attacks table for each).")

    for col, column in (("repair_time_s", Column("repair time (s)", LOWER, decimals=1, zero_std=False)),
                        ("added_params", Column("added params", LOWER, integer=True, zero_std=False))):
        cost = _runs_cost(df, col)
        if not cost.empty:
            parts.append(_long(cost, column.name))
            columns.append(column)
    if not parts:
        return None
    note = " ".join(notes + [SEEDS_RULE, BEST_RULE])
    return assemble("headline", "Headline", note, pd.concat(parts, ignore_index=True), entries, columns,
                    with_block=True)


def _clean_change(clean: pd.Series, entries: pd.DataFrame) -> pd.Series:
    """Clean accuracy minus the reference's of the same dataset/model (same seed, else its mean over seeds)."""
    reference_of = {}
    for entry, info in entries[entries["reference"]].iterrows():
        reference_of.setdefault((info["dataset"], info["model"]), entry)  # the first in report order
    by_entry = {entry: values.droplevel("entry") for entry, values in clean.groupby(level="entry")}
    out = {}
    for (entry, seed), value in clean.items():
        info = entries.loc[entry]
        ref = by_entry.get(reference_of.get((info["dataset"], info["model"])))
        if info["reference"] or ref is None:
            continue
        out[(entry, seed)] = value - (ref.loc[seed] if seed in ref.index else ref.mean())
    index = pd.MultiIndex.from_tuples(list(out), names=["entry", "seed"])  # also when empty (no reference)
    return pd.Series(list(out.values()), index=index, dtype=float)


# ---------------------------------------------------------------------------------------------------------
# per-condition tables


def condition_section(df: pd.DataFrame, entries: pd.DataFrame, suite: str, title: str, note: str,
                      with_clean: bool = False) -> Section | None:
    """Suites shown as one column per condition (blur, attacks, spatial, ...); one table per dataset/model.

    Metrics other than accuracy get their own columns, named "<condition> [<metric>]".
    """
    tables = []
    for dataset, model in blocks(df):
        sub = df[(df["dataset"] == dataset) & (df["model"] == model)]
        rows = sub[(sub["suite"] == suite) & sub["value"].notna()]
        if rows.empty:
            continue
        parts, columns = [], []
        if with_clean:
            clean = _values(sub, "clean", "clean")
            if not clean.empty:
                parts.append(_long(_per_run(clean), "clean"))
                columns.append(_accuracy_column("clean", clean["value"]))
        metrics = sorted(set(rows["metric"]), key=lambda m: (m != "accuracy", m))
        for metric in metrics:
            mrows = rows[rows["metric"] == metric]
            plain = mrows[mrows["group"] != AGGREGATE]
            for cond in condition_order(mrows):
                crow = mrows[mrows["condition"] == cond]
                name = cond if metric == "accuracy" else f"{cond} [{metric}]"
                values = _per_run(crow)
                if cond == "mean" and not plain.empty:  # a missing stored mean: the mean of the conditions
                    values = values.combine_first(_per_run(plain))
                parts.append(_long(values, name))
                columns.append(_accuracy_column(name, crow["value"], metric))
        table = assemble(f"{suite}-{dataset}-{model}", f"{dataset} / {model}", note,
                         pd.concat(parts, ignore_index=True), entries, columns)
        if table is not None:
            tables.append(table)
    return Section(suite, title, tuple(tables)) if tables else None


def corruption_section(df: pd.DataFrame, entries: pd.DataFrame) -> Section | None:
    """Accuracy per corruption (rows, with each corrector) and severity (columns), plus all corruptions."""
    tables = []
    all_name = "all corruptions"
    for dataset, model in blocks(df):
        sub = df[(df["dataset"] == dataset) & (df["model"] == model)]
        plain = _values(sub, "corruptions", aggregates=False)
        if plain.empty:
            continue
        severities = sorted(set(plain["severity"].dropna()))
        sev_name = {s: f"severity {s:g}" for s in severities}
        parts = []
        groups = sorted(set(plain["group"]))
        for g in groups:
            rows = plain[plain["group"] == g]
            for s in severities:
                parts.append(_long(_per_run(rows[rows["severity"] == s]), sev_name[s], row=g))
            parts.append(_long(_stored_or_mean(sub, "corruptions", f"{g}/mean", rows), "mean", row=g))
        for s in severities:
            stored = f"severity={s:g}/mean"
            parts.append(_long(_stored_or_mean(sub, "corruptions", stored, plain[plain["severity"] == s]),
                               sev_name[s], row=all_name))
        parts.append(_long(_stored_or_mean(sub, "corruptions", "mean", plain), "mean", row=all_name))
        columns = [Column(sev_name[s], HIGHER) for s in severities] + [Column("mean", HIGHER)]
        note = ("Accuracy in % per corruption (rows) and severity (columns); mean: over severities; "
                f"{all_name}: mean over corruptions. Best marks compare the correctors within each corruption.")
        table = assemble(f"corruptions-{dataset}-{model}", f"{dataset} / {model}", note,
                         pd.concat(parts, ignore_index=True), entries, columns, row_name="corruption",
                         row_order=[*groups, all_name], block_by_row=True)
        if table is not None:
            tables.append(table)
    return Section("corruptions", "Common corruptions", tuple(tables)) if tables else None


def diagnostics_section(df: pd.DataFrame, entries: pd.DataFrame) -> Section | None:
    """Corrector-specific diagnostics: one row per (condition, entry), one column per metric."""
    tables = []
    for dataset, model in blocks(df):
        sub = df[(df["dataset"] == dataset) & (df["model"] == model)]
        rows = sub[(sub["suite"] == "diagnostics") & sub["value"].notna()]
        if rows.empty:
            continue
        shown = _condition_names(rows)
        rows = rows.assign(row=[shown[(g, c)] for g, c in rows[["group", "condition"]].to_numpy()])
        order = []
        for cond in condition_order(rows):
            order += sorted({shown[(g, c)] for g, c in rows.loc[rows["condition"] == cond, ["group", "condition"]]
                             .to_numpy()})
        parts, columns = [], []
        for metric in sorted(set(rows["metric"])):
            mrows = rows[rows["metric"] == metric]
            per = mrows.groupby(["row", "entry", "seed"])["value"].mean().reset_index()
            parts.append(per.assign(column=metric)[list(LONG)])
            columns.append(_accuracy_column(metric, mrows["value"], metric))
        note = ("Diagnostics the correctors report about themselves (e.g. DeepPatch's switch: routing accuracy on "
                "clean and perturbed inputs, routing modes, with and without the switch, AUROC). Best marks "
                "compare correctors within a condition, for metrics where higher is better (accuracies, AUROC).")
        table = assemble(f"diagnostics-{dataset}-{model}", f"{dataset} / {model}", note,
                         pd.concat(parts, ignore_index=True), entries, columns, row_name="condition",
                         row_order=order, block_by_row=True)
        if table is not None:
            tables.append(table)
    return Section("diagnostics", "Corrector diagnostics", tuple(tables)) if tables else None


def _condition_names(rows: pd.DataFrame) -> dict[tuple[str, str], str]:
    """A condition's own name, or "<group>: <condition>" where the name occurs under several groups."""
    pairs = rows[["group", "condition"]].drop_duplicates()
    counts = pairs["condition"].value_counts()
    return {(g, c): (f"{g}: {c}" if counts[c] > 1 and g else c) for g, c in pairs.to_numpy()}


BLUR_NOTE = ("Accuracy in % on the clean test set and at each blur sigma; mean: over the sigmas; union: clean and "
             "all sigmas together.")
KNOWN_SUITES = frozenset({"clean", "blur", "corruptions", "attacks", "spatial", "diagnostics"})


def sections(df: pd.DataFrame, entries: pd.DataFrame) -> list[Section]:
    """All per-condition sections that have rows, in a fixed order; unknown suites get a generic one."""
    out = [
        condition_section(df, entries, "blur", "Gaussian blur", BLUR_NOTE, with_clean=True),
        corruption_section(df, entries),
        condition_section(df, entries, "attacks", "Adversarial attacks",
                          "Robust accuracy in % under each attack (family/eps/steps as named)."),
        condition_section(df, entries, "spatial", "Spatial transformations",
                          "Accuracy in % on spatially transformed neighbours."),
    ]
    for suite in sorted(set(df["suite"]) - KNOWN_SUITES):
        out.append(condition_section(df, entries, suite, f"Suite {suite}", f"Values of suite {suite} per condition."))
    out.append(diagnostics_section(df, entries))
    return [s for s in out if s is not None]
