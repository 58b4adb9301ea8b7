"""`build_report`: result rows in, a report folder out (Markdown, HTML, CSV, LaTeX, PNG plots).

    <out_dir>/README.md        the report in Markdown, plots linked relatively
    <out_dir>/index.html       the same report as one self-contained page (plots embedded)
    <out_dir>/rows.csv         every result row, in a fixed order
    <out_dir>/headline.csv     the headline table's numbers, tidy: one row per entry x metric (mean, interval,
                               n, seeds, p, significant, best)
    <out_dir>/leaderboard.csv  the ranked leaderboard, one row per corrector and dataset/model
    <out_dir>/headline.tex     the headline table in booktabs LaTeX
    <out_dir>/plots/*.png      clean vs robust scatter, blur curves, corruption curves
    <out_dir>/results/         a copy of the rows, per-sample data, manifest.json and failures the report was
                               built from

Every file is a pure function of the rows and manifest.json, so the same results regenerate the same bytes,
and the copy under results/ lets anyone rebuild a report folder from itself:
``deeppatch report reports/NAME/results -o reports/NAME``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from deeppatch.code_identity import module_code_hash
from deeppatch.errors import DeepPatchError
from deeppatch.reporting import html, latex, markdown
from deeppatch.reporting.content import PLOTS_DIR, Plot, Report
from deeppatch.reporting.frame import entry_table, prepare, sorted_rows
from deeppatch.reporting.header import benchmark_name, header_items
from deeppatch.reporting.leaderboard import criterion, leaderboard_section
from deeppatch.reporting.leaderboard import to_frame as leaderboard_frame
from deeppatch.reporting.plots import PLOT_FILES, TITLES, plot_all
from deeppatch.reporting.samples import load_samples
from deeppatch.reporting.switches import switch_section
from deeppatch.reporting.tables import has_switch_strategies, headline, sections
from deeppatch.reporting.takeaways import takeaways
from deeppatch.results import read_manifest, read_rows_by_cell, rows_to_frame
from deeppatch.storage import atomic_write_bytes, atomic_write_json, atomic_write_text

SNAPSHOT_DIR = "results"
SNAPSHOT_PARTS = (("manifest.json", None), ("rows", "*.jsonl"), ("samples", "*.json"), ("failures", "*.json"))
DATA_FILES = (("rows.csv", "every result row (all columns), sorted by dataset, model, corrector, seed, suite, "
                           "condition"),
              ("headline.csv", "the headline's numbers, tidy: one row per entry and metric with mean, ci_low, "
                               "ci_high, ci_method, n (test images), seeds, p (Holm-adjusted), significant, best"),
              ("leaderboard.csv", "the leaderboard: one row per corrector and dataset/model with rank, status and "
                                  "the ranked metric, clean accuracy and their changes (intervals, p)"),
              ("headline.tex", "the headline table in LaTeX (booktabs)"))
HEADLINE_FILES = ("headline.csv", "headline.tex", "leaderboard.csv")


def write_file(data: bytes | str, path: Path) -> Path:
    """Atomic write (temp file + rename): a reader or a killed run never sees half a file."""
    if isinstance(data, str):
        return atomic_write_text(data, path)
    return atomic_write_bytes(data, path)


def output_dir(out_dir: str | Path) -> Path:
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepPatchError(f"cannot create report folder {str(path)!r}: {exc.strerror}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise DeepPatchError(f"report folder {str(path)!r} is not writable")
    return path


def check_results_dir(results_dir: str | Path) -> Path:
    """The results folder, or one clear error when it is missing or not a folder."""
    path = Path(results_dir)
    if not path.exists():
        raise DeepPatchError(f"results folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise DeepPatchError(f"results folder {str(path)!r} is not a folder")
    return path


def load_manifest(results_dir: Path) -> dict:
    try:
        manifest = read_manifest(results_dir)
    except json.JSONDecodeError as exc:
        raise DeepPatchError(f"{str(results_dir / 'manifest.json')!r} is not valid JSON: {exc}") from exc
    return manifest if isinstance(manifest, dict) else {}


def snapshot_results(results: Path, target: Path) -> dict[str, Path]:
    """Copy the inputs of the report (manifest, rows, per-sample data, failures) into the report folder, exactly.

    Files the source no longer has are removed, so the copy never mixes two runs. Building from the
    copy itself (the regeneration command) leaves it as it is.
    """
    if target.exists() and results.resolve() == target.resolve():
        return {}
    written: dict[str, Path] = {}
    for name, pattern in SNAPSHOT_PARTS:
        source, dest = results / name, target / name
        if pattern is None:
            if source.is_file():
                written[f"snapshot_{name}"] = write_file(source.read_bytes(), dest)
            else:
                dest.unlink(missing_ok=True)
            continue
        keep = {p.name for p in source.glob(pattern)} if source.is_dir() else set()
        for stale in (dest.glob(pattern) if dest.is_dir() else ()):
            if stale.name not in keep:
                stale.unlink()
        for file in sorted(keep):
            written[f"snapshot_{name}/{file}"] = write_file((source / file).read_bytes(), dest / file)
    return written


def heldout_setting(manifest: dict) -> list[str]:
    """The corruptions suite's `heldout` types, from the spec recorded in the manifest (empty if none)."""
    spec = manifest.get("spec_content") if isinstance(manifest, dict) else None
    suites = spec.get("suites") if isinstance(spec, dict) else None
    corruptions = suites.get("corruptions") if isinstance(suites, dict) else None
    value = corruptions.get("heldout") if isinstance(corruptions, dict) else None
    return [str(v) for v in value] if isinstance(value, list) else []


def default_name(results_dir: str | Path) -> str:
    """The benchmark name a report folder is named after: the manifest's, else the results folder's."""
    path = check_results_dir(results_dir)
    name = benchmark_name(load_manifest(path), None, path)
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip(".") or "report"


def build_report(results_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write the report of the rows under `results_dir` into `out_dir`; returns {what: path} of written files."""
    results = check_results_dir(results_dir)
    by_cell = read_rows_by_cell(results)
    frame = rows_to_frame([row for rows in by_cell.values() for row in rows])
    if frame.empty:
        raise DeepPatchError(f"no result rows under {str(results)!r} (rows/ holds no rows)")
    manifest = load_manifest(results)
    df = prepare(frame)
    entries = entry_table(df)
    samples = load_samples(results, by_cell, df)
    name = benchmark_name(manifest, frame, results)
    failures = sorted(p.stem for p in (results / "failures").glob("*.json")) if (results / "failures").is_dir() else []
    header = header_items(df, manifest, name, failures, samples)

    head = headline(df, entries, samples, heldout=heldout_setting(manifest))
    board, ranked = leaderboard_section(head, criterion(manifest))
    plots = tuple(Plot(key, PLOT_FILES[key], TITLES[key], png) for key, png in plot_all(df, entries).items())
    wanted = {"headline.csv": head is not None, "headline.tex": head is not None, "leaderboard.csv": bool(ranked)}
    files = [(f, what) for f, what in DATA_FILES if wanted.get(f, True)]
    report = Report(f"DeepPatch Bench report: {name}", tuple(header),
                    takeaways(head, ranked, has_switch_strategies(df)), head, board,
                    switch_section(df, entries, samples), tuple(sections(df, entries, samples)), plots, tuple(files))

    out = output_dir(out_dir)
    written: dict[str, Path] = {}
    rows_csv = sorted_rows(frame).to_csv(index=False, lineterminator="\n")
    written["rows_csv"] = write_file(rows_csv, out / "rows.csv")
    if head is not None:
        written["headline_csv"] = write_file(head.to_frame().to_csv(index=False, lineterminator="\n"),
                                             out / "headline.csv")
        written["latex"] = write_file(latex.render(head, name, header), out / "headline.tex")
    if ranked:
        written["leaderboard_csv"] = write_file(leaderboard_frame(head, ranked).to_csv(index=False,
                                                                                      lineterminator="\n"),
                                                out / "leaderboard.csv")
    for stale in HEADLINE_FILES:
        if not wanted[stale]:
            (out / stale).unlink(missing_ok=True)
    for plot in plots:
        written[f"plot_{plot.name}"] = write_file(plot.png, out / plot.relpath)
    for key, file in PLOT_FILES.items():  # plots an earlier report had but these rows do not allow
        if key not in {p.name for p in plots}:
            (out / PLOTS_DIR / file).unlink(missing_ok=True)
    written.update(snapshot_results(results, out / SNAPSHOT_DIR))
    written["markdown"] = write_file(markdown.render(report), out / "README.md")
    written["html"] = write_file(html.render(report), out / "index.html")
    return written


# --------------------------------------------------------------------------------------------
# a report keyed by what produced it: `deeppatch bench` rebuilds it only when that changed

REPORT_STAMP = Path("cache") / "report.json"  # under the results folder


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def report_key(results: Path) -> str:
    """What a report is a function of: the bytes of its input files and the reporting code."""
    h = hashlib.sha256()
    for name, pattern in SNAPSHOT_PARTS:
        source = results / name
        files = [source] if pattern is None else (sorted(source.glob(pattern)) if source.is_dir() else [])
        for file in files:
            if file.is_file():
                h.update(f"{name}/{file.name}\0{_digest(file)}\0".encode())
    h.update(module_code_hash("deeppatch.reporting.build").encode())
    return h.hexdigest()[:16]


def build_report_if_changed(results_dir: str | Path, out_dir: str | Path) -> tuple[dict[str, Path], bool]:
    """`build_report`, unless the report in `out_dir` was built from the same inputs by the same code and
    its files are unchanged on disk (their digests are recorded). Returns (files, rebuilt?)."""
    results = check_results_dir(results_dir)
    out = Path(out_dir)
    key = report_key(results)
    stamp = results / REPORT_STAMP
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        files = {what: out / rel for what, (rel, _) in recorded["files"].items()}
        if (recorded["key"] == key and recorded["out"] == str(out.resolve())
                and all(files[w].is_file() and _digest(files[w]) == d for w, (_, d) in recorded["files"].items())):
            return files, False
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no stamp, or an unreadable one: build
    written = build_report(results, out)
    atomic_write_json({"key": key, "out": str(out.resolve()),
                       "files": {w: [str(p.relative_to(out)), _digest(p)] for w, p in written.items()}}, stamp)
    return written, True
