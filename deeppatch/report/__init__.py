"""Comparison reports from result rows: tables (pandas), plots (matplotlib), Markdown, HTML, CSV, LaTeX.

    from deeppatch.report import build_report
    paths = build_report("results/quick", "reports/quick")   # {"markdown": Path(...), "html": ..., ...}

Importing this package stays cheap (the CLI imports it to register `deeppatch report`); pandas and
matplotlib load when a report is built.
"""

from __future__ import annotations

from pathlib import Path


def build_report(results_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write the report of the rows under `results_dir` into `out_dir`; returns {what: path} of written files."""
    from deeppatch.report.build import build_report as build

    return build(results_dir, out_dir)


__all__ = ["build_report"]
