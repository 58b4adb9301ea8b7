"""The report as GitHub-flavoured Markdown (README-ready; plots linked relatively as plots/<name>.png)."""

from __future__ import annotations

from deeppatch.reporting.cells import NUMERIC_LABELS, Cell, Table
from deeppatch.reporting.content import Report

REGENERATE = ("Regenerate with `deeppatch report <results folder> -o <this folder>`: the same rows give "
              "byte-identical files.")


def render(report: Report) -> str:
    lines = [f"# {report.title}", ""]
    lines += [f"- **{key}**: {_escape(value)}" for key, value in report.header]
    lines.append("")
    if report.headline is not None:
        lines += ["## Headline", "", _escape(report.headline.note), "", *table_lines(report.headline), ""]
    if report.plots:
        lines += ["## Plots", ""]
        for plot in report.plots:
            lines += [f"![{plot.caption}]({plot.relpath})", "", f"*{plot.caption}*", ""]
    for section in report.sections:
        lines += [f"## {section.title}", ""]
        if section.tables:
            lines += [_escape(section.tables[0].note), ""]
        for table in section.tables:
            lines += [f"### {_escape(table.title)}", "", *table_lines(table), ""]
    if report.files:
        lines += ["## Files", ""]
        lines += [f"- [`{path}`]({path}): {_escape(what)}" for path, what in report.files]
        lines.append("")
    lines += [REGENERATE, ""]
    return "\n".join(lines)


def table_lines(table: Table) -> list[str]:
    names = table.label_names + [c.name for c in table.columns]
    align = ["---:" if n in NUMERIC_LABELS else ":---" for n in table.label_names] + ["---:"] * len(table.columns)
    out = ["| " + " | ".join(_escape(n) for n in names) + " |", "| " + " | ".join(align) + " |"]
    for labels, cells, _ in table.rows():
        out.append("| " + " | ".join([_escape(v) for v in labels] + [_cell(c) for c in cells]) + " |")
    return out


def _cell(cell: Cell) -> str:
    text = cell.value + (f" ± {cell.std}" if cell.std else "")
    if cell.best:
        text = f"**{text}**"
    return text + (f" ({cell.note})" if cell.note else "")


def _escape(text: str) -> str:
    """Keep table pipes, emphasis and HTML characters literal (intraword "_" is literal in GFM already)."""
    out = str(text).replace("\\", "\\\\").replace("|", "\\|")
    for ch in "*`<":
        out = out.replace(ch, "\\" + ch)
    return out
