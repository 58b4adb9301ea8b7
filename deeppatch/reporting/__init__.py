"""Comparison reports from result rows: tables (pandas), plots (matplotlib), Markdown, HTML, CSV, LaTeX.

    from deeppatch.reporting import build_report
    paths = build_report("results/quick", "reports/quick")   # {"markdown": Path(...), "html": ..., ...}
"""

from deeppatch.reporting.build import build_report

__all__ = ["build_report"]
