"""Reports from hand-written result rows: the numbers in the tables, the plots, byte-identical regeneration,
the command line, and the HTML page in headless Chromium."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deeppatch.cli import main
from deeppatch.reporting import build_report, stats
from deeppatch.reporting.tables import attack_label
from deeppatch.results import SuiteRow, complete_row, write_cell_rows, write_cell_samples
from deeppatch.storage import stable_hash

SIGMAS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
CORRUPTIONS = ("fog", "gaussian_noise")
ATTACKS = (("pgd-linf/eps=0.0314/steps=10", "pgd-linf", 0.0314), ("pgd-l2/eps=0.5/steps=10", "pgd-l2", 0.5))
CLEAN = {  # (model, corrector label) -> clean accuracy per seed
    ("resnet20", "none"): {0: 90.0, 1: 92.0},
    ("resnet20", "dp-ps"): {0: 89.0, 1: 91.0},
    ("resnet20", "dp-bm"): {0: 89.5, 1: 91.5},
    ("resnet20", "finetune"): {0: 85.0, 1: 88.0},
    ("vgg13_bn", "none"): {0: 80.0},
    ("vgg13_bn", "finetune"): {0: 70.0, 1: 74.0},  # the reference lacks seed 1: compared with its mean
}
CORRECTORS = {"none": ("none", {}), "dp-ps": ("deeppatch", {"routing": "per-sample", "ratio": 0.25}),
              "dp-bm": ("deeppatch", {"routing": "batch-majority", "ratio": 0.25}),
              "finetune": ("finetune", {"lr": 0.01})}
COST = {"none": (0.0, 0), "dp-ps": (12.0, 1500), "dp-bm": (12.0, 1500), "finetune": (30.0, 0)}
DROP = -4.0  # blur accuracy falls by this per sigma from clean (+ a corrector bonus)
BONUS = {"none": 0.0, "dp-ps": 3.0, "dp-bm": 2.0, "finetune": 1.0}


def blur_value(clean: float, label: str, sigma: float) -> float:
    return clean + DROP * sigma + BONUS[label] * sigma


def corruption_value(clean: float, label: str, name: str, severity: int) -> float:
    return clean - (3.0 if name == "fog" else 5.0) * severity + BONUS[label]


def attack_value(label: str, seed: int, i: int) -> float:
    return 10.0 + 2 * BONUS[label] + seed + 5 * i


def cell_rows(model: str, label: str, seed: int, *, stored_blur_mean: bool = True) -> list[dict]:
    corrector, params = CORRECTORS[label]
    clean = CLEAN[(model, label)][seed]
    rows = [SuiteRow("clean", "clean", clean, 100, group="clean")]
    blur = [blur_value(clean, label, s) for s in SIGMAS]
    rows += [SuiteRow("blur", f"sigma={s:g}", v, 100, group="sigma", severity=s)
             for s, v in zip(SIGMAS, blur, strict=True)]
    if stored_blur_mean:
        rows.append(SuiteRow("blur", "mean", sum(blur) / len(blur), 600, group="aggregate"))
    rows.append(SuiteRow("blur", "union", (clean + sum(blur)) / 7, 700, group="aggregate"))
    values = {(c, k): corruption_value(clean, label, c, k) for c in CORRUPTIONS for k in range(1, 6)}
    rows += [SuiteRow("corruptions", f"{c}/{k}", v, 50, group=c, severity=k, source="generated")
             for (c, k), v in values.items()]
    for c in CORRUPTIONS:
        rows.append(SuiteRow("corruptions", f"{c}/mean", sum(values[c, k] for k in range(1, 6)) / 5, 250,
                             group="aggregate", source="generated"))
    for k in range(1, 6):
        rows.append(SuiteRow("corruptions", f"severity={k}/mean", sum(values[c, k] for c in CORRUPTIONS) / 2, 100,
                             group="aggregate", source="generated"))
    rows.append(SuiteRow("corruptions", "mean", sum(values.values()) / len(values), 500, group="aggregate",
                         source="generated"))
    for i, (cond, family, eps) in enumerate(ATTACKS):
        rows.append(SuiteRow("attacks", cond, attack_value(label, seed, i), 32, group=family, severity=eps,
                             settings={"eps": eps, "steps": 10}))
    if corrector == "deeppatch":
        mode = params["routing"]
        rows += [SuiteRow("diagnostics", f"routing={mode}/clean", 95.0 + seed, 100, metric="routing_accuracy"),
                 SuiteRow("diagnostics", f"routing={mode}/blur", 80.0 + seed, 600, metric="routing_accuracy"),
                 SuiteRow("diagnostics", "switch=off", clean - 2, 100, metric="accuracy"),
                 SuiteRow("diagnostics", "switch", 0.9 + 0.01 * seed, 700, metric="auroc")]
    time_s, added = COST[label]
    cell = {"benchmark": "unit", "dataset": "cifar10", "model": model, "corrector": corrector,
            "params": params, "params_hash": stable_hash(params), "seed": seed, "repair_time_s": time_s,
            "trainable_params": added, "added_params": added, "epochs": 2, "device": "cpu (test)",
            "versions": {"deeppatch": "0.1.0", "torch": "2.x", "git_commit": "abc123"},
            "created": f"2025-01-0{seed + 1}T00:00:00"}
    return [complete_row(r, cell) for r in rows]


def write_results(folder: Path, manifest: dict | None = None) -> Path:
    for (model, label), seeds in CLEAN.items():
        for seed in seeds:
            rows = cell_rows(model, label, seed, stored_blur_mean=(label != "finetune"))
            write_cell_rows(folder, f"{model}-{label}-{seed}", rows)
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


MANIFEST = {"benchmark": "unit", "spec": "benchmarks/unit.toml", "git_commit": "abc123"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, dict[str, Path]]:
    """One report shared by the tests that only read it (a build takes seconds on two cores)."""
    folder = tmp_path_factory.mktemp("report")
    results = write_results(folder / "results", MANIFEST)
    return results, folder / "report", build_report(results, folder / "report")


@pytest.fixture
def results(built) -> Path:
    return built[0]


# ---------------------------------------------------------------------------------------------------------
# a benchmark with per-sample data: several attacks, switched correctors, the leaderboard spec

SW_N = 400  # test images
SW_SIGMAS = (1.0, 2.0, 3.0)
SW_CORRUPTIONS = ("fog", "snow")
SW_ATTACKS = (  # condition, group, eps, subset size, settings
    ("pgd-linf/eps=0.1/steps=10", "pgd-linf", 0.1, 200,
     {"name": "pgd", "norm": "Linf", "eps": 0.1, "steps": 10, "step_size": 0.025, "restarts": 1,
      "random_start": True}),
    ("pgd-l2/eps=0.5/steps=10", "pgd-l2", 0.5, 200,
     {"name": "pgd", "norm": "L2", "eps": 0.5, "steps": 10, "step_size": 0.125, "restarts": 1, "random_start": True}),
    ("autoattack-custom[apgd-ce]-linf/eps=0.1", "autoattack-custom[apgd-ce]-linf", 0.1, 100,
     {"name": "autoattack", "version": "custom", "attacks": ["apgd-ce"], "norm": "Linf", "eps": 0.1}),
)
SW_STRATEGIES = ("plain", "path-original", "path-repaired", "relaxed", "square")
# label -> (corrector name, clean, blur per sigma, corruption per kind, attacks, added params)
SW_MODELS = {
    "none": ("none", 0.900, (0.70, 0.50, 0.30), (0.60, 0.55), (0.02, 0.05, 0.01), 0),
    "adversarial": ("adversarial", 0.700, (0.66, 0.60, 0.55), (0.62, 0.60), (0.50, 0.55, 0.45), 0),
    "finetune": ("finetune", 0.870, (0.85, 0.80, 0.75), (0.72, 0.70), (0.04, 0.06, 0.02), 0),
    "finetune+switch[auto]": ("finetune", 0.895, (0.84, 0.79, 0.74), (0.66, 0.64), (0.04, 0.06, 0.02), 4000),
    "deeppatch+switch[learned auto]": ("deeppatch", 0.900, (0.80, 0.76, 0.71), (0.65, 0.63), (0.03, 0.05, 0.02),
                                       9957),
}
SW_SWITCHED = ("finetune+switch[auto]", "deeppatch+switch[learned auto]")
SW_MANIFEST = {"benchmark": "switched", "spec": {"name": "switched", "file": "benchmarks/switched.toml"},
               "eval_seed": 7, "seeds": [0],
               "spec_content": {"name": "switched", "leaderboard": {"metric": "blur mean",
                                                                     "clean_drop_tolerance": 1.0}},
               "code": {"harness": "h4rn3ss"}}


def bits(key: str, n: int, accuracy: float) -> np.ndarray:
    """A fixed pseudo-random correctness array with exactly round(accuracy * n) correct images."""
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:12], 16))
    out = np.zeros(n, dtype=bool)
    out[rng.permutation(n)[:round(accuracy * n)]] = True
    return out


def _row(suite: str, condition: str, correct: np.ndarray | None = None, value: float | None = None, n: int = 0,
         **kw) -> SuiteRow:
    if correct is not None:
        value, n = 100.0 * float(correct.mean()), correct.size
    return SuiteRow(suite, condition, value, n, correct=correct, **kw)


def switched_rows(label: str, seed: int, n: int = SW_N) -> list[SuiteRow]:
    name, clean, blur, corr, attacks, _ = SW_MODELS[label]
    key = f"{label}/{seed}"
    clean += 0.01 * seed  # several seeds: a spread across seeds
    rows = [_row("clean", "clean", bits(f"{key}/clean", n, clean), group="clean")]
    sig = [bits(f"{key}/sigma={s:g}", n, a) for s, a in zip(SW_SIGMAS, blur, strict=True)]
    rows += [_row("blur", f"sigma={s:g}", c, group="sigma", severity=s) for s, c in zip(SW_SIGMAS, sig, strict=True)]
    rows.append(_row("blur", "mean", value=float(np.mean([c.mean() for c in sig]) * 100), n=n * len(sig),
                     group="aggregate"))
    rows.append(_row("blur", "union", value=float(np.concatenate([rows[0].correct, *sig]).mean() * 100),
                     n=n * (len(sig) + 1), group="aggregate"))
    for kind, acc in zip(SW_CORRUPTIONS, corr, strict=True):
        for sev in (1, 3):
            rows.append(_row("corruptions", f"generated/{kind}/{sev}",
                             bits(f"{key}/{kind}/{sev}", n, acc + 0.05 * (3 - sev)), group=kind, severity=sev,
                             source="generated"))
    switched = label in SW_SWITCHED
    subsets = sorted({a[3] for a in SW_ATTACKS}, reverse=True)
    for size in subsets:
        rows.append(_row("attacks", f"clean/n={size}", bits(f"{key}/clean/{size}", size, clean), group="clean",
                         severity=0.0))
    for (cond, group, eps, size, settings), acc in zip(SW_ATTACKS, attacks, strict=True):
        settings = {**settings, "n": size}
        if not switched:
            rows.append(_row("attacks", cond, bits(f"{key}/{cond}", size, acc), group=group, severity=eps,
                             settings=settings))
            continue
        per = {s: bits(f"{key}/{cond}/{s}", size, min(1.0, acc * (2 + i))) for i, s in enumerate(SW_STRATEGIES)}
        worst = np.logical_and.reduce(list(per.values()))
        rows.append(_row("attacks", cond, worst, group=group, severity=eps,
                         settings={**settings, "strategy": "worst-case", "strategies": list(SW_STRATEGIES)}))
        rows += [_row("attacks", f"{cond}/switch:{s}", c, group=f"{group}/switch:{s}", severity=eps,
                      settings={**settings, "strategy": s}) for s, c in per.items()]
    if switched:
        for cond, acc in (("clean", clean), *((f"sigma={s:g}", a) for s, a in zip(SW_SIGMAS, blur, strict=True))):
            for which, a in (("switched", acc), ("original", SW_MODELS["none"][1] if cond == "clean" else 0.4),
                             ("repaired", acc - 0.02)):
                rows.append(_row("diagnostics", f"test/paths/{cond}/{which}",
                                 bits(f"{key}/paths/{cond}/{which}", n, a), group="paths",
                                 settings={"family": "blur", "split": "test", "path": which}))
            routed = 5.0 if cond == "clean" else 90.0
            rows.append(_row("diagnostics", f"test/paths/{cond}/routed to the repair", value=routed, n=n,
                             group="paths", metric="percent", settings={"family": "blur", "split": "test"}))
            if cond != "clean":
                rows.append(_row("diagnostics", f"test/paths/{cond}/auroc", value=0.97, n=2 * n, group="paths",
                                 metric="auroc", settings={"family": "blur", "split": "test"}))
    if name == "deeppatch":
        for split, size in (("val", 240), ("test", n)):
            for gate, auc in (("reference", 0.62), ("learned", 0.99)):
                rows.append(_row("diagnostics", f"{split}/{gate}/clean routed original", value=98.0, n=size,
                                 group="routing", metric="routing_accuracy"))
                for s in SW_SIGMAS:
                    rows.append(_row("diagnostics", f"{split}/{gate}/sigma={s:g} routed patched", value=90.0, n=size,
                                     group="routing", metric="routing_accuracy"))
                    rows.append(_row("diagnostics", f"{split}/{gate}/sigma={s:g} auroc", value=auc, n=2 * size,
                                     group="auroc", metric="auroc"))
        for variant in ("per-sample/learned", "batch-majority/learned", "per-sample/reference",
                        "switch=off (always patched)"):
            rows.append(_row("diagnostics", f"test/{variant}/clean", value=88.0, n=n, group="variant"))
            rows.append(_row("diagnostics", f"test/{variant}/blur_mean", value=75.0, n=n, group="variant"))
    if label == "finetune+switch[auto]":
        rows.append(_row("diagnostics", "val/switch/holdout switched accuracy", value=85.0, n=300, group="switch",
                         source="repair"))
    return rows


def switched_results(folder: Path, seeds: tuple[int, ...] = (0,), n: int = SW_N, samples: bool = True,
                     manifest: dict | None = None) -> Path:
    for label, (name, *_, added) in SW_MODELS.items():
        params = {"name": name, **({"switch": "learned"} if label in SW_SWITCHED else {})}
        for seed in seeds:
            rows = switched_rows(label, seed, n)
            cell = {"benchmark": "switched", "dataset": "cifar10", "model": "resnet20", "corrector": label,
                    "params": params, "params_hash": stable_hash(params), "seed": seed,
                    "repair_time_s": 0.0 if name == "none" else 20.0, "trainable_params": added,
                    "added_params": added, "epochs": 2, "device": "cpu (test)",
                    "versions": {"deeppatch": "0.1.0", "torch": "2.x", "git_commit": "abc123"},
                    "created": "2025-01-01T00:00:00", "code_hash": f"code-{name}"}
            key = f"cifar10__resnet20__{label}__s{seed}"
            write_cell_rows(folder, key, [complete_row(r, cell) for r in rows])
            if samples:
                write_cell_samples(folder, key, rows, 7)
    manifest = SW_MANIFEST if manifest is None else manifest
    (folder / "manifest.json").write_text(json.dumps({**manifest, "seeds": list(seeds)}), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def switched_built(tmp_path_factory) -> tuple[Path, Path, dict[str, Path]]:
    """A one-seed report with per-sample data, several attacks and two switched correctors."""
    folder = tmp_path_factory.mktemp("switched")
    results = switched_results(folder / "results")
    return results, folder / "report", build_report(results, folder / "report")


def _arrays(label: str, seed: int = 0, n: int = SW_N) -> dict[str, np.ndarray]:
    """The fixture's per-sample arrays of one cell, by condition."""
    return {r.condition: r.correct for r in switched_rows(label, seed, n) if r.correct is not None}



def _headline_rows(out: Path) -> dict[tuple[str, str], dict[str, dict]]:
    """headline.csv (tidy) as {(model, corrector): {metric: its record}}."""
    frame = pd.read_csv(out / "headline.csv")
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    for record in frame.to_dict("records"):
        rows.setdefault((record["model"], record["corrector"]), {})[record["metric"]] = record
    return rows


def _pct(interval) -> tuple[float, float]:
    return 100 * interval.low, 100 * interval.high


def _table(text: str, heading: str, after: str | None = None) -> list[str]:
    """The Markdown table lines that follow `heading` (the first one after the line `after`, when given)."""
    lines = text.splitlines()
    start = lines.index(heading, lines.index(after) if after else 0)
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[first:end]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


# ---------------------------------------------------------------------------------------------------------
# numbers (results without per-sample data: intervals, no tests, nothing bold)


def test_headline_numbers_changes_and_intervals(built):
    out = built[1]
    rows = _headline_rows(out)
    assert set(rows) == {("resnet20", "none"), ("resnet20", "deeppatch (routing=per-sample)"),
                         ("resnet20", "deeppatch (routing=batch-majority)"), ("resnet20", "finetune"),
                         ("vgg13_bn", "none"), ("vgg13_bn", "finetune")}
    ps = rows[("resnet20", "deeppatch (routing=per-sample)")]
    clean = ps["clean"]
    t = stats.t_interval([89.0, 91.0])
    assert clean["seeds"] == 2 and clean["n"] == 100 and clean["mean"] == pytest.approx(90.0)
    assert clean["ci_method"] == "t" and clean["ci_low"] == pytest.approx(t.low)
    assert clean["ci_high"] == pytest.approx(100.0)  # a share: the t interval is cut at 100 %
    assert ps["delta clean"]["mean"] == pytest.approx(-1.0) and math.isnan(ps["delta clean"]["ci_low"])  # no spread
    assert math.isnan(ps["delta clean"]["p"]) and math.isnan(ps["delta clean"]["significant"])  # no samples: no test
    ft = rows[("resnet20", "finetune")]
    t = stats.t_interval([-5.0, -4.0])
    assert ft["delta clean"]["mean"] == pytest.approx(-4.5)
    assert (ft["delta clean"]["ci_low"], ft["delta clean"]["ci_high"]) == pytest.approx((t.low, t.high))
    # the vgg reference has seed 0 only: seed 1 is compared with its mean; one seed: Wilson on n
    vgg = rows[("vgg13_bn", "finetune")]
    assert vgg["delta clean"]["mean"] == pytest.approx(((70 - 80) + (74 - 80)) / 2)
    ref = rows[("vgg13_bn", "none")]["clean"]
    assert ref["ci_method"] == "wilson"
    assert (ref["ci_low"], ref["ci_high"]) == pytest.approx(_pct(stats.wilson_interval(80, 100)))
    assert "delta clean" not in rows[("resnet20", "none")]

    # blur mean: stored aggregate rows, or (finetune has none) computed from the sigma rows of each seed
    for label, key in (("dp-ps", ps), ("finetune", ft)):
        per_seed = [sum(blur_value(CLEAN["resnet20", label][s], label, x) for x in SIGMAS) / 6 for s in (0, 1)]
        assert key["blur mean"]["mean"] == pytest.approx(sum(per_seed) / 2)
        assert key["blur mean"]["n"] == 100  # images per condition, not conditions x images
    per_seed = [sum(corruption_value(CLEAN["resnet20", "dp-ps"][s], "dp-ps", c, k) for c in CORRUPTIONS
                    for k in range(1, 6)) / 10 for s in (0, 1)]
    assert ps["corruptions mean"]["mean"] == pytest.approx(sum(per_seed) / 2)
    assert ps[ATTACKS[0][0]]["mean"] == pytest.approx(10 + 6 + 0.5) and ps[ATTACKS[1][0]]["mean"] == 21.5
    assert ps["repair time s"]["mean"] == 12.0 and ps["added params"]["mean"] == 1500
    # no per-sample data: nothing is marked best
    assert not any(r["best"] for metrics in rows.values() for r in metrics.values())


def test_markdown_tables_show_intervals_and_na(built):
    out = built[1]
    text = built[2]["markdown"].read_text(encoding="utf-8")
    assert text.startswith("# DeepPatch Bench report: unit\n")
    assert "- **spec**: benchmarks/unit.toml" in text and "- **git commit**: abc123" in text
    assert "- **seeds**: 0, 1 (2)" in text and "generated by this project" in text
    assert "- **evaluation seed**: not recorded (older results)" in text
    assert "- **per-sample data**: none (results written before" in text
    assert "clean 100; blur 100; corruptions 50; attacks 32; diagnostics 100/600/700 (per condition)" in text
    head = _table(text, "## Headline")
    assert head[0].startswith("| corrector | seeds | clean (n=100) | Δ clean | blur mean (n=100) | Δ blur mean |")
    assert "| PGD-10 L2 0.5 (n=32) | PGD-10 L∞ 8/255 (n=32) |" in head[0]
    assert head[2].startswith("| **cifar10 / resnet20** |")
    line = next(x for x in head if x.startswith("| deeppatch (routing=batch-majority) |"))
    assert "| 90.50 [77.8, 100.0] | -0.50 n/a |" in line and line.endswith("| 12.0 | 1,500 |")
    ref = next(x for x in head if x.startswith("| none | 2 |"))
    assert "| 91.00 [78.3, 100.0] | – |" in ref and ref.endswith("| 0.0 | 0 |")
    assert "**" not in "".join(head[3:]).replace("**cifar10 / ", "").replace("** |", "")  # nothing bold
    assert "Nothing is bold: these results have no per-sample data" in text
    assert "- **PGD-10 L∞ 8/255**: pgd-linf/eps=0.0314/steps=10" in text  # the legend under the table
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert not path.startswith(("/", "http")) and (out / path).is_file()


def test_per_condition_tables(built):
    text = built[2]["markdown"].read_text(encoding="utf-8")
    blur_head = ("| corrector | seeds | clean (n=100) | sigma=0.5 (n=100) | sigma=1 (n=100) | sigma=1.5 (n=100) | "
                 "sigma=2 (n=100) | sigma=2.5 (n=100) | sigma=3 (n=100) | mean (n=100) | union |")
    assert blur_head in text
    # corruptions: rows per corruption with each corrector, columns per severity, then all corruptions
    head = ("| corruption | corrector | seeds | severity 1 (n=50) | severity 2 (n=50) | severity 3 (n=50) | "
            "severity 4 (n=50) | severity 5 (n=50) | mean (n=50) |")
    assert head in text
    fog = next(x for x in text.splitlines() if x.startswith("| fog | deeppatch (routing=per-sample) |"))
    values = [corruption_value(89.0, "dp-ps", "fog", 1), corruption_value(91.0, "dp-ps", "fog", 1)]
    t = stats.t_interval(values)
    assert _cells(fog)[3] == f"{sum(values) / 2:.2f} [{t.low:.1f}, {min(t.high, 100):.1f}]"
    allc = next(x for x in text.splitlines() if x.startswith("| all corruptions | finetune |"))
    assert allc.count("|") == head.count("|")
    # attacks: short names with n, next to their subset's clean accuracy when there is one
    assert "| corrector | seeds | PGD-10 L2 0.5 (n=32) | PGD-10 L∞ 8/255 (n=32) |" in text
    # diagnostics: rows per condition, columns per metric
    assert "| condition | corrector | seeds | accuracy | auroc | routing_accuracy |" in text
    assert "| routing=per-sample/clean | deeppatch (routing=per-sample) | 2 | – | – | 95.50 [89.1, 100.0] |" in text
    assert "| switch | deeppatch (routing=batch-majority) | 2 | – | 0.905 [0.84, 0.97] | – |" in text


# ---------------------------------------------------------------------------------------------------------
# per-sample data: intervals, paired tests, Holm, best marks, takeaways, leaderboard, switches


def _concat(arrays: dict[str, np.ndarray], conditions: list[str]) -> np.ndarray:
    return np.concatenate([arrays[c] for c in conditions])


SW_CHANGES = (("delta clean", ["clean"]), ("delta blur mean", [f"sigma={s:g}" for s in SW_SIGMAS]),
              ("delta corruptions mean", [f"generated/{k}/{v}" for k in SW_CORRUPTIONS for v in (1, 3)]))


def test_one_seed_wilson_intervals_and_mcnemar_changes_holm_corrected(switched_built):
    out, text = switched_built[1], switched_built[2]["markdown"].read_text(encoding="utf-8")
    rows = _headline_rows(out)
    dp = rows[("resnet20", "deeppatch+switch[learned auto]")]["clean"]
    k = int(_arrays("deeppatch+switch[learned auto]")["clean"].sum())
    assert dp["ci_method"] == "wilson" and dp["n"] == SW_N and dp["seeds"] == 1
    assert (dp["ci_low"], dp["ci_high"]) == pytest.approx(_pct(stats.wilson_interval(k, SW_N)))

    ref = _arrays("none")
    family = {(label, metric): stats.mcnemar_test(_concat(ref, conds), _concat(_arrays(label), conds))
              for label in SW_MODELS if label != "none" for metric, conds in SW_CHANGES}
    adjusted = stats.holm([t.p_value for t in family.values()])
    assert len(family) == 12 and "p is Holm-adjusted over this table's 12 changes" in text
    for ((label, metric), test), p in zip(family.items(), adjusted, strict=True):
        record = rows[("resnet20", label)][metric]
        assert record["mean"] == pytest.approx(100 * test.diff)
        assert (record["ci_low"], record["ci_high"]) == pytest.approx((100 * test.ci_low, 100 * test.ci_high))
        assert record["ci_method"] == test.method and record["p"] == pytest.approx(p)
        assert bool(record["significant"]) == (p <= 0.05)
    # in the table: the change, its interval and the adjusted test
    line = next(x for x in _table(text, "## Headline") if x.startswith("| finetune |"))
    dc = rows[("resnet20", "finetune")]["delta clean"]
    assert f"| -3.00 [{dc['ci_low']:.1f}, {dc['ci_high']:.1f}] n.s. |" in line
    assert "| +30.00 [" in line and "] p < 0.001 |" in line


def test_bold_is_a_significant_lead_and_a_lead_inside_the_noise_is_not_bold(switched_built):
    out, text = switched_built[1], switched_built[2]["markdown"].read_text(encoding="utf-8")
    rows = _headline_rows(out)
    best = {(label, metric) for (_, label), metrics in rows.items() for metric, r in metrics.items() if r["best"]}
    candidates = [label for label in SW_MODELS if label != "none"]
    # inside the noise: clean 90.00 vs 89.50, blur mean 80.00 vs 79.00: the paired test cannot separate them
    for conds in (["clean"], [f"sigma={s:g}" for s in SW_SIGMAS]):
        _, _, test = stats.compare_best([_concat(_arrays(c), conds) for c in candidates])
        assert test.p_value > 0.05
    assert not {m for _, m in best} & {"clean", "blur mean"}
    # clear: adversarial under every attack, finetune on the corruptions mean
    assert {("adversarial", a[0]) for a in SW_ATTACKS} | {("finetune", "corruptions mean")} == best
    head = _table(text, "## Headline")
    assert "| **45.00** [" in next(x for x in head if x.startswith("| adversarial |"))
    assert "| 90.00 [86.7, 92.6] |" in next(x for x in head if x.startswith("| deeppatch+switch"))
    assert "A lead inside the noise, a tie, or a column without per-sample data is not bold" in text


@pytest.mark.parametrize(("condition", "short"), [
    ("pgd-linf/eps=0.0314/steps=10", "PGD-10 L∞ 8/255"), ("pgd-l2/eps=0.5/steps=20/restarts=2", "PGD-20 L2 0.5"),
    ("autoattack-standard-linf/eps=0.0314", "AutoAttack L∞ 8/255"),
    ("autoattack-plus-l2/eps=0.5", "AutoAttack+ L2 0.5"),
    ("autoattack-custom[apgd-ce+square]-linf/eps=0.1", "APGD-CE+Square L∞ 0.1"), ("my-attack/x", "my-attack/x")])
def test_attack_short_names(condition, short):
    assert attack_label(condition) == short


def test_headers_carry_n_one_clean_per_model_and_an_attack_legend(switched_built):
    text = switched_built[2]["markdown"].read_text(encoding="utf-8")
    head = _table(text, "## Headline")
    assert head[0] == ("| corrector | seeds | clean (n=400) | Δ clean | blur mean (n=400) | Δ blur mean | "
                       "corruptions mean (n=400) | Δ corruptions mean | APGD-CE L∞ 0.1 (n=100) | PGD-10 L2 0.5 (n=200) "
                       "| PGD-10 L∞ 0.1 (n=200) | repair time (s) | added params |")
    assert "switch:" not in "\n".join(head)  # strategies are not headline columns
    assert ("- **PGD-10 L∞ 0.1**: pgd-linf/eps=0.1/steps=10; 10 steps of 0.025, 1 restart, random start; 200 test "
            "images") in text
    attacks = _table(text, "### cifar10 / resnet20", after="## Adversarial attacks")
    assert attacks[0] == ("| corrector | seeds | subset clean (n=100) | APGD-CE L∞ 0.1 (n=100) | "
                          "subset clean (n=200) | PGD-10 L2 0.5 (n=200) | PGD-10 L∞ 0.1 (n=200) |")


def test_switched_models_report_the_worst_case_over_attack_strategies(switched_built):
    out, text = switched_built[1], switched_built[2]["markdown"].read_text(encoding="utf-8")
    cond = SW_ATTACKS[0][0]
    arrays = _arrays("finetune+switch[auto]")
    per = [arrays[f"{cond}/switch:{s}"] for s in SW_STRATEGIES]
    worst = np.logical_and.reduce(per)
    assert (arrays[cond] == worst).all() and worst.mean() < min(p.mean() for p in per)
    shown = _headline_rows(out)[("resnet20", "finetune+switch[auto]")][cond]["mean"]
    assert shown == pytest.approx(100 * worst.mean())
    assert "an attack's number is the worst case over the attack strategies" in text
    strategies = _table(text, "### cifar10 / resnet20: attack strategies against switched models")
    assert strategies[0].startswith("| strategy | corrector | seeds | APGD-CE L∞ 0.1 (n=100) |")
    square = next(x for x in strategies if x.startswith("| square | finetune+switch[auto] |"))
    assert _cells(square)[5].startswith(f"{100 * arrays[cond + '/switch:square'].mean():.2f} [")
    assert len(strategies) == 2 + 2 * len(SW_STRATEGIES)


def test_takeaways_open_the_headline_and_come_from_the_numbers(switched_built, tmp_path):
    out, text = switched_built[1], switched_built[2]["markdown"].read_text(encoding="utf-8")
    lines = text.splitlines()
    start = lines.index("## Headline")
    bullets = [x[2:].replace("\\<", "<") for x in lines[start + 2:lines.index("", start + 2)]]
    assert 2 <= len(bullets) <= 4
    ft = _headline_rows(out)[("resnet20", "finetune")]
    dc, db = ft["delta clean"], ft["delta blur mean"]
    assert bullets[0] == (
        "finetune ranks first on blur mean among the correctors whose clean drop is not significantly beyond 1 point: "
        f"it keeps clean accuracy ({dc['mean']:.2f}, 95 % CI [{dc['ci_low']:.1f}, {dc['ci_high']:.1f}], n.s.) and "
        f"gains {db['mean']:.2f} points of blur mean against none (95 % CI [{db['ci_low']:.1f}, {db['ci_high']:.1f}], "
        "p < 0.001).")
    assert bullets[1] == ("The lead of finetune over finetune+switch[auto] (79.00 blur mean) is within the noise "
                          "(n.s., paired test on the same images, Holm).")
    assert bullets[2].startswith("4 of 4 correctors improve blur mean significantly against none")
    page = switched_built[2]["html"].read_text(encoding="utf-8")
    assert page.index('<ul class="takeaways">') < page.index('<table id="table-headline">')

    # other numbers, other sentences: rank by the corruptions mean
    manifest = {**SW_MANIFEST, "spec_content": {"leaderboard": {"metric": "corruptions mean"}}}
    other = build_report(switched_results(tmp_path / "r", manifest=manifest), tmp_path / "o")["markdown"].read_text()
    assert "- finetune ranks first on corruptions mean" in other
    assert "- The lead of finetune over finetune+switch[auto] (70.00 corruptions mean) is significant" in other


def test_leaderboard_ranks_by_the_spec_and_lists_the_excluded_below(switched_built, tmp_path):
    out, text = switched_built[1], switched_built[2]["markdown"].read_text(encoding="utf-8")
    board = pd.read_csv(out / "leaderboard.csv", dtype={"rank": str})
    assert all(c.isascii() for c in board.columns) and (out / "leaderboard.csv").read_bytes().isascii()
    assert list(board["corrector"]) == ["finetune", "finetune+switch[auto]", "deeppatch+switch[learned auto]",
                                        "adversarial", "none"]
    assert list(board["rank"]) == ["1", "2", "3", "-", "ref"]
    adv = board[board["corrector"] == "adversarial"].iloc[0]
    assert not adv["eligible"] and adv["status"] == "excluded: clean drop significantly > 1"
    assert adv["delta_clean_ci_high"] < -1 and adv["delta_clean_significant"]
    assert "### cifar10 / resnet20: ranked by blur mean" in text
    table = _table(text, "### cifar10 / resnet20: ranked by blur mean")
    assert table[0] == ("| rank | corrector | seeds | status | blur mean (n=400) | Δ blur mean | clean (n=400) | "
                        "Δ clean |")
    assert table[5].startswith("| – | adversarial | 1 | excluded: clean drop significantly > 1 |")

    # the spec's criterion: a metric and a tolerance that lets adversarial in
    manifest = {**SW_MANIFEST, "spec_content": {"leaderboard": {"metric": "corruptions mean",
                                                                "clean_drop_tolerance": 25}}}
    build_report(switched_results(tmp_path / "r", manifest=manifest), tmp_path / "o")
    board = pd.read_csv(tmp_path / "o" / "leaderboard.csv", dtype={"rank": str})
    assert list(board["corrector"]) == ["finetune", "finetune+switch[auto]", "deeppatch+switch[learned auto]",
                                        "adversarial", "none"]
    assert list(board["rank"]) == ["1", "2", "3", "4", "ref"] and set(board["metric"]) == {"corruptions mean"}
    # a metric the rows lack and a bad tolerance: noted, defaults used
    manifest = {**SW_MANIFEST, "spec_content": {"leaderboard": {"metric": "fog", "clean_drop_tolerance": -1}}}
    text = build_report(switched_results(tmp_path / "r2", manifest=manifest), tmp_path / "o2")["markdown"].read_text()
    assert "the spec's metric 'fog' is not in the results; ranked by blur mean" in text
    assert "leaderboard.clean_drop_tolerance must be a number >= 0; 1 used" in text


def test_switch_tables_show_gates_and_routing_and_label_the_training_fit(switched_built):
    text = switched_built[2]["markdown"].read_text(encoding="utf-8")
    assert text.index("## Switches") < text.index("## Plots")
    dp = _table(text, "### cifar10 / resnet20 / deeppatch+switch[learned auto]")
    assert dp[0] == ("| data | gate | routing | seeds | clean (n=400) | blur mean (n=400) | AUROC | routed (clean) | "
                     "routed (blur) |")
    body = [_cells(x)[:3] for x in dp[2:]]
    assert body == [["test", "learned auto", "switch"], ["test", "learned", "per-sample"],
                    ["test", "paper indicator", "per-sample"], ["test", "learned", "batch-majority"],
                    ["test", "off", "always repaired"], ["test", "–", "original only"],
                    ["test", "–", "repaired only"], ["val: training fit", "learned", "per-sample"],
                    ["val: training fit", "paper indicator", "per-sample"]]
    val = _cells(dp[-2])
    assert val[4:7] == ["–", "–", "0.990"] and val[7].startswith("2.00 [")  # 100 - 98 % routed to the original
    ft = _table(text, "### cifar10 / resnet20 / finetune+switch[auto]")
    arrays = _arrays("finetune+switch[auto]")
    switched = _cells(ft[2])
    assert switched[:3] == ["test", "learned auto", "switch"]
    assert switched[4].startswith(f"{100 * arrays['test/paths/clean/switched'].mean():.2f} [")
    assert "### cifar10 / resnet20 / finetune\n" not in text and "Rows marked \"val: training fit\"" in text


def test_provenance_header_and_tidy_ascii_csv(switched_built):
    out, text = switched_built[1], switched_built[2]["markdown"].read_text(encoding="utf-8")
    assert "- **seeds**: 0 (1)" in text
    assert "- **evaluation seed**: 7 (the same test images and perturbation draws" in text
    assert "- **per-sample data**: 5 of 5 cells" in text
    assert "- **code**: none code-none; adversarial code-adversarial;" in text and "harness h4rn3ss" in text
    data = (out / "headline.csv").read_bytes()
    assert data.isascii()
    frame = pd.read_csv(out / "headline.csv")
    assert list(frame.columns) == ["dataset", "model", "corrector", "metric", "mean", "ci_low", "ci_high",
                                   "ci_method", "n", "seeds", "p", "significant", "best"]
    assert len(frame) == len(frame.drop_duplicates(["dataset", "model", "corrector", "metric"]))
    assert {"clean", "delta clean", "blur mean", "autoattack-custom[apgd-ce]-linf/eps=0.1"} <= set(frame["metric"])


def test_snapshot_holds_the_samples_and_rebuilds_byte_for_byte(switched_built, tmp_path):
    results, out, _ = switched_built
    stored = sorted(p.name for p in (results / "samples").glob("*.json"))
    assert stored and sorted(p.name for p in (out / "results" / "samples").glob("*.json")) == stored
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    build_report(copy / "results", copy)  # the regeneration command, from the report's own copy
    assert _digests(copy) == _digests(out)


def test_several_seeds_t_intervals_and_paired_bootstrap(tmp_path):
    seeds, n = (0, 1), 100
    out = tmp_path / "o"
    build_report(switched_results(tmp_path / "r", seeds=seeds, n=n), out)
    rows = _headline_rows(out)
    clean = [100 * _arrays("finetune", s, n)["clean"].mean() for s in seeds]
    t = stats.t_interval(clean)
    record = rows[("resnet20", "finetune")]["clean"]
    assert record["ci_method"] == "t" and record["seeds"] == 2
    assert (record["ci_low"], record["ci_high"]) == pytest.approx((max(t.low, 0), min(t.high, 100)))
    ref = {s: _arrays("none", s, n) for s in seeds}
    family = {}
    for label in SW_MODELS:
        if label != "none":
            cand = {s: _arrays(label, s, n) for s in seeds}
            for metric, conds in SW_CHANGES:
                family[(label, metric)] = stats.paired_bootstrap(np.stack([_concat(ref[s], conds) for s in seeds]),
                                                                 np.stack([_concat(cand[s], conds) for s in seeds]))
    adjusted = stats.holm([x.p_value for x in family.values()])
    for ((label, metric), test), p in zip(family.items(), adjusted, strict=True):
        record = rows[("resnet20", label)][metric]
        assert record["ci_method"] == "paired-bootstrap" and record["p"] == pytest.approx(p)
        assert (record["ci_low"], record["ci_high"]) == pytest.approx((100 * test.ci_low, 100 * test.ci_high))
    assert "- **seeds**: 0, 1 (2)" in (out / "README.md").read_text()


def test_results_without_or_with_broken_samples_fall_back_to_intervals(tmp_path):
    out = tmp_path / "o"
    text = build_report(switched_results(tmp_path / "r", samples=False), out)["markdown"].read_text()
    head = _table(text, "## Headline")
    assert "n/a" in next(x for x in head if x.startswith("| finetune |"))
    assert not _headline_rows(out)[("resnet20", "adversarial")]["pgd-linf/eps=0.1/steps=10"]["best"]
    assert "- **per-sample data**: none" in text and "untested" in text
    # a broken samples file: the report still builds, without tests, and says why
    results = switched_results(tmp_path / "b")
    next((results / "samples").glob("*.json")).write_text("{not json", encoding="utf-8")
    text = build_report(results, tmp_path / "ob")["markdown"].read_text()
    assert "- **per-sample data**: not used: unreadable per-sample file" in text and " n/a |" in text


def _simple_results(folder: Path, cells: dict[tuple[str, int], list[SuiteRow]]) -> Path:
    for (corrector, seed), suite_rows in cells.items():
        cell = {"benchmark": "unit", "dataset": "digits", "model": "tinycnn", "corrector": corrector, "params": {},
                "params_hash": stable_hash({}), "seed": seed}
        write_cell_rows(folder, f"{corrector}-{seed}", [complete_row(r, cell) for r in suite_rows])
    return folder


def test_many_attacks_collapse_to_their_mean(tmp_path):
    cells = {}
    for seed in (0, 1):
        for corrector in ("none", "finetune"):
            cells[corrector, seed] = [SuiteRow("clean", "clean", 90.0, 10),  # the attack subset's clean accuracy:
                                      SuiteRow("attacks", "clean", 88.0, 10, group="clean")] + [  # not an attack
                SuiteRow("attacks", f"pgd-linf/eps={e}/steps=5", 10.0 * i + seed, 10, group="pgd-linf", severity=e)
                for i, e in enumerate((0.01, 0.02, 0.03, 0.04, 0.05))]
    out = tmp_path / "out"
    build_report(_simple_results(tmp_path / "res", cells), out)
    head = _headline_rows(out)
    assert head[("tinycnn", "finetune")]["attacks mean"]["mean"] == pytest.approx(20.5)
    assert "blur mean" not in head[("tinycnn", "finetune")]
    assert not (out / "plots").exists()  # no robust accuracy to plot
    text = (out / "README.md").read_text()
    assert "attacks mean: robust accuracy averaged over the 5 attack conditions" in text
    assert "subset clean (n=10)" in text and "subset clean" not in "\n".join(_table(text, "## Headline"))


def test_values_on_fewer_seeds_say_so_and_unknown_suites_get_a_table(tmp_path):
    cells = {("none", 0): [SuiteRow("clean", "clean", 80.0, 10), SuiteRow("blur", "sigma=1", 70.0, 10, "sigma", 1.0)],
             ("none", 1): [SuiteRow("clean", "clean", 82.0, 10), SuiteRow("blur", "sigma=1", 72.0, 10, "sigma", 1.0)],
             ("finetune", 0): [SuiteRow("clean", "clean", 79.0, 10),
                               SuiteRow("blur", "sigma=1", 75.0, 10, "sigma", 1.0),
                               SuiteRow("texture", "stripes", 40.0, 10, group="pattern")],
             ("finetune", 1): [SuiteRow("clean", "clean", 81.0, 10)]}
    out = tmp_path / "out"
    text = build_report(_simple_results(tmp_path / "res", cells), out)["markdown"].read_text()
    line = next(x for x in _table(text, "## Headline") if x.startswith("| finetune |"))
    # blur mean computed from the sigma rows; finetune has it on seed 0 only: Wilson on its 10 images
    iv = stats.summarize_seeds([75.0], n_images=10, scale=100).interval
    assert f"| -1.00 n/a | 75.00 [{iv.low:.1f}, {iv.high:.1f}] (1 of 2 seeds) |" in line
    assert "## Suite texture" in text and "| finetune | 1 | 40.00 [" in text


def test_pareto_front():
    from deeppatch.reporting.plots import pareto_front

    points = [(1.0, 1.0), (2.0, 0.5), (0.5, 2.0), (0.4, 0.4), (1.0, 1.0), (2.0, 0.4)]
    assert pareto_front(points) == [(0.5, 2.0), (1.0, 1.0), (2.0, 0.5)]


# ---------------------------------------------------------------------------------------------------------
# files


def test_plots_are_valid_pngs(built):
    import matplotlib.image

    written = built[2]
    plots = {k: v for k, v in written.items() if k.startswith("plot_")}
    assert set(plots) == {"plot_clean_vs_robust", "plot_blur_curves", "plot_corruption_curves"}
    for path in plots.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
        assert image[..., :3].std() > 0.01  # not blank
        assert b"Software" not in path.read_bytes()


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_regeneration_is_byte_identical(built, tmp_path):
    results, first_dir, first = built
    again = build_report(Path(str(results) + "/"), tmp_path / "again")  # another folder, another spelling
    a, b = _digests(first_dir), _digests(tmp_path / "again")
    assert a == b
    assert {"README.md", "index.html", "rows.csv", "headline.csv", "headline.tex", "leaderboard.csv"} <= set(a)
    assert {p.relative_to(tmp_path / "again") for p in again.values()} == {p.relative_to(first_dir)
                                                                          for p in first.values()}
    build_report(results, tmp_path / "again")  # rebuilding in place changes nothing either
    assert _digests(tmp_path / "again") == a


def test_committed_quick_report_regenerates_byte_for_byte(tmp_path):
    """reports/quick/ (the example README links) is exactly what `deeppatch report` makes of its stored rows."""
    committed = Path(__file__).resolve().parents[1] / "reports" / "quick"
    results = committed / "results"
    assert (results / "manifest.json").is_file() and any((results / "rows").glob("*.jsonl"))
    assert main(["report", str(results), "-o", str(tmp_path / "quick")]) == 0
    # rows.csv is derived from results/ and not tracked (.gitignore): a fresh clone has none
    expected = {k: v for k, v in _digests(committed).items() if k != "rows.csv"}  # results/ included
    assert {"README.md", "index.html", "results/manifest.json"} <= set(expected)
    regenerated = _digests(tmp_path / "quick")
    assert regenerated.pop("rows.csv") and regenerated == expected

def test_rows_csv_holds_every_row_in_fixed_order(built):
    import pandas as pd

    from deeppatch.results import COLUMNS, read_rows

    results, _, written = built
    frame = pd.read_csv(written["rows_csv"])
    assert list(frame.columns) == list(COLUMNS) and len(frame) == len(read_rows(results))
    assert list(frame["dataset"] + frame["model"]) == sorted(frame["dataset"] + frame["model"])


def test_latex_headline_is_booktabs(built):
    tex = built[2]["latex"].read_text(encoding="utf-8")
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrrrrrrrrrrr}",
                  r"\multicolumn{12}{l}{\textit{cifar10 / vgg13\_bn}}", r"$\Delta$ clean", r"{\scriptsize [",
                  r"$-$1.00", r"PGD-10 L$\infty$ 8/255 (n=32)", "1{,}500", "n/a"):
        assert token in tex, token
    body = "\n".join(x for x in tex.splitlines() if not x.startswith("%"))
    assert body.count("{") - body.count(r"\{") == body.count("}") - body.count(r"\}")
    assert "–" not in body and "±" not in body and "∞" not in body and "<" not in body


def test_html_is_self_contained(switched_built):
    page = switched_built[2]["html"].read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert "<script" not in page and "url(" not in page and "@import" not in page
    assert page.count("<img ") == 3 and '<td class="num best">' in page and '<ul class="takeaways">' in page


# ---------------------------------------------------------------------------------------------------------
# the command


def test_cli_report_default_output_and_errors(results, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(results)]) == 0
    assert "reports/unit/README.md" in capsys.readouterr().out
    assert (tmp_path / "reports" / "unit" / "index.html").is_file()

    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: results folder {str(tmp_path / 'missing')!r} does not exist"

    (tmp_path / "empty" / "rows").mkdir(parents=True)
    assert main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no result rows under") and err.count("\n") == 1

    (tmp_path / "norows").mkdir()
    assert main(["report", str(tmp_path / "norows"), "-o", str(tmp_path / "x")]) == 2
    assert "expected a rows/ folder" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exc:
        main(["report", "--help"])
    assert exc.value.code == 0 and "RESULTS" in capsys.readouterr().out


def test_default_name_without_manifest_is_the_folder_name(tmp_path, monkeypatch, capsys):
    write_results(tmp_path / "my-run")
    for path in (tmp_path / "my-run" / "rows").glob("*.jsonl"):  # no manifest, rows from two benchmarks
        path.write_text(path.read_text().replace('"benchmark": "unit"', f'"benchmark": "{path.stem}"'))
    monkeypatch.chdir(tmp_path)
    assert main(["report", "my-run"]) == 0
    assert (tmp_path / "reports" / "my-run" / "README.md").read_text().startswith("# DeepPatch Bench report: my-run")


# ---------------------------------------------------------------------------------------------------------
# the page in a real browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  imgs.forEach((img) => img.setAttribute("data-probe", img.complete + ":" + img.naturalWidth));
  // every table fits its box: no horizontal scrolling at this window width
  const wide = Array.from(document.querySelectorAll("div.scroll")).filter((d) => d.scrollWidth > d.clientWidth + 1)
    .map((d) => d.firstElementChild.id);
  document.body.setAttribute("data-overflow", wide.join(",") || "none");
  document.body.setAttribute("data-page-wider", String(document.documentElement.scrollWidth > window.innerWidth));
  document.body.setAttribute("data-probe-done", String(imgs.length));
});
</script>"""
WIDTH = 1400


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp)
    return subprocess.run([str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium_without_missing_images_or_scrolling(switched_built, tmp_path):
    """The report of a benchmark with several attacks and switched correctors, at 1400 px: every image loads
    and every table fits (no column hidden behind a horizontal scroll bar)."""
    from PIL import Image

    page = switched_built[2]["html"]
    # the probe runs in a copy of the page: the report itself has no scripts
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = _chromium(["--virtual-time-budget=10000", f"--window-size={WIDTH},2400", "--dump-dom", probe.as_uri()],
                     tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'data-probe-done="3"' in done.stdout, "the page did not finish loading:\n" + done.stdout[:500]
    states = re.findall(r'data-probe="([^"]*)"', done.stdout)
    assert len(states) == 3
    for state in states:
        complete, width = state.split(":")
        assert complete == "true" and int(width) > 100, f"an image did not load: {state}"
    assert 'data-overflow="none"' in done.stdout, re.findall(r'data-overflow="([^"]*)"', done.stdout)
    assert 'data-page-wider="false"' in done.stdout

    shot = tmp_path / "report-screenshot.png"
    done = _chromium([f"--screenshot={shot}", f"--window-size={WIDTH},2400", page.as_uri()], tmp_path)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (WIDTH, 2400)
        colours = image.convert("L").getextrema()
    assert colours[0] < 100 < colours[1]  # text and plots on a light page, not a blank render
    print(f"screenshot: {shot}")


def test_bench_rebuilds_a_report_only_when_its_inputs_or_files_changed(tmp_path):
    from deeppatch.reporting.build import build_report_if_changed

    results = write_results(tmp_path / "results", MANIFEST)
    out = tmp_path / "report"
    first, rebuilt = build_report_if_changed(results, out)
    assert rebuilt and first["markdown"].is_file()
    again, rebuilt = build_report_if_changed(results, out)
    assert not rebuilt and again == first
    # a report file edited by hand: rebuilt, and the edit undone
    before = first["markdown"].read_bytes()
    first["markdown"].write_text("edited", encoding="utf-8")
    _, rebuilt = build_report_if_changed(results, out)
    assert rebuilt and first["markdown"].read_bytes() == before
    # another report folder: built there
    _, rebuilt = build_report_if_changed(results, tmp_path / "elsewhere")
    assert rebuilt
    _, rebuilt = build_report_if_changed(results, out)
    assert rebuilt  # the stamp now names the other folder
    # new rows: rebuilt
    rows = sorted((results / "rows").glob("*.jsonl"))[0]
    rows.write_text(rows.read_text(encoding="utf-8") + rows.read_text(encoding="utf-8").splitlines()[0] + "\n",
                    encoding="utf-8")
    _, rebuilt = build_report_if_changed(results, out)
    assert rebuilt
    # an unreadable stamp is not an error
    (results / "cache" / "report.json").write_text("{", encoding="utf-8")
    _, rebuilt = build_report_if_changed(results, out)
    assert rebuilt


def test_held_out_corruptions_are_reported_apart(tmp_path):
    """reports/heldout-corruptions: the headline's held-out and seen columns are the means of the
    per-corruption rows of those types (computed here from the stored rows), per seed then over seeds."""
    import pandas as pd

    committed = Path(__file__).resolve().parents[1] / "reports" / "heldout-corruptions" / "results"
    assert main(["report", str(committed), "-o", str(tmp_path / "r")]) == 0
    head = pd.read_csv(tmp_path / "r" / "headline.csv")
    manifest = json.loads((committed / "manifest.json").read_text(encoding="utf-8"))
    held = set(manifest["spec_content"]["suites"]["corruptions"]["heldout"])
    assert len(held) == 5
    per_seed: dict[tuple[str, bool], list[float]] = {}
    for path in sorted((committed / "rows").glob("*none__*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        plain = [r for r in rows if r["suite"] == "corruptions" and r["group"] != "aggregate"
                 and r["metric"] == "accuracy"]
        for is_held in (True, False):
            values = [r["value"] for r in plain if (r["group"] in held) == is_held]
            per_seed.setdefault(("held-out" if is_held else "seen", is_held), []).append(sum(values) / len(values))
    none = head[head["corrector"] == "none"].set_index("metric")["mean"]
    for (name, _), values in per_seed.items():
        assert none[f"{name} corruptions mean"] == pytest.approx(sum(values) / len(values), abs=1e-6)
    assert "held-out corruptions mean: over the corruption types the maintenance never saw" in \
        (tmp_path / "r" / "README.md").read_text(encoding="utf-8")
