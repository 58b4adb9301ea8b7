"""Result rows made ready for reporting: typed columns, one label per compared entry, a fixed order.

An *entry* is what a report compares: one (dataset, model, corrector, params_hash). Its seeds are
repetitions of the same entry. The corrector "none" is the model under maintenance, the reference.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from deeppatch.errors import DeepPatchError
from deeppatch.results import COLUMNS

REFERENCE = "none"
AGGREGATE = "aggregate"  # the group of aggregate rows ("mean", "union", "<name>/mean", ...)
ENTRY_KEYS = ("dataset", "model", "corrector", "params_hash")
TEXT_COLUMNS = ("benchmark", "dataset", "model", "corrector", "params", "params_hash", "suite", "condition", "group",
                "metric", "source", "settings", "device", "versions", "created", "code_hash", "kept")
NUMERIC_COLUMNS = ("severity", "value", "n", "eval_time_s", "repair_time_s", "trainable_params", "added_params",
                   "epochs")
# the order rows are sorted in for every output (stable sort; file order breaks the remaining ties)
ROW_ORDER = ("dataset", "model", "corrector", "params_hash", "seed", "suite", "group", "severity", "condition",
             "metric")


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed copy of the rows with `entry` (an int, in report order), `label` and `reference` columns."""
    if frame.empty:
        raise DeepPatchError("no result rows to report")
    df = frame.reindex(columns=list(COLUMNS)).copy()
    for col in TEXT_COLUMNS:
        df[col] = df[col].map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    for col in NUMERIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    seeds = pd.to_numeric(df["seed"], errors="coerce")
    if seeds.isna().any():
        raise DeepPatchError("result rows without a seed cannot be reported")
    df["seed"] = seeds.astype(int)
    df["metric"] = df["metric"].replace("", "accuracy")
    df = df.sort_values(list(ROW_ORDER), kind="mergesort", na_position="first").reset_index(drop=True)

    labels = entry_labels(df)
    # the model under maintenance: the corrector "none", whatever label it was given (e.g. "original")
    unrepaired = set(df.loc[df["params"].map(_params_name) == REFERENCE, "params_hash"])
    entries = (df[list(ENTRY_KEYS)].drop_duplicates()
               .assign(reference=lambda e: (e["corrector"] == REFERENCE) | e["params_hash"].isin(unrepaired))
               .assign(label=lambda e: [labels[tuple(k)] for k in e[["corrector", "params_hash"]].to_numpy()]))
    entries = entries.sort_values(["dataset", "model", "reference", "corrector", "label", "params_hash"],
                                  ascending=[True, True, False, True, True, True], kind="mergesort")
    entries = entries.reset_index(drop=True).rename_axis("entry").reset_index()
    df = df.merge(entries, on=list(ENTRY_KEYS), how="left", validate="many_to_one")
    return df


def _params_name(text: str) -> str:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return ""
    return str(value.get("name", "")) if isinstance(value, dict) else ""


def entry_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per entry (indexed by `entry`): dataset, model, corrector, label, reference, seeds."""
    seeds = df.groupby("entry")["seed"].nunique().rename("seeds")
    first = df.drop_duplicates("entry").set_index("entry")[["dataset", "model", "corrector", "params_hash", "label",
                                                             "reference"]]
    return first.join(seeds).sort_index()


def entry_labels(df: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Label per (corrector, params_hash): the corrector's name, plus the differing params when it has several."""
    labels = {}
    for corrector, part in df.groupby("corrector", sort=True):
        variants = part.drop_duplicates("params_hash")[["params_hash", "params"]]
        if len(variants) == 1:
            labels[(corrector, variants["params_hash"].iloc[0])] = corrector
            continue
        params = {h: _parse_params(p) for h, p in variants.to_numpy()}
        keys = sorted({k for d in params.values() for k in d})
        differing = [k for k in keys if len({_show(d.get(k, "-")) for d in params.values()}) > 1]
        for h, d in params.items():
            shown = ", ".join(f"{k}={_show(d.get(k, '-'))}" for k in differing) or f"params {h[:8]}"
            labels[(corrector, h)] = f"{corrector} ({shown})"
    return labels


def _parse_params(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The raw rows (all of `COLUMNS`) in the report's fixed order, for the CSV export."""
    df = frame.reindex(columns=list(COLUMNS))
    key = df[list(ROW_ORDER)].copy()
    for col in ROW_ORDER:
        if col in ("seed", "severity"):
            key[col] = pd.to_numeric(key[col], errors="coerce")
        else:
            key[col] = key[col].map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    order = key.sort_values(list(ROW_ORDER), kind="mergesort", na_position="first").index
    return df.loc[order].reset_index(drop=True)
