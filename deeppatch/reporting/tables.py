"""The report's tables, built from prepared rows (`frame.prepare`) with pandas.

Every table goes through one path: per-seed values in long form (row group, entry, seed, column, value,
test images, the stored per-sample parts behind the value) -> means, intervals, paired tests and best
marks (`cells.make_table`). Stored aggregate rows ("mean", "union", "<name>/mean", "severity=k/mean",
also prefixed by the corruption source) are used as the suites wrote them; where one is missing it is
computed from the per-condition rows of the same seed. A mean over conditions is tested on the
concatenation of its conditions' per-sample arrays (all of equal n), and its n is the number of test
images per condition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from deeppatch.reporting import inference
from deeppatch.reporting.cells import COST, DELTA, HIGHER, LOWER, SCORE, SHARE, Column, Table, decimals_for, make_table
from deeppatch.reporting.frame import AGGREGATE
from deeppatch.reporting.samples import Samples

MAX_ATTACK_COLUMNS = 4  # more attack conditions than this: the headline shows their mean
LONG = ("row", "entry", "seed", "column", "value", "images", "parts")
HIGHER_METRICS = ("accuracy", "auroc")
SHARE_METRICS = ("accuracy", "percent")  # shares of the test images in %, besides "*_accuracy"
SWITCH_TAG = "/switch:"  # per-strategy attack rows of a switched model (deeppatch.suites.attacks)
WORST_CASE = "worst-case"


@dataclass(frozen=True)
class Section:
    """A titled group of tables (one per dataset and model) for one suite."""

    key: str
    title: str
    tables: tuple[Table, ...]
    note: str = ""  # the section's caption; the first table's note when empty

    @property
    def caption(self) -> str:
        return self.note or (self.tables[0].note if self.tables else "")


def higher_is_better(metric: str) -> bool:
    return metric in HIGHER_METRICS or metric.endswith("_accuracy")


def metric_kind(metric: str) -> str:
    return SHARE if metric in SHARE_METRICS or metric.endswith("_accuracy") else SCORE


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


def _stored(df: pd.DataFrame, suite: str, name: str) -> pd.DataFrame:
    """Stored aggregate rows called `name`, or `<source>/<name>` (the corruption suite prefixes its source)."""
    rows = _values(df, suite, aggregates=True)
    return rows[(rows["condition"] == name) | (rows["condition"] == rows["source"] + "/" + name)]


def runs(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (entry, seed): the mean value, the test images per condition and the (suite, condition) parts."""
    if rows.empty:
        return pd.DataFrame({"entry": pd.Series(dtype=int), "seed": pd.Series(dtype=int),
                             "value": pd.Series(dtype=float), "images": pd.Series(dtype=float),
                             "parts": pd.Series(dtype=object)})
    stored = rows["stored_condition"] if "stored_condition" in rows else rows["condition"]
    rows = rows.assign(part=list(zip(rows["suite"], stored, strict=True)))
    g = rows.groupby(["entry", "seed"], sort=True)
    out = pd.DataFrame({"value": g["value"].mean(), "images": g["n"].median(), "parts": g["part"].agg(tuple)})
    return out.reset_index()


def stored_or_mean(df: pd.DataFrame, suite: str, name: str, plain: pd.DataFrame) -> pd.DataFrame:
    """A stored aggregate per (entry, seed), else the mean of `plain`; images and parts from `plain`."""
    computed = runs(plain)
    stored = _stored(df, suite, name)
    if stored.empty:
        return computed
    value = stored.groupby(["entry", "seed"])["value"].mean().rename("stored")
    merged = computed.set_index(["entry", "seed"]).join(value, how="outer")
    merged["value"] = merged["stored"].combine_first(merged["value"])
    return merged.drop(columns="stored").reset_index()


def _long(frame: pd.DataFrame, column: str, row: str = "") -> pd.DataFrame:
    return frame.assign(row=row, column=column)[list(LONG)]


def _costs(df: pd.DataFrame, column: str) -> pd.DataFrame:
    per = df.groupby(["entry", "seed"])[column].max().dropna().rename("value").reset_index()
    return per.assign(images=np.nan, parts=None)


def condition_order(rows: pd.DataFrame) -> list[str]:
    """Per-condition rows by (group, severity, condition), then aggregates by name."""
    plain = rows[rows["group"] != AGGREGATE].drop_duplicates("condition")
    plain = plain.sort_values(["group", "severity", "condition"], kind="mergesort", na_position="first")
    aggs = sorted(set(rows.loc[rows["group"] == AGGREGATE, "condition"]))
    return list(plain["condition"]) + [c for c in aggs if c not in set(plain["condition"])]


def reference_entries(entries: pd.DataFrame) -> dict[tuple[str, str], int]:
    """The model under maintenance of each (dataset, model): its first reference entry in report order."""
    out: dict[tuple[str, str], int] = {}
    for entry, info in entries[entries["reference"]].iterrows():
        out.setdefault((info["dataset"], info["model"]), int(entry))
    return out


def change(frame: pd.DataFrame, entries: pd.DataFrame) -> pd.DataFrame:
    """Value minus the reference's of the same dataset/model (same seed, else its mean over seeds)."""
    ref_of = reference_entries(entries)
    by_entry = {int(e): part.set_index("seed")["value"] for e, part in frame.groupby("entry")}
    out = []
    for entry, seed, value in frame[["entry", "seed", "value"]].itertuples(index=False):
        info = entries.loc[entry]
        ref = by_entry.get(ref_of.get((info["dataset"], info["model"]), -1))
        if info["reference"] or ref is None:
            continue
        out.append((entry, seed, value - (ref.loc[seed] if seed in ref.index else ref.mean())))
    result = pd.DataFrame(out, columns=["entry", "seed", "value"]).astype({"entry": int, "seed": int})
    return result.assign(images=np.nan, parts=None)


# ---------------------------------------------------------------------------------------------------------
# assembling


def assemble(key: str, title: str, note: str, long: pd.DataFrame, entries: pd.DataFrame,
             columns: Sequence[Column], samples: Samples, *, row_name: str | None = None,
             row_order: Sequence[str] = ("",), with_block: bool = False, block_by_row: bool = False,
             block_rows: bool = False, changes: bool = False, legend: Sequence[tuple[str, str]] = (),
             extra_labels: dict[str, dict[str, str]] | None = None) -> Table | None:
    """Turn long per-seed values into a Table; None when nothing has a value.

    Rows: one per (row group, entry) that has values, in `row_order` then entry order. Labels: the row group
    (when `row_name`), dataset and model (when `with_block`), corrector, seeds. `changes`: DELTA columns are
    tested against the reference entry's row of the same row group, dataset and model.
    """
    long = long.dropna(subset=["value"])
    if long.empty:
        return None
    columns = [c for c in columns if c.name in set(long["column"])]
    rank = {r: i for i, r in enumerate(row_order)}
    pairs = long[["row", "entry"]].drop_duplicates()
    pairs = pairs.assign(rank=pairs["row"].map(rank)).sort_values(["rank", "entry"], kind="mergesort")
    pairs = pairs.reset_index(drop=True)
    position = {(r, int(e)): i for i, (r, e) in enumerate(pairs[["row", "entry"]].to_numpy())}
    long = long.assign(pos=[position[(r, int(e))] for r, e in long[["row", "entry"]].to_numpy()])

    info = entries.loc[pairs["entry"].to_numpy()].reset_index(drop=True)
    labels = pd.DataFrame(index=pairs.index)
    if row_name:
        labels[row_name] = pairs["row"].to_numpy()
    if with_block:
        labels["dataset"] = info["dataset"].to_numpy()
        labels["model"] = info["model"].to_numpy()
    labels["corrector"] = info["label"].to_numpy()
    for name, by_label in (extra_labels or {}).items():
        labels[name] = [by_label.get(label, "") for label in info["label"]]
    labels["seeds"] = long.groupby("pos")["seed"].nunique().reindex(pairs.index).astype(int).astype(str)

    reference_row = {}
    if changes:
        ref_of = reference_entries(entries)
        for i, (r, e) in enumerate(pairs[["row", "entry"]].to_numpy()):
            ref = ref_of.get((entries.loc[e, "dataset"], entries.loc[e, "model"]))
            if not entries.loc[e, "reference"] and (r, ref) in position:
                reference_row[i] = position[(r, ref)]
    block_cols = (["dataset", "model"] if with_block else []) + ([row_name] if block_by_row and row_name else [])
    reference = pd.Series(info["reference"].to_numpy(dtype=bool), index=pairs.index)
    entry_of = pd.Series(pairs["entry"].to_numpy(dtype=int), index=pairs.index)
    return make_table(key, title, note, labels, columns, long, entry_of, reference, block_cols, samples,
                      reference_row, block_rows=block_rows, legend=legend)


def _metric_column(name: str, values: pd.Series, metric: str = "accuracy", **kw) -> Column:
    better = HIGHER if higher_is_better(metric) else ""
    return Column(name, better=better, decimals=decimals_for(values.to_numpy(dtype=float), metric),
                  kind=metric_kind(metric), **kw)


def interval_note(tables: Sequence[Table]) -> str:
    """What the [low, high] after each number is, from the methods the tables actually used."""
    used = {m for t in tables for m in np.unique(t.method.to_numpy(dtype=str)) if m}
    parts = []
    if inference.T_METHOD in used:
        parts.append("a Student t interval across seeds (rows with several seeds)")
    if inference.WILSON_METHOD in used:
        parts.append("a Wilson interval on the n test images (one seed, or the same value on every seed)")
    if not parts:
        return ""
    return "[low, high]: 95 % interval, " + "; ".join(parts) + "."


def seeds_note(table: Table) -> str:
    if (table.n.to_numpy() < table.seeds.to_numpy()[:, None]).any() and (table.n.to_numpy() > 0).any():
        return "\"k of m seeds\" marks a value measured on fewer seeds than its row."
    return ""


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------------------
# attacks: which rows, and their short names


NORMS = {"linf": "L∞", "l2": "L2", "l1": "L1"}
AA_VERSIONS = {"standard": "AutoAttack", "plus": "AutoAttack+", "rand": "AutoAttack-rand"}
AA_ATTACKS = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "apgd-dlr": "APGD-DLR", "fab": "FAB", "fab-t": "FAB-T",
              "square": "Square", "apgd-dlr-t": "APGD-DLR-T"}


def attack_rows(df: pd.DataFrame, *, strategies: bool = False) -> pd.DataFrame:
    """Attack rows (accuracy): the headline's (worst case for switched models), or the per-strategy ones.

    A switched model's worst case keeps the attack's usual condition (or `<condition>/worst-case`, read as
    the usual condition); its strategies are `<condition>/switch:<strategy>`.
    """
    rows = _values(df, "attacks", aggregates=False)
    rows = rows[rows["group"] != "clean"]
    rows = rows.assign(stored_condition=rows["condition"])  # the name the per-sample arrays are stored under
    tagged = rows["condition"].str.contains(SWITCH_TAG, regex=False)
    if strategies:
        rows = rows[tagged]
        base = rows["condition"].str.split(SWITCH_TAG, n=1, regex=False)
        return rows.assign(condition=base.str[0], strategy=base.str[1])
    rows = rows[~tagged]
    worst = rows["condition"].str.endswith("/" + WORST_CASE)
    return rows.assign(condition=rows["condition"].where(~worst, rows["condition"].str[:-len(WORST_CASE) - 1]))


def has_switch_strategies(df: pd.DataFrame) -> bool:
    rows = df[df["suite"] == "attacks"]
    return bool(rows["condition"].str.contains(SWITCH_TAG, regex=False).any()
                or rows["settings"].str.contains(f'"strategy": "{WORST_CASE}"', regex=False).any())


def _eps_text(eps: str) -> str:
    try:
        value = float(eps)
    except ValueError:
        return eps
    k = value * 255
    if 0 < value < 1 and round(k) >= 1 and abs(k - round(k)) < 0.02:
        return f"{round(k)}/255"
    return f"{value:g}"


def attack_label(condition: str) -> str:
    """A short readable name: 'pgd-linf/eps=0.0314/steps=10' -> 'PGD-10 L∞ 8/255',
    'autoattack-custom[apgd-ce]-linf/eps=0.1' -> 'APGD-CE L∞ 0.1'; unknown names stay as they are."""
    group, *rest = condition.split("/")
    kv = dict(p.split("=", 1) for p in rest if "=" in p)
    eps = _eps_text(kv.get("eps", ""))
    m = re.fullmatch(r"pgd-(linf|l2|l1)", group)
    if m:
        steps = kv.get("steps", "")
        return f"PGD{'-' + steps if steps else ''} {NORMS[m.group(1)]} {eps}".strip()
    m = re.fullmatch(r"autoattack-(standard|plus|rand|custom\[([^\]]*)\])-(linf|l2|l1)", group)
    if m:
        if m.group(2) is not None:
            name = "+".join(AA_ATTACKS.get(a, a.upper()) for a in m.group(2).split("+"))
        else:
            name = AA_VERSIONS[m.group(1)]
        return f"{name} {NORMS[m.group(3)]} {eps}".strip()
    return condition


def attack_labels(conditions: Sequence[str]) -> dict[str, str]:
    """Short names for the conditions, unique: colliding short names fall back to the full condition."""
    short = {c: attack_label(c) for c in conditions}
    counts = pd.Series(list(short.values())).value_counts()
    return {c: (s if counts[s] == 1 else c) for c, s in short.items()}


def attack_legend(rows: pd.DataFrame, labels: dict[str, str]) -> list[tuple[str, str]]:
    """(short name, full setting) per attack condition, from the rows' settings."""
    out = []
    for cond, label in labels.items():
        part = rows[rows["condition"] == cond]
        settings = _settings(part["settings"].iloc[0]) if not part.empty else {}
        bits = [cond]
        if settings.get("name") == "pgd":
            bits.append(f"{settings.get('steps')} steps of {_num(settings.get('step_size'))}, "
                        f"{settings.get('restarts', 1)} restart{'s' if settings.get('restarts', 1) != 1 else ''}, "
                        f"{'random' if settings.get('random_start', True) else 'no random'} start")
        elif settings.get("name") == "autoattack":
            attacks = settings.get("attacks_run") or settings.get("attacks")
            bits.append(f"AutoAttack {settings.get('version', '')}" + (f" ({', '.join(attacks)})" if attacks else ""))
        sizes = sorted({int(n) for n in part["n"].dropna()})
        if sizes:
            bits.append(f"{'/'.join(str(s) for s in sizes)} test images")
        out.append((label, "; ".join(b for b in bits if b)))
    return out


def _settings(text: str) -> dict:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _num(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


# ---------------------------------------------------------------------------------------------------------
# the headline

HEADLINE_CHANGES = ("clean", "blur mean", "corruptions mean", "held-out corruptions mean",
                    "seen corruptions mean")  # columns with a Δ against the reference


def heldout_corruptions(rows: pd.DataFrame) -> list[str]:
    """The corruption types the corruptions suite was told the maintenance never saw (its `heldout`)."""
    names: set[str] = set()
    for text in rows["settings"].dropna().unique():
        names.update(str(c) for c in (_settings(text).get("heldout") or []))
    return sorted(names)


def headline(df: pd.DataFrame, entries: pd.DataFrame, samples: Samples, heldout: Sequence[str] = ()) -> Table | None:
    """One row per entry: clean and robust accuracies, their changes from the model under maintenance, attacks
    (worst case over strategies for switched models), cost. `heldout`: corruption types the maintenance never
    saw (the corruptions suite's setting), reported apart from the others."""
    parts: list[pd.DataFrame] = []
    columns: list[Column] = []
    notes = []
    has_reference = bool(entries["reference"].any())

    def add(name: str, frame: pd.DataFrame, column: Column) -> None:
        if frame.empty:
            return
        parts.append(_long(frame, name))
        columns.append(column)
        if name in HEADLINE_CHANGES and has_reference:
            delta = change(frame, entries)
            if not delta.empty:
                parts.append(_long(delta, f"Δ {name}"))
                columns.append(Column(f"Δ {name}", signed=True, kind=DELTA, delta_of=name, show_n=False,
                                      csv=f"delta {name}"))

    add("clean", runs(_values(df, "clean", "clean")), Column("clean", HIGHER))
    add("blur mean", stored_or_mean(df, "blur", "mean", _values(df, "blur", aggregates=False)),
        Column("blur mean", HIGHER))
    plain_corr = _values(df, "corruptions", aggregates=False)
    add("corruptions mean", stored_or_mean(df, "corruptions", "mean", plain_corr), Column("corruptions mean", HIGHER))
    if "corruptions mean" in {c.name for c in columns}:
        notes.append("corruptions mean: over all corruptions and severities.")
    held = sorted(set(heldout) | set(heldout_corruptions(plain_corr)))
    if held:
        is_held = plain_corr["group"].isin(held)
        add("held-out corruptions mean", stored_or_mean(df, "corruptions", "held-out/mean", plain_corr[is_held]),
            Column("held-out corruptions mean", HIGHER))
        add("seen corruptions mean", stored_or_mean(df, "corruptions", "seen/mean", plain_corr[~is_held]),
            Column("seen corruptions mean", HIGHER))
        notes.append(f"held-out corruptions mean: over the corruption types the maintenance never saw "
                     f"({', '.join(held)}); seen corruptions mean: over the others.")

    attacks = attack_rows(df)
    conditions = condition_order(attacks)
    legend: list[tuple[str, str]] = []
    if 0 < len(conditions) <= MAX_ATTACK_COLUMNS:
        labels = attack_labels(conditions)
        for cond in conditions:
            add(cond, runs(attacks[attacks["condition"] == cond]), Column(cond, HIGHER, title=labels[cond], csv=cond))
        legend = attack_legend(attacks, labels)
        notes.append("Attack columns: robust accuracy under each attack (short names; the full settings are listed "
                     "under the table).")
    elif conditions:
        per = runs(attacks)
        equal = attacks.groupby(["entry", "seed"])["n"].nunique().le(1).reindex(
            pd.MultiIndex.from_frame(per[["entry", "seed"]])).fillna(False).to_numpy()
        per["parts"] = [p if ok else None for p, ok in zip(per["parts"], equal, strict=True)]
        add("attacks mean", per, Column("attacks mean", HIGHER))
        notes.append(f"attacks mean: robust accuracy averaged over the {len(conditions)} attack conditions "
                     f"(more than {MAX_ATTACK_COLUMNS}; see the attacks table for each).")
    if conditions and has_switch_strategies(df):
        notes.append("For switched models (a corrector with +switch, DeepPatch) an attack's number is the worst case "
                     "over the attack strategies (the plain attack, each path alone, the relaxed switch, Square): an "
                     "image counts as robust only if no strategy fools the switched model; each strategy is in the "
                     "attacks section.")
    if conditions and not _values(df, "attacks").query("group == 'clean'").empty:
        notes.append("The clean accuracy of each attack's subset is next to its attacks in the attacks section.")

    add("repair time (s)", _costs(df, "repair_time_s"),
        Column("repair time (s)", LOWER, decimals=1, kind=COST, show_n=False, csv="repair time s"))
    add("added params", _costs(df, "added_params"),
        Column("added params", LOWER, integer=True, kind=COST, show_n=False, csv="added params"))
    if not parts:
        return None
    table = assemble("headline", "Headline", "", pd.concat(parts, ignore_index=True), entries, columns, samples,
                     with_block=True, block_rows=True, changes=True, legend=legend)
    if table is None:
        return None
    return replace(table, note=headline_note(table, notes, samples))


def headline_note(table: Table, notes: list[str], samples: Samples) -> str:
    deltas = [c for c in table.columns if c.kind == DELTA]
    family = int(table.tested.to_numpy().sum())
    change_note = ""
    if deltas:
        names = ", ".join(c.name for c in deltas)
        change_note = (f"{names}: change in percentage points from the model under maintenance (none) of the same "
                       "dataset and model, on the same test images, paired by seed (against its mean where it lacks "
                       "the seed). Its interval and p come from a paired test: McNemar's test for one seed, the paired "
                       "bootstrap over seeds and images for several.")
        if family:
            change_note += (f" p is Holm-adjusted over this table's {family} changes (the family: {names} of every "
                            "corrector against none); n.s. = not significant at 0.05.")
        if family < int(table.n[[c.name for c in deltas]].gt(0).to_numpy().sum()):
            change_note += (" n/a: no per-sample data for that change (e.g. results written before they were "
                            "stored), so no test; its interval, where shown, is the t interval of the per-seed "
                            "changes.")
    return _join("Accuracy in %; n in a header is the number of test images per condition.", interval_note([table]),
                 change_note, *notes, seeds_note(table), _bold_note(table, samples))


def _bold_note(table: Table, samples: Samples) -> str:
    if not samples.any:
        return ("Nothing is bold: these results have no per-sample data, so no lead over the runner-up can be "
                "tested.")
    return ("Bold: the best of a column within a dataset and model, and significantly so against the runner-up "
            "(paired test on the same test images: McNemar for one seed, paired bootstrap over seeds and images for "
            "several; Holm-corrected over the table's best-vs-runner-up tests at 0.05). A lead inside the noise, a "
            "tie, or a column without per-sample data is not bold; the model under maintenance (none) is the "
            "reference and never marked.")


# ---------------------------------------------------------------------------------------------------------
# per-condition tables


def condition_section(df: pd.DataFrame, entries: pd.DataFrame, samples: Samples, suite: str, title: str, note: str,
                      with_clean: bool = False) -> Section | None:
    """Suites shown as one column per condition (blur, spatial, ...); one table per dataset/model.

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
                parts.append(_long(runs(clean), "clean"))
                columns.append(_metric_column("clean", clean["value"]))
        metrics = sorted(set(rows["metric"]), key=lambda m: (m != "accuracy", m))
        for metric in metrics:
            mrows = rows[rows["metric"] == metric]
            plain = mrows[mrows["group"] != AGGREGATE]
            for cond in condition_order(mrows):
                name = cond if metric == "accuracy" else f"{cond} [{metric}]"
                crow = mrows[mrows["condition"] == cond]
                if cond == "mean" and not plain.empty:  # a missing stored mean: the mean of the conditions
                    values = stored_or_mean(sub, suite, "mean", plain[plain["metric"] == metric])
                elif (crow["group"] == AGGREGATE).all():
                    values = runs(crow).assign(images=np.nan, parts=None)  # e.g. a union: not re-derivable here
                else:
                    values = runs(crow)
                parts.append(_long(values, name))
                columns.append(_metric_column(name, crow["value"], metric))
        table = assemble(f"{suite}-{dataset}-{model}", f"{dataset} / {model}", note,
                         pd.concat(parts, ignore_index=True), entries, columns, samples)
        if table is not None:
            tables.append(table)
    return _section(suite, title, note, tables, samples)


def _section(key: str, title: str, note: str, tables: list[Table], samples: Samples) -> Section | None:
    if not tables:
        return None
    seeds = " ".join(dict.fromkeys(s for s in (seeds_note(t) for t in tables) if s))
    caption = _join(note, "n in a header: test images per condition.", interval_note(tables), seeds,
                    _section_bold_note(tables, samples))
    return Section(key, title, tuple(replace(t, note=caption) for t in tables), caption)


def _section_bold_note(tables: Sequence[Table], samples: Samples) -> str:
    if not any(c.better for t in tables for c in t.columns):
        return ""
    if not samples.any:
        return "Nothing is bold: no per-sample data to test a lead."
    return ("Bold: best of its column (among the correctors, not none), significantly ahead of the runner-up on "
            "the same images (Holm over the table's tests, 0.05); leads inside the noise are not bold.")


def corruption_section(df: pd.DataFrame, entries: pd.DataFrame, samples: Samples) -> Section | None:
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
                parts.append(_long(runs(rows[rows["severity"] == s]), sev_name[s], row=g))
            parts.append(_long(stored_or_mean(sub, "corruptions", f"{g}/mean", rows), "mean", row=g))
        for s in severities:
            parts.append(_long(stored_or_mean(sub, "corruptions", f"severity={s:g}/mean",
                                              plain[plain["severity"] == s]), sev_name[s], row=all_name))
        parts.append(_long(stored_or_mean(sub, "corruptions", "mean", plain), "mean", row=all_name))
        columns = [Column(sev_name[s], HIGHER) for s in severities] + [Column("mean", HIGHER)]
        table = assemble(f"corruptions-{dataset}-{model}", f"{dataset} / {model}", "",
                         pd.concat(parts, ignore_index=True), entries, columns, samples, row_name="corruption",
                         row_order=[*groups, all_name], block_by_row=True)
        if table is not None:
            tables.append(table)
    note = (f"Accuracy in % per corruption (rows) and severity (columns); mean: over severities; {all_name}: mean "
            "over corruptions. Best marks compare the correctors within each corruption.")
    return _section("corruptions", "Common corruptions", note, tables, samples)


def attack_section(df: pd.DataFrame, entries: pd.DataFrame, samples: Samples) -> Section | None:
    """Robust accuracy per attack, each attack next to the clean accuracy of the subset it used; then, for
    switched models, every attack strategy."""
    tables = []
    for dataset, model in blocks(df):
        sub = df[(df["dataset"] == dataset) & (df["model"] == model)]
        attacks = attack_rows(sub)
        if attacks.empty:
            continue
        conditions = condition_order(attacks)
        labels = attack_labels(conditions)
        clean = _values(sub, "attacks").query("group == 'clean'")
        sizes = {c: int(attacks.loc[attacks["condition"] == c, "n"].fillna(0).max()) for c in conditions}
        parts, columns = [], []
        for size in sorted(set(sizes.values())):
            subset = clean[clean["n"] == size]
            if not subset.empty:
                name = f"clean@{size}"
                parts.append(_long(runs(subset), name))
                columns.append(Column(name, HIGHER, title="subset clean", csv=f"subset clean n={size}"))
            for cond in (c for c in conditions if sizes[c] == size):
                parts.append(_long(runs(attacks[attacks["condition"] == cond]), cond))
                columns.append(Column(cond, HIGHER, title=labels[cond], csv=cond))
        legend = attack_legend(attacks, labels)
        note = ("Robust accuracy in % under each attack, each next to the clean accuracy of the test subset the "
                "attack used (subset clean).")
        if has_switch_strategies(sub):
            note += " Switched models: the worst case over the attack strategies (the next table lists each)."
        table = assemble(f"attacks-{dataset}-{model}", f"{dataset} / {model}", note,
                         pd.concat(parts, ignore_index=True), entries, columns, samples, legend=legend)
        if table is not None:
            tables.append(table)
        strat = attack_rows(sub, strategies=True)
        if not strat.empty:
            order = list(dict.fromkeys(strat.sort_values("strategy", kind="mergesort")["strategy"]))
            known = ["plain", "path-original", "path-repaired", "relaxed", "square"]
            order = [s for s in known if s in order] + [s for s in order if s not in known]
            sparts, scolumns = [], []
            for cond in conditions:
                crow = strat[strat["condition"] == cond]
                for s in order:
                    srow = crow[crow["strategy"] == s]
                    if not srow.empty:
                        sparts.append(_long(runs(srow), cond, row=s))
                scolumns.append(Column(cond, "", title=labels[cond], csv=cond))
            if sparts:
                stable = assemble(f"attack-strategies-{dataset}-{model}", f"{dataset} / {model}: attack strategies "
                                  "against switched models", "", pd.concat(sparts, ignore_index=True), entries,
                                  scolumns, samples, row_name="strategy", row_order=order)
                if stable is not None:
                    tables.append(replace(stable, note=STRATEGY_NOTE))
    note = ("Robust accuracy in % under each attack, next to the clean accuracy of the subset the attack used "
            "(subset clean). Short attack names; the full settings are listed under each table.")
    return _section("attacks", "Adversarial attacks", note, tables, samples)


STRATEGY_NOTE = ("Attack strategies against a switched model (its headline number is their worst case): plain = the "
                 "attack on the switched model; path-original / path-repaired = computed on one path alone; relaxed "
                 "= through a smooth relaxation of the switch; square = the gradient-free Square attack. Every "
                 "adversarial image is scored on the real switched model.")


def diagnostics_section(df: pd.DataFrame, entries: pd.DataFrame, samples: Samples, suite: str = "diagnostics",
                        title: str = "Corrector diagnostics") -> Section | None:
    """Corrector-specific diagnostics: one row per (condition, entry), one column per metric."""
    tables = []
    for dataset, model in blocks(df):
        sub = df[(df["dataset"] == dataset) & (df["model"] == model)]
        rows = sub[(sub["suite"] == suite) & sub["value"].notna()]
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
            for row, part in mrows.groupby("row", sort=True):
                parts.append(_long(runs(part), metric, row=row))
            columns.append(_metric_column(metric, mrows["value"], metric, show_n=False))
        table = assemble(f"{suite}-{dataset}-{model}", f"{dataset} / {model}", "",
                         pd.concat(parts, ignore_index=True), entries, columns, samples, row_name="condition",
                         row_order=order, block_by_row=True)
        if table is not None:
            tables.append(table)
    note = ("Diagnostics the correctors report about themselves (e.g. a switch: routing and AUROC per gate, the "
            "switched model next to each of its paths, routing modes, the switch off). Rows starting with val/ are "
            "measured on validation data, the data the gate was fitted on: a training fit, not a test.")
    if suite != "diagnostics":
        note = ("Per condition of a perturbation family: the switched model next to each path alone and the share "
                "of inputs routed to the repair (models without a switch: their accuracy).")
    return _section(suite, title, note, tables, samples)


def _condition_names(rows: pd.DataFrame) -> dict[tuple[str, str], str]:
    """A condition's own name, or "<group>: <condition>" where the name occurs under several groups."""
    pairs = rows[["group", "condition"]].drop_duplicates()
    counts = pairs["condition"].value_counts()
    return {(g, c): (f"{g}: {c}" if counts[c] > 1 and g else c) for g, c in pairs.to_numpy()}


BLUR_NOTE = ("Accuracy in % on the clean test set and at each blur sigma; mean: over the sigmas; union: clean and "
             "all sigmas together.")
KNOWN_SUITES = frozenset({"clean", "blur", "corruptions", "attacks", "spatial", "diagnostics", "routing"})


def sections(df: pd.DataFrame, entries: pd.DataFrame, samples: Samples) -> list[Section]:
    """All per-condition sections that have rows, in a fixed order; unknown suites get a generic one."""
    out = [
        condition_section(df, entries, samples, "blur", "Gaussian blur", BLUR_NOTE, with_clean=True),
        corruption_section(df, entries, samples),
        attack_section(df, entries, samples),
        condition_section(df, entries, samples, "spatial", "Spatial transformations",
                          "Accuracy in % on spatially transformed neighbours."),
    ]
    for suite in sorted(set(df["suite"]) - KNOWN_SUITES):
        out.append(condition_section(df, entries, samples, suite, f"Suite {suite}",
                                     f"Values of suite {suite} per condition."))
    out.append(diagnostics_section(df, entries, samples, "routing", "Routing per perturbation"))
    out.append(diagnostics_section(df, entries, samples))
    return [s for s in out if s is not None]
