"""What was run, for the top of every report: spec, commit, versions, device, seeds, sample counts, data source.

Everything comes from the rows and manifest.json, never from the machine that renders the report, so the
same results give the same header anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd

from deeppatch.reporting.frame import AGGREGATE
from deeppatch.reporting.samples import Samples

CANONICAL_SOURCES = MappingProxyType({"cifar10-c": "CIFAR-10-C", "cifar100-c": "CIFAR-100-C"})
SUITE_ORDER = ("clean", "blur", "corruptions", "attacks", "spatial", "diagnostics")


def benchmark_name(manifest: dict[str, Any], frame: pd.DataFrame | None, results_dir: Path) -> str:
    """The benchmark's name: the manifest's, else the rows' (when they agree), else the folder's."""
    for key in ("benchmark", "name"):
        value = manifest.get(key)
        if isinstance(value, str) and value:
            return value
    spec = manifest.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("name"), str) and spec["name"]:
        return spec["name"]
    if frame is not None and "benchmark" in frame:
        names = sorted({str(v) for v in frame["benchmark"].dropna() if str(v)})
        if len(names) == 1:
            return names[0]
    return Path(results_dir).resolve().name


def header_items(df: pd.DataFrame, manifest: dict[str, Any], name: str, failures: list[str],
                 samples: Samples | None = None) -> list[tuple[str, str]]:
    """(field, text) pairs describing the run, in a fixed order."""
    versions = _versions(df, manifest)
    items = [("benchmark", name)]
    spec = _spec(manifest)
    if spec:
        items.append(("spec", spec))
    commits = _unique([manifest.get("git_commit"), *versions.pop("git_commit", [])]) or ["unknown"]
    items.append(("git commit", ", ".join(commits)))
    items.append(("versions", "; ".join(f"{k} {', '.join(v)}" for k, v in sorted(versions.items())) or "unknown"))
    devices = _unique([*df["device"], manifest.get("device")])
    items.append(("device", "; ".join(devices) or "unknown"))
    seeds = sorted(set(df["seed"]))
    items.append(("seeds", f"{', '.join(str(s) for s in seeds)} ({len(seeds)})"))
    items.append(("evaluation seed", _eval_seed(manifest)))
    if samples is not None:
        items.append(("per-sample data", _samples_text(samples)))
    for key in ("dataset", "model"):
        items.append((f"{key}s", ", ".join(sorted(set(df[key])))))
    correctors = df.sort_values("entry", kind="mergesort").drop_duplicates("entry")["label"]
    items.append(("correctors", ", ".join(dict.fromkeys(correctors))))
    items.append(("test samples", _sample_sizes(df)))
    code = _code_identity(df, manifest)
    if code:
        items.append(("code", code))
    shared = _shared_work(df)
    if shared:
        items.append(("shared work", shared))
    corruption_source = _corruption_source(df)
    if corruption_source:
        items.append(("corruptions", corruption_source))
    created = sorted(v for v in df["created"] if v)
    if created:
        items.append(("rows created", created[0] if created[0] == created[-1] else f"{created[0]} to {created[-1]}"))
    cells = df.groupby(["entry", "seed"]).ngroups
    items.append(("rows", f"{len(df)} rows from {cells} cells"))
    if failures:
        items.append(("failed cells", f"{len(failures)} (see failures/ in the results folder): {', '.join(failures)}"))
    return items


def _eval_seed(manifest: dict[str, Any]) -> str:
    seed = manifest.get("eval_seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return f"{seed} (the same test images and perturbation draws for every corrector and repair seed)"
    return "not recorded (older results)"


def _samples_text(samples: Samples) -> str:
    if samples.problem:
        return f"not used: {samples.problem} (intervals only; significance n/a)"
    if not samples.cells:
        return "none (results written before per-sample correctness was stored: intervals only, significance n/a)"
    return (f"{samples.cells} of {samples.total} cells (per-image correctness: paired tests on the same test "
            "images)")


def _code_identity(df: pd.DataFrame, manifest: dict[str, Any]) -> str:
    """Each corrector's code hash (its source and the package modules it imports) and the harness's."""
    first = df.sort_values("entry", kind="mergesort").drop_duplicates("entry")
    parts = [f"{label} {code}" for label, code in zip(first["label"], first["code_hash"], strict=True) if code]
    harness = (manifest.get("code") or {}).get("harness") if isinstance(manifest.get("code"), dict) else None
    if harness:
        parts.append(f"harness {harness}")
    return "; ".join(dict.fromkeys(parts))


def _shared_work(df: pd.DataFrame) -> str:
    """Work computed once and reused by several cells (a blame ranking), reported once with its cost."""
    rows = df[(df["suite"] == "diagnostics") & df["condition"].str.startswith("shared work/")]
    if rows.empty:
        return ""
    parts = []
    for (condition, _key), part in rows.groupby(["condition", "settings"], sort=True):
        cells = part.groupby(["entry", "seed"]).ngroups
        parts.append(f"{condition.removeprefix('shared work/')} {part['value'].iloc[0]:.1f} s "
                     f"(computed once, used by {cells} cell{'s' if cells != 1 else ''}; not in their repair times)")
    return "; ".join(parts)


def _spec(manifest: dict[str, Any]) -> str:
    parts = []
    spec = manifest.get("spec")
    if isinstance(spec, str):
        parts.append(spec)
    elif isinstance(spec, dict):
        parts += [str(spec[k]) for k in ("name", "file", "path") if spec.get(k)]
    for key in ("spec_name", "spec_file", "spec_path"):
        if isinstance(manifest.get(key), str) and manifest[key] not in parts:
            parts.append(manifest[key])
    return " — ".join(parts)


def _versions(df: pd.DataFrame, manifest: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, set[str]] = {}
    texts = [v for v in set(df["versions"]) if v]
    dicts = [manifest["versions"]] if isinstance(manifest.get("versions"), dict) else []
    for text in texts:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            dicts.append(value)
    for d in dicts:
        for key, value in d.items():
            if value is not None and value != "":
                found.setdefault(str(key), set()).add(str(value))
    return {k: sorted(v) for k, v in found.items()}


def _unique(values: list[Any]) -> list[str]:
    return sorted({str(v) for v in values if v is not None and str(v) != ""})


def _sample_sizes(df: pd.DataFrame) -> str:
    """Test images per condition, per suite (aggregate rows excluded: they count conditions x images)."""
    plain = df[(df["group"] != AGGREGATE) & df["n"].notna()]
    suites = sorted(set(plain["suite"]), key=lambda s: (SUITE_ORDER.index(s) if s in SUITE_ORDER else 99, s))
    parts = []
    for suite in suites:
        ns = sorted({int(n) for n in plain.loc[plain["suite"] == suite, "n"]})
        parts.append(f"{suite} {'/'.join(str(n) for n in ns)}")
    return "; ".join(parts) + " (per condition)" if parts else "unknown"


def _corruption_source(df: pd.DataFrame) -> str:
    sources = sorted({s for s in df.loc[df["suite"] == "corruptions", "source"]})
    if not sources:
        return ""
    shown = []
    for s in sources:
        if s in CANONICAL_SOURCES:
            shown.append(f"the canonical {CANONICAL_SOURCES[s]} arrays")
        elif s == "generated":
            shown.append("generated by this project (not the canonical CIFAR-C arrays)")
        else:
            shown.append(s or "unknown source")
    return "; ".join(shown)
