"""Reports from hand-written result rows: the numbers in the tables, the plots, byte-identical regeneration,
the command line, and the HTML page in headless Chromium."""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from deeppatch.cli import main
from deeppatch.reporting import build_report
from deeppatch.results import SuiteRow, complete_row, write_cell_rows
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


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return m, s


def _headline_rows(out: Path):
    import pandas as pd

    frame = pd.read_csv(out / "headline.csv")
    return {(r["model"], r["corrector"]): r for _, r in frame.iterrows()}


# ---------------------------------------------------------------------------------------------------------
# numbers


def test_headline_numbers_deltas_seeds_and_best_marks(built):
    out = built[1]
    rows = _headline_rows(out)
    assert set(rows) == {("resnet20", "none"), ("resnet20", "deeppatch (routing=per-sample)"),
                         ("resnet20", "deeppatch (routing=batch-majority)"), ("resnet20", "finetune"),
                         ("vgg13_bn", "none"), ("vgg13_bn", "finetune")}
    ps = rows[("resnet20", "deeppatch (routing=per-sample)")]
    assert ps["seeds"] == 2 and ps["clean"] == pytest.approx(90.0) and ps["clean std"] == pytest.approx(math.sqrt(2))
    assert ps["Δ clean"] == pytest.approx(-1.0) and ps["Δ clean std"] == pytest.approx(0.0)
    ft = rows[("resnet20", "finetune")]
    assert ft["Δ clean"] == pytest.approx(-4.5) and ft["Δ clean std"] == pytest.approx(_mean_std([-5, -4])[1])
    # the vgg reference has seed 0 only: seed 1 is compared with its mean
    vgg = rows[("vgg13_bn", "finetune")]
    assert vgg["Δ clean"] == pytest.approx(((70 - 80) + (74 - 80)) / 2)
    assert math.isnan(rows[("resnet20", "none")]["Δ clean"])

    # blur mean: stored aggregate rows, or (finetune has none) computed from the sigma rows of each seed
    for label, key in (("dp-ps", ps), ("finetune", ft)):
        per_seed = [sum(blur_value(CLEAN["resnet20", label][s], label, x) for x in SIGMAS) / 6 for s in (0, 1)]
        assert key["blur mean"] == pytest.approx(_mean_std(per_seed)[0])
        assert key["blur mean std"] == pytest.approx(_mean_std(per_seed)[1])
    per_seed = [sum(corruption_value(CLEAN["resnet20", "dp-ps"][s], "dp-ps", c, k) for c in CORRUPTIONS
                    for k in range(1, 6)) / 10 for s in (0, 1)]
    assert ps["corruptions mean"] == pytest.approx(_mean_std(per_seed)[0])
    assert ps[ATTACKS[0][0]] == pytest.approx(10 + 6 + 0.5) and ps[ATTACKS[1][0]] == pytest.approx(21.5)
    assert ps["repair time (s)"] == 12.0 and ps["added params"] == 1500

    # best marks: among correctors (none excluded), per dataset and model
    best = {k: [c[:-5] for c in r.index if c.endswith(" best") and r[c]] for k, r in rows.items()}
    assert best[("resnet20", "none")] == []
    assert "clean" in best[("resnet20", "deeppatch (routing=batch-majority)")]
    assert "blur mean" in best[("resnet20", "deeppatch (routing=per-sample)")]
    assert "repair time (s)" in best[("resnet20", "deeppatch (routing=per-sample)")]
    assert "repair time (s)" in best[("resnet20", "deeppatch (routing=batch-majority)")]  # a tie: both marked
    assert "added params" in best[("resnet20", "finetune")]
    assert best[("vgg13_bn", "finetune")] == []  # a single corrector: nothing to compare


def test_markdown_tables_show_mean_std_and_bold_best(built):
    out = built[1]
    text = built[2]["markdown"].read_text(encoding="utf-8")
    assert text.startswith("# DeepPatch Bench report: unit\n")
    assert "- **spec**: benchmarks/unit.toml" in text and "- **git commit**: abc123" in text
    assert "- **seeds**: 0, 1" in text and "generated by this project" in text
    assert "clean 100; blur 100; corruptions 50; attacks 32; diagnostics 100/600/700 (per condition)" in text
    line = next(x for x in text.splitlines() if x.startswith("| cifar10 | resnet20 | deeppatch (routing=batch-maj"))
    assert "| **90.50 ± 1.41** | **-0.50 ± 0.00** |" in line and line.endswith("| **12.0** | 1,500 |")
    ref = next(x for x in text.splitlines() if x.startswith("| cifar10 | resnet20 | none |"))
    assert "| 91.00 ± 1.41 | – |" in ref and ref.endswith("| 0.0 | 0 |")
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert not path.startswith(("/", "http")) and (out / path).is_file()


def test_per_condition_tables(built):
    text = built[2]["markdown"].read_text(encoding="utf-8")
    blur_head = ("| corrector | seeds | clean | sigma=0.5 | sigma=1 | sigma=1.5 | sigma=2 | sigma=2.5 | sigma=3 | mean "
                 "| union |")
    assert blur_head in text
    # corruptions: rows per corruption with each corrector, columns per severity, then all corruptions
    head = "| corruption | corrector | seeds | severity 1 | severity 2 | severity 3 | severity 4 | severity 5 | mean |"
    assert head in text
    fog = next(x for x in text.splitlines() if x.startswith("| fog | deeppatch (routing=per-sample) |"))
    cells = [c.strip() for c in fog.strip("|").split("|")]
    values = [corruption_value(89.0, "dp-ps", "fog", 1), corruption_value(91.0, "dp-ps", "fog", 1)]
    assert cells[3] == f"**{_mean_std(values)[0]:.2f} ± {_mean_std(values)[1]:.2f}**"
    allc = next(x for x in text.splitlines() if x.startswith("| all corruptions | finetune |"))
    assert allc.count("|") == head.count("|")
    # attacks, one column per condition
    assert f"| corrector | seeds | {ATTACKS[1][0]} | {ATTACKS[0][0]} |" in text
    # diagnostics: rows per condition, columns per metric
    assert "| condition | corrector | seeds | accuracy | auroc | routing_accuracy |" in text
    assert "| routing=per-sample/clean | deeppatch (routing=per-sample) | 2 | – | – | 95.50 ± 0.71 |" in text
    assert "| switch | deeppatch (routing=batch-majority) | 2 | – | **0.905 ± 0.007** | – |" in text


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
                for i, e in enumerate((0.01, 0.02, 0.03, 0.04))]
    out = tmp_path / "out"
    build_report(_simple_results(tmp_path / "res", cells), out)
    head = _headline_rows(out)
    assert head[("tinycnn", "finetune")]["attacks mean"] == pytest.approx(15.5)
    assert "blur mean" not in head[("tinycnn", "finetune")]
    assert not (out / "plots").exists()  # no robust accuracy to plot
    assert "attacks mean: robust accuracy averaged over the 4 attack conditions" in (out / "README.md").read_text()


def test_values_on_fewer_seeds_say_so_and_unknown_suites_get_a_table(tmp_path):
    cells = {("none", 0): [SuiteRow("clean", "clean", 80.0, 10), SuiteRow("blur", "sigma=1", 70.0, 10, "sigma", 1.0)],
             ("none", 1): [SuiteRow("clean", "clean", 82.0, 10), SuiteRow("blur", "sigma=1", 72.0, 10, "sigma", 1.0)],
             ("finetune", 0): [SuiteRow("clean", "clean", 79.0, 10),
                               SuiteRow("blur", "sigma=1", 75.0, 10, "sigma", 1.0),
                               SuiteRow("texture", "stripes", 40.0, 10, group="pattern")],
             ("finetune", 1): [SuiteRow("clean", "clean", 81.0, 10)]}
    out = tmp_path / "out"
    text = build_report(_simple_results(tmp_path / "res", cells), out)["markdown"].read_text()
    line = next(x for x in text.splitlines() if x.startswith("| digits | tinycnn | finetune |"))
    # blur mean computed from the sigma rows; finetune has it on seed 0 only
    assert "| 80.00 ± 1.41 | -1.00 ± 0.00 | 75.00 (n=1) |" in line
    assert "## Suite texture" in text and "| finetune | 1 | 40.00 |" in text


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
    assert a == b and {"README.md", "index.html", "rows.csv", "headline.csv", "headline.tex"} <= set(a)
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
    expected = _digests(committed)  # the copy of the rows under results/ included
    assert {"README.md", "index.html", "results/manifest.json"} <= set(expected)
    assert _digests(tmp_path / "quick") == expected

def test_rows_csv_holds_every_row_in_fixed_order(built):
    import pandas as pd

    from deeppatch.results import COLUMNS, read_rows

    results, _, written = built
    frame = pd.read_csv(written["rows_csv"])
    assert list(frame.columns) == list(COLUMNS) and len(frame) == len(read_rows(results))
    assert list(frame["dataset"] + frame["model"]) == sorted(frame["dataset"] + frame["model"])


def test_latex_headline_is_booktabs(built):
    tex = built[2]["latex"].read_text(encoding="utf-8")
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lllrrrrrrrrrr}", r"\textbf{",
                  r"$\Delta$ clean", r"$\pm$", r"$-$1.00", "vgg13\\_bn", "pgd-linf/eps=0.0314/steps=10", "1{,}500"):
        assert token in tex, token
    body = "\n".join(x for x in tex.splitlines() if not x.startswith("%"))
    assert body.count("{") - body.count(r"\{") == body.count("}") - body.count(r"\}")
    assert "–" not in body and "±" not in body


def test_html_is_self_contained(built):
    page = built[2]["html"].read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert "<script" not in page and "url(" not in page and "@import" not in page
    assert page.count("<img ") == 3 and '<td class="num best">' in page


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
  document.body.setAttribute("data-probe-done", String(imgs.length));
});
</script>"""


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp)
    return subprocess.run([str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium_without_missing_images(built, tmp_path):
    from PIL import Image

    page = built[2]["html"]
    # the probe runs in a copy of the page: the report itself has no scripts
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = _chromium(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'data-probe-done="3"' in done.stdout, "the page did not finish loading:\n" + done.stdout[:500]
    states = re.findall(r'data-probe="([^"]*)"', done.stdout)
    assert len(states) == 3
    for state in states:
        complete, width = state.split(":")
        assert complete == "true" and int(width) > 100, f"an image did not load: {state}"

    shot = tmp_path / "report-screenshot.png"
    done = _chromium([f"--screenshot={shot}", "--window-size=1400,2400", page.as_uri()], tmp_path)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1400, 2400)
        colours = image.convert("L").getextrema()
    assert colours[0] < 100 < colours[1]  # text and plots on a light page, not a blank render
    print(f"screenshot: {shot}")
