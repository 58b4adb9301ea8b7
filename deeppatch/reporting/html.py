"""The report as one self-contained HTML page: inline CSS, plots embedded as base64 data URIs, no scripts,
no external resources, so the file can be mailed or opened offline and still shows everything."""

from __future__ import annotations

import base64
from html import escape

from deeppatch.reporting.cells import NUMERIC_LABELS, Cell, Table
from deeppatch.reporting.content import Report

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2rem auto;
       max-width: 1400px; padding: 0 1rem; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05rem; margin-bottom: .4rem; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem; }
dl.header dt { font-weight: 600; } dl.header dd { margin: 0; }
p.note { color: #444; font-size: .9rem; max-width: 70rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; margin: .4rem 0 1rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e3e3e3; white-space: nowrap; }
thead th { border-bottom: 2px solid #555; text-align: left; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.block-start td { border-top: 2px solid #999; }
td.best { font-weight: 700; background: #e8f4e8; }
span.std { color: #555; } span.note { color: #888; font-size: .8em; }
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
    if report.headline is not None:
        out += ['<h2 id="headline">Headline</h2>', f'<p class="note">{escape(report.headline.note)}</p>',
                table_html(report.headline)]
    if report.plots:
        out.append('<h2 id="plots">Plots</h2>')
        for plot in report.plots:
            data = base64.b64encode(plot.png).decode("ascii")
            out += [f'<figure id="plot-{escape(plot.name)}">',
                    f'<img src="data:image/png;base64,{data}" alt="{escape(plot.caption)}">',
                    f"<figcaption>{escape(plot.caption)}</figcaption>", "</figure>"]
    for section in report.sections:
        out.append(f'<h2 id="{escape(section.key)}">{escape(section.title)}</h2>')
        if section.tables:
            out.append(f'<p class="note">{escape(section.tables[0].note)}</p>')
        for table in section.tables:
            out += [f"<h3>{escape(table.title)}</h3>", table_html(table)]
    if report.files:
        out += ['<h2 id="files">Files</h2>', "<ul>"]
        out += [f"<li><code>{escape(path)}</code>: {escape(what)}</li>" for path, what in report.files]
        out.append("</ul>")
    out += ['<p class="note">Regenerate with <code>deeppatch report &lt;results folder&gt; -o &lt;this folder&gt;'
            "</code>: the same rows give byte-identical files.</p>", "</body>", "</html>", ""]
    return "\n".join(out)


def table_html(table: Table) -> str:
    numeric = [n in NUMERIC_LABELS for n in table.label_names]
    head = "".join(f'<th class="num">{escape(n)}</th>' if num else f"<th>{escape(n)}</th>"
                   for n, num in zip(table.label_names, numeric, strict=True))
    head += "".join(f'<th class="num">{escape(c.name)}</th>' for c in table.columns)
    out = [f'<div class="scroll"><table id="table-{escape(table.key)}">', f"<thead><tr>{head}</tr></thead>",
           "<tbody>"]
    for labels, cells, new_block in table.rows():
        cls = ' class="block-start"' if new_block else ""
        tds = "".join(f'<td class="num">{escape(v)}</td>' if num else f"<td>{escape(v)}</td>"
                      for v, num in zip(labels, numeric, strict=True))
        tds += "".join(_cell(c) for c in cells)
        out.append(f"<tr{cls}>{tds}</tr>")
    out += ["</tbody>", "</table></div>"]
    return "\n".join(out)


def _cell(cell: Cell) -> str:
    text = escape(cell.value)
    if cell.std:
        text += f' <span class="std">± {escape(cell.std)}</span>'
    if cell.note:
        text += f' <span class="note">({escape(cell.note)})</span>'
    return f'<td class="num best">{text}</td>' if cell.best else f'<td class="num">{text}</td>'
