r"""The headline table as a LaTeX `table` float in booktabs style (\toprule, \midrule, \bottomrule).

Needs \usepackage{booktabs} in the paper's preamble; nothing else (no siunitx, no colours).
"""

from __future__ import annotations

from types import MappingProxyType

from deeppatch.reporting.cells import NUMERIC_LABELS, Cell, Table

SPECIAL = MappingProxyType({
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "Δ": r"$\Delta$", "±": r"$\pm$", "σ": r"$\sigma$",
    "–": "--", "—": "---", "·": r"$\cdot$", "∞": r"$\infty$", "<": r"$<$", ">": r"$>$", "≤": r"$\le$", "≥": r"$\ge$",
})


def escape(text: str) -> str:
    return "".join(SPECIAL.get(ch, ch) for ch in str(text))


def render(table: Table, benchmark: str, provenance: list[tuple[str, str]]) -> str:
    """A complete `table` float; `provenance` goes into comment lines above it."""
    lines = [f"% Headline table of benchmark {_comment(benchmark)}, written by `deeppatch report` "
             "(needs \\usepackage{booktabs}).",
             *(f"% {key}: {_comment(value)}" for key, value in provenance)]
    spec = "".join("r" if n in NUMERIC_LABELS else "l" for n in table.label_names) + "r" * len(table.columns)
    header = [escape(n) for n in table.label_names] + [escape(table.header(c)) for c in table.columns]
    width = len(header)
    lines += [r"\begin{table}[t]", r"\centering", r"\small",
              f"\\caption{{Benchmark {escape(benchmark)}. {escape(table.note)}}}", r"\label{tab:deeppatch-headline}",
              f"\\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    for labels, cells, new_block, block in table.rows():
        if new_block or (block and lines[-1] != r"\midrule"):
            lines.append(r"\midrule")
        if block:
            lines.append(f"\\multicolumn{{{width}}}{{l}}{{\\textit{{{escape(block)}}}}} \\\\")
        lines.append(" & ".join([escape(v) for v in labels] + [_cell(c) for c in cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.legend:
        legend = "; ".join(f"{escape(short)}: {escape(full)}" for short, full in table.legend)
        lines += [r"\par\smallskip", f"{{\\footnotesize {legend}\\par}}"]
    lines += [r"\end{table}", ""]
    return "\n".join(lines)


def _cell(cell: Cell) -> str:
    if cell.missing:
        return "--"
    text = f"\\textbf{{{_number(cell.value)}}}" if cell.best else _number(cell.value)
    small = " ".join(x for x in (_interval(cell.interval), escape(cell.test)) if x)
    if small:
        text += f" {{\\scriptsize {small}}}"
    return text + (f" ({escape(cell.note)})" if cell.note else "")


def _interval(text: str) -> str:
    if not text:
        return ""
    low, high = text.strip("[]").split(", ")
    return f"[{_number(low)}, {_number(high)}]"


def _number(text: str) -> str:
    """A typographic minus; thousands separators as `{,}` so math-mode spacing cannot break them."""
    text = text.replace(",", "{,}")
    return "$-$" + text[1:] if text.startswith("-") else text


def _comment(text: str) -> str:
    return " ".join(str(text).split())
