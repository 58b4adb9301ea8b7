"""The `deeppatch report` sub-command."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from deeppatch.reporting.build import build_report, default_name

DESCRIPTION = ("Turn the result rows of a benchmark run into a comparison report: headline and per-condition "
               "tables, plots, README.md, a self-contained index.html, CSV and a LaTeX headline table. "
               "The same rows always give byte-identical files.")


def register(sub: argparse._SubParsersAction, add_common: Callable[..., None]) -> None:
    """Add `deeppatch report RESULTS [-o OUT]` (the stage flags of `add_common` do not apply here)."""
    p = sub.add_parser("report", help="build a comparison report (tables, plots, Markdown/HTML/LaTeX) from results",
                       description=DESCRIPTION)
    p.add_argument("results", metavar="RESULTS", help="results folder written by `deeppatch bench` (holds rows/)")
    p.add_argument("-o", "--output", "--out", dest="out", metavar="OUT", default=None,
                   help="report folder (default: reports/<benchmark name from manifest.json, else RESULTS' name>)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path("reports") / default_name(args.results)
    written = build_report(args.results, out)
    print(f"report: {written['markdown']}")
    print(f"html:   {written['html']}")
    for key in sorted(written):
        if key not in ("markdown", "html") and not key.startswith("snapshot_"):
            print(f"  {key}: {written[key]}")
    copied = sum(key.startswith("snapshot_") for key in written)
    if copied:
        print(f"  the {copied} input files (manifest, rows, samples, failures) copied to {out / 'results'}")
    return 0
