"""One compact table per corrector with a switch: gate x routing -> clean, perturbed mean, AUROC, share routed.

Read from the corrector's diagnostics rows (suite "diagnostics"):

- any switched model (`deeppatch.technique.gating.path_rows`): `<split>/paths/<condition>/switched|original|
  repaired` (accuracy), `.../routed to the repair` (percent), `.../auroc`;
- DeepPatch's variants (`deeppatch.technique.diagnostics.switch_rows`): `test/<routing>/<gate>/clean` and
  `.../<family>_mean`, `test/switch=off (always patched)/...`;
- DeepPatch's gates (`validation_diagnostics`): `<split>/<gate>/clean routed original`, `.../<condition>
  routed patched`, `.../<condition> auroc`.

Rows measured on validation data (`val/...`), the data the gate was fitted on, are labelled as a training fit.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd

from deeppatch.reporting.cells import SCORE, SHARE, Column, Table
from deeppatch.reporting.samples import Samples
from deeppatch.reporting.tables import Section, _long, assemble, interval_note, runs

PATH_ROW = re.compile(r"^(val|test)/paths/(.+)/(switched|original|repaired|routed to the repair|auroc)$")
VARIANT_ROW = re.compile(r"^test/(?:(per-sample|batch-majority)/([^/]+)|switch=off \(always patched\))/(.+)$")
GATE_ROW = re.compile(r"^(val|test)/([^/]+)/(?:(clean) routed original|([^:]+) routed patched|([^:]+) auroc)$")
GATE_NAMES = {"reference": "paper indicator", "learned": "learned"}
SPLITS = {"test": "test", "val": "val: training fit"}
SEP = "\x1f"
COLUMNS = ("clean", "perturbed mean", "auroc", "routed clean", "routed perturbed")


def switch_section(df: pd.DataFrame, entries: pd.DataFrame, samples: Samples) -> Section | None:
    rows = df[(df["suite"] == "diagnostics") & df["value"].notna()]
    tables = []
    for entry in sorted(set(rows["entry"])):
        table = switch_table(rows[rows["entry"] == entry], entries, samples)
        if table is not None:
            tables.append(table)
    if not tables:
        return None
    note = ("Per corrector with a switch: each gate and routing with its clean accuracy, the mean over the "
            "maintenance family's conditions, the gate's AUROC (clean vs each condition, mean over conditions) and "
            "the share of inputs routed to the repair (on clean and perturbed inputs). \"as run\" is the "
            "configuration the headline reports; \"original only\" / \"repaired only\" are its two paths alone. "
            "Rows marked \"val: training fit\" are measured on the validation data the gate was fitted on: they "
            "show the fit, not generalisation.")
    note = " ".join(p for p in (note, interval_note(tables)) if p)
    return Section("switches", "Switches", tuple(replace(t, note=note) for t in tables), note)


def _gate_as_run(label: str) -> str:
    m = re.search(r"\+switch\[([^\]]*)\]", label)
    if not m:
        return "as run"
    text = m.group(1)
    return text if text.startswith(("learned", "paper")) else f"learned {text}"


def _family(rows: pd.DataFrame) -> str:
    for text in rows["settings"]:
        try:
            value = json.loads(text) if text else {}
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and isinstance(value.get("family"), str):
            return value["family"]
    for cond in rows["condition"]:
        m = VARIANT_ROW.match(cond)
        if m and m.group(3).endswith("_mean"):
            return m.group(3)[: -len("_mean")]
    return "perturbed"


def switch_table(rows: pd.DataFrame, entries: pd.DataFrame, samples: Samples) -> Table | None:
    entry = int(rows["entry"].iloc[0])
    label = str(entries.loc[entry, "label"])
    family = _family(rows)
    as_run = _gate_as_run(label)
    found: list[tuple[str, str, pd.DataFrame]] = []  # (row key, column, per-seed values)
    order: list[str] = []

    def key(split: str, gate: str, routing: str) -> str:
        k = SEP.join((SPLITS[split], gate, routing))
        if k not in order:
            order.append(k)
        return k

    paths = rows.assign(m=rows["condition"].map(PATH_ROW.match))
    paths = paths[paths["m"].notna()]
    if not paths.empty:
        paths = paths.assign(split=paths["m"].map(lambda m: m.group(1)), cond=paths["m"].map(lambda m: m.group(2)),
                             what=paths["m"].map(lambda m: m.group(3)))
        for split in ("test", "val"):
            part = paths[paths["split"] == split]
            for what, gate, routing in (("switched", as_run, "switch"), ("original", "–", "original only"),
                                        ("repaired", "–", "repaired only")):
                sel = part[part["what"] == what]
                if sel.empty:
                    continue
                k = key(split, gate, routing)
                found.append((k, "clean", runs(sel[sel["cond"] == "clean"])))
                found.append((k, "perturbed mean", runs(sel[sel["cond"] != "clean"])))
                if what == "switched":
                    routed = part[part["what"] == "routed to the repair"]
                    found.append((k, "routed clean", runs(routed[routed["cond"] == "clean"])))
                    found.append((k, "routed perturbed", runs(routed[routed["cond"] != "clean"])))
                    found.append((k, "auroc", _no_parts(runs(part[part["what"] == "auroc"]))))

    variants = rows[rows["group"] == "variant"]
    for cond, part in variants.groupby("condition", sort=False):
        m = VARIANT_ROW.match(cond)
        if not m:
            continue
        routing, gate, what = m.group(1), m.group(2), m.group(3)
        k = key("test", GATE_NAMES.get(gate, gate), routing) if routing else key("test", "off", "always repaired")
        if what == "clean":
            found.append((k, "clean", runs(part)))
        elif what.endswith("_mean"):
            found.append((k, "perturbed mean", runs(part)))

    gates = rows[rows["group"].isin(["routing", "auroc"])]
    for split in ("test", "val"):
        for gate in sorted({m.group(2) for m in gates["condition"].map(GATE_ROW.match) if m and m.group(1) == split}):
            prefix = f"{split}/{gate}/"
            part = gates[gates["condition"].str.startswith(prefix)]
            matches = part["condition"].map(GATE_ROW.match)
            clean = part[[bool(m and m.group(3)) for m in matches]]
            routed = part[[bool(m and m.group(4)) for m in matches]]
            auroc = part[[bool(m and m.group(5)) for m in matches]]
            if clean.empty and routed.empty and auroc.empty:
                continue
            k = key(split, GATE_NAMES.get(gate, gate), "per-sample")
            if not clean.empty:
                flipped = runs(clean)
                found.append((k, "routed clean", flipped.assign(value=100.0 - flipped["value"], parts=None)))
            found.append((k, "routed perturbed", runs(routed)))
            found.append((k, "auroc", _no_parts(runs(auroc))))

    parts = [_long(frame, column, row=k) for k, column, frame in found if not frame.empty]
    if not parts:
        return None
    rank = {k: (k.split(SEP)[0] != SPLITS["test"], _routing_rank(k.split(SEP)[2]), i) for i, k in enumerate(order)}
    row_order = sorted(order, key=rank.__getitem__)
    columns = [Column("clean", title="clean", kind=SHARE), Column("perturbed mean", title=f"{family} mean", kind=SHARE),
               Column("auroc", title="AUROC", decimals=3, kind=SCORE, show_n=False),
               Column("routed clean", title="routed (clean)", kind=SHARE, show_n=False),
               Column("routed perturbed", title=f"routed ({family})", kind=SHARE, show_n=False)]
    table = assemble(f"switch-{entry}", f"{entries.loc[entry, 'dataset']} / {entries.loc[entry, 'model']} / {label}",
                     "", pd.concat(parts, ignore_index=True), entries, columns, samples, row_name="config",
                     row_order=row_order)
    if table is None:
        return None
    split = table.labels["config"].str.split(SEP)
    labels = pd.DataFrame({"data": split.str[0], "gate": split.str[1], "routing": split.str[2],
                           "seeds": table.labels["seeds"]}, index=table.labels.index)
    return replace(table, labels=labels)


def _routing_rank(routing: str) -> int:
    return {"switch": 0, "per-sample": 1, "batch-majority": 2, "always repaired": 3, "original only": 4,
            "repaired only": 5}.get(routing, 6)


def _no_parts(frame: pd.DataFrame) -> pd.DataFrame:
    """Values that are no share of test images (AUROC): no Wilson interval, no per-sample test."""
    return frame.assign(images=np.nan, parts=None)
