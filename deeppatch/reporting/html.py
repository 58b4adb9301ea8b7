"""The report as one self-contained HTML page: inline CSS, plots embedded as base64 data URIs, no scripts,
no external resources, so the file can be mailed or opened offline and still shows everything.

Tables fit a 1400 px window without horizontal scrolling: headers wrap, each number's interval and test
sit on their own small lines under it, long corrector names wrap, and a table's dataset / model is a
heading row instead of two columns.
"""

from __future__ import annotations

import base64
from html import escape

from deeppatch.reporting.cells import NUMERIC_LABELS, Cell, Table
from deeppatch.reporting.content import Report
from deeppatch.reporting.tables import Section

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2rem auto;
       max-width: 1400px; padding: 0 1rem; color: #1a1a1a; line-height: 1.45; box-sizing: border-box; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05rem; margin-bottom: .4rem; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem; font-size: .9rem; }
dl.header dt { font-weight: 600; } dl.header dd { margin: 0; overflow-wrap: anywhere; }
ul.takeaways { font-size: 1.02rem; max-width: 75rem; padding-left: 1.2rem; }
ul.takeaways li { margin: .3rem 0; }
p.note, ul.legend { color: #444; font-size: .85rem; max-width: 80rem; }
ul.legend { padding-left: 1.2rem; margin-top: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .82rem; margin: .4rem 0 .6rem; }
th, td { padding: .25rem .45rem; border-bottom: 1px solid #e3e3e3; vertical-align: top; }
thead th { border-bottom: 2px solid #555; text-align: left; vertical-align: bottom; white-space: normal;
           max-width: 7.5rem; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
td.label { max-width: 15rem; overflow-wrap: break-word; }
tr.block th { text-align: left; background: #f2f2f2; border-top: 2px solid #999; font-weight: 600; }
tr.block-start td { border-top: 2px solid #999; }
td.best { background: #e8f4e8; } td.best .v { font-weight: 700; }
td .ci, td .p { display: block; font-size: .78em; color: #555; line-height: 1.2; }
td.sig .p { color: #0b6b2f; font-weight: 600; }
span.note { display: block; color: #888; font-size: .75em; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #444; font-size: .9rem; }
""".strip()


def render(report: Report) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{escape(report.title)}</title>", f"<style>\n{STYLE}\n</style>", "</head>", "<body>",
           f"<h1>{escape(report.title)}</h1>", '<dl class="header">']
    for key, value in report.header:
        out.append(f"<dt>{escape(key)}</dt><dd>{escape(value)}</dd>")
    out.append("</dl>")
    if report.headline is not None or report.takeaways:
        out.append('<h2 id="headline">Headline</h2>')
        if report.takeaways:
            out += ['<ul class="takeaways">', *(f"<li>{escape(s)}</li>" for s in report.takeaways), "</ul>"]
        if report.headline is not None:
            out += [table_html(report.headline), *legend_html(report.headline),
                    f'<p class="note">{escape(report.headline.note)}</p>']
    for section in (report.leaderboard, report.switches):
        if section is not None:
            out += section_html(section)
    if report.plots:
        out.append('<h2 id="plots">Plots</h2>')
        for plot in report.plots:
            data = base64.b64encode(plot.png).decode("ascii")
            out += [f'<figure id="plot-{escape(plot.name)}">',
                    f'<img src="data:image/png;base64,{data}" alt="{escape(plot.caption)}">',
                    f"<figcaption>{escape(plot.caption)}</figcaption>", "</figure>"]
    for section in report.sections:
        out += section_html(section)
    if report.files:
        out += ['<h2 id="files">Files</h2>', "<ul>"]
        out += [f"<li><code>{escape(path)}</code>: {escape(what)}</li>" for path, what in report.files]
        out.append("</ul>")
    out += ['<p class="note">Regenerate with <code>deeppatch report &lt;results folder&gt; -o &lt;this folder&gt;'
            "</code>: the same rows give byte-identical files.</p>", "</body>", "</html>", ""]
    return "\n".join(out)


def section_html(section: Section) -> list[str]:
    out = [f'<h2 id="{escape(section.key)}">{escape(section.title)}</h2>']
    if section.caption:
        out.append(f'<p class="note">{escape(section.caption)}</p>')
    for table in section.tables:
        out += [f"<h3>{escape(table.title)}</h3>", table_html(table), *legend_html(table)]
        if table.note and table.note != section.caption:
            out.append(f'<p class="note">{escape(table.note)}</p>')
    return out


def legend_html(table: Table) -> list[str]:
    if not table.legend:
        return []
    items = [f"<li><b>{escape(short)}</b>: {escape(full)}</li>" for short, full in table.legend]
    return ['<ul class="legend">', *items, "</ul>"]


def table_html(table: Table) -> str:
    numeric = [n in NUMERIC_LABELS for n in table.label_names]
    head = "".join(f'<th class="num">{escape(n)}</th>' if num else f"<th>{escape(n)}</th>"
                   for n, num in zip(table.label_names, numeric, strict=True))
    head += "".join(f'<th class="num">{_header(table.header(c))}</th>' for c in table.columns)
    width = len(table.label_names) + len(table.columns)
    out = [f'<div class="scroll"><table id="table-{escape(table.key)}">', f"<thead><tr>{head}</tr></thead>",
           "<tbody>"]
    for labels, cells, new_block, block in table.rows():
        if block:
            out.append(f'<tr class="block"><th colspan="{width}">{escape(block)}</th></tr>')
        cls = ' class="block-start"' if new_block and not block else ""
        tds = "".join(f'<td class="num">{escape(v)}</td>' if num else f'<td class="label">{_breakable(v)}</td>'
                      for v, num in zip(labels, numeric, strict=True))
        tds += "".join(_cell(c) for c in cells)
        out.append(f"<tr{cls}>{tds}</tr>")
    out += ["</tbody>", "</table></div>"]
    return "\n".join(out)


def _header(text: str) -> str:
    """A column header that may wrap inside long names (routing_accuracy, pgd-linf/eps=...), not mid-word."""
    return escape(text).replace("_", "_<wbr>").replace("/", "/<wbr>")


def _breakable(text: str) -> str:
    """A label that may wrap after "+" and before "[" or "(" (long corrector names: finetune+switch[auto])."""
    out = escape(text).replace("+", "+<wbr>")
    return out.replace("[", "<wbr>[").replace(" (", " <wbr>(")


def _cell(cell: Cell) -> str:
    classes = ["num"] + (["best"] if cell.best else []) + (["sig"] if cell.significant else [])
    text = f'<span class="v">{escape(cell.value)}</span>'
    if cell.interval:
        text += f'<span class="ci">{escape(cell.interval)}</span>'
    if cell.test:
        text += f'<span class="p">{escape(cell.test)}</span>'
    if cell.note:
        text += f'<span class="note">{escape(cell.note)}</span>'
    return f'<td class="{" ".join(classes)}">{text}</td>'
