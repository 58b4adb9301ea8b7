"""The report as GitHub-flavoured Markdown (README-ready; plots linked relatively as plots/<name>.png)."""

from __future__ import annotations

import re

from deeppatch.reporting.cells import NUMERIC_LABELS, Cell, Table
from deeppatch.reporting.content import Report
from deeppatch.reporting.tables import Section

REGENERATE = ("Regenerate with `deeppatch report <results folder> -o <this folder>`: the same rows give "
              "byte-identical files.")


def render(report: Report) -> str:
    lines = [f"# {report.title}", ""]
    lines += [f"- **{key}**: {_escape(value)}" for key, value in report.header]
    lines.append("")
    if report.headline is not None or report.takeaways:
        lines += ["## Headline", ""]
        if report.takeaways:
            lines += [f"- {_escape(s)}" for s in report.takeaways]
            lines.append("")
        if report.headline is not None:
            lines += [*table_lines(report.headline), "", *legend_lines(report.headline),
                      f"*{_escape(report.headline.note)}*", ""]
    for section in (report.leaderboard, report.switches):
        if section is not None:
            lines += section_lines(section)
    if report.plots:
        lines += ["## Plots", ""]
        for plot in report.plots:
            lines += [f"![{plot.caption}]({plot.relpath})", "", f"*{plot.caption}*", ""]
    for section in report.sections:
        lines += section_lines(section)
    if report.files:
        lines += ["## Files", ""]
        lines += [f"- [`{path}`]({path}): {_escape(what)}" for path, what in report.files]
        lines.append("")
    lines += [REGENERATE, ""]
    return "\n".join(lines)


def section_lines(section: Section) -> list[str]:
    lines = [f"## {section.title}", ""]
    if section.caption:
        lines += [_escape(section.caption), ""]
    for table in section.tables:
        lines += [f"### {_escape(table.title)}", "", *table_lines(table), "", *legend_lines(table)]
        if table.note and table.note != section.caption:
            lines += [f"*{_escape(table.note)}*", ""]
    return lines


def legend_lines(table: Table) -> list[str]:
    if not table.legend:
        return []
    return [*(f"- **{_escape(short)}**: {_escape(full)}" for short, full in table.legend), ""]


def table_lines(table: Table) -> list[str]:
    names = table.label_names + [table.header(c) for c in table.columns]
    align = ["---:" if n in NUMERIC_LABELS else ":---" for n in table.label_names] + ["---:"] * len(table.columns)
    out = ["| " + " | ".join(_escape(n) for n in names) + " |", "| " + " | ".join(align) + " |"]
    for labels, cells, _, block in table.rows():
        if block:
            out.append("| " + " | ".join([f"**{_escape(block)}**"] + [""] * (len(names) - 1)) + " |")
        out.append("| " + " | ".join([_escape(v) for v in labels] + [_cell(c) for c in cells]) + " |")
    return out


def _cell(cell: Cell) -> str:
    text = f"**{cell.value}**" if cell.best else cell.value
    text += f" {cell.interval}" if cell.interval else ""
    text += f" {cell.test}" if cell.test else ""
    return text + (f" ({cell.note})" if cell.note else "")


def _escape(text: str) -> str:
    """Keep table pipes, emphasis and HTML characters literal (intraword "_" is literal in GFM already)."""
    out = str(text).replace("\\", "\\\\").replace("|", "\\|")
    for ch in "*`":
        out = out.replace(ch, "\\" + ch)
    return re.sub(r"<(?=[A-Za-z/!?])", r"\\<", out)  # "p < 0.01" stays as it is: no tag can start there
