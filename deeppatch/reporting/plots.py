"""The report's plots as PNG bytes (matplotlib, Agg canvas, no pyplot state).

Byte-identical output for the same rows: matplotlib's default style (not the user's matplotlibrc), fixed
sizes and dpi, sorted orders, and no "Software" entry in the PNG metadata.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from types import MappingProxyType

import numpy as np
import pandas as pd

from deeppatch.reporting.frame import AGGREGATE, REFERENCE
from deeppatch.reporting.tables import blocks

DPI = 100
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)), (0, (3, 1)))
PLOT_FILES = MappingProxyType({"clean_vs_robust": "clean_vs_robust.png", "blur_curves": "blur_curves.png",
              "corruption_curves": "corruption_curves.png"})
TITLES = MappingProxyType({"clean_vs_robust": "Clean vs robust accuracy (Pareto front per model)",
          "blur_curves": "Accuracy vs blur sigma",
          "corruption_curves": "Accuracy vs corruption severity"})


def plot_all(df: pd.DataFrame, entries: pd.DataFrame) -> dict[str, bytes]:
    """Plot name -> PNG bytes, for the plots the rows allow."""
    import matplotlib  # lazy: matplotlib, only to draw
    import matplotlib.style  # lazy: matplotlib, only to draw

    colours = corrector_colours(entries)
    out = {}
    with matplotlib.rc_context(), matplotlib.style.context("default"):
        for name, make in (("clean_vs_robust", clean_vs_robust), ("blur_curves", blur_curves),
                           ("corruption_curves", corruption_curves)):
            fig = make(df, entries, colours)
            if fig is not None:
                out[name] = to_png(fig)
    return out


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def corrector_colours(entries: pd.DataFrame) -> dict[str, str]:
    """A fixed colour per corrector label (black for the model under maintenance)."""
    import matplotlib  # lazy: matplotlib, only to draw

    palette = matplotlib.colormaps["tab10" if entries["label"].nunique() <= 11 else "tab20"]
    colours, i = {}, 0
    for label, ref in entries[["label", "reference"]].drop_duplicates("label").to_numpy():
        if ref:
            colours[label] = "#000000"
        else:
            colours[label] = matplotlib.colors.to_hex(palette(i % palette.N))
            i += 1
    return colours


def _figure(n_panels: int, ncols: int = 3, size: tuple[float, float] = (5.2, 4.0)):
    """A grid of panels with fixed margins in inches (a layout engine costs more than the drawing)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib, only to draw
    from matplotlib.figure import Figure  # lazy: matplotlib, only to draw

    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    width, height = size[0] * ncols, size[1] * nrows
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    left, right, bottom, top, gap_w, gap_h = 0.75, 0.2, 0.6, 0.4, 0.85, 0.95  # inches
    axes_w = (width - left - right - gap_w * (ncols - 1)) / ncols
    axes_h = (height - bottom - top - gap_h * (nrows - 1)) / nrows
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=gap_w / axes_w, hspace=gap_h / axes_h)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _seed_stats(values: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """mean, std (0 for one seed) per `by` of the per-seed 'value' column."""
    g = values.groupby(list(by))["value"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0)}).reset_index()


def _per_seed(rows: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    return rows.groupby(["entry", "seed", *by])["value"].mean().reset_index()


# ---------------------------------------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another (higher or equal in both, higher in one), sorted by x."""
    front = []
    for x, y in points:
        dominated = any(x2 >= x and y2 >= y and (x2 > x or y2 > y) for x2, y2 in points)
        if not dominated and (x, y) not in front:
            front.append((x, y))
    return sorted(front)


def _robust_measures(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(axis name, per-seed rows with 'value') for blur mean and corruption mean, where present."""
    out = []
    for suite, name in (("blur", "blur mean"), ("corruptions", "corruption mean")):
        rows = df[(df["suite"] == suite) & (df["metric"] == "accuracy") & df["value"].notna()]
        if rows.empty:
            continue
        stored = rows[rows["condition"] == "mean"]
        computed = rows[rows["group"] != AGGREGATE].groupby(["entry", "seed"])["value"].mean()
        per = stored.groupby(["entry", "seed"])["value"].mean().combine_first(computed)
        out.append((name, per.reset_index()))
    return out


def clean_vs_robust(df: pd.DataFrame, entries: pd.DataFrame, colours: dict[str, str]):
    clean = df[(df["suite"] == "clean") & (df["condition"] == "clean") & (df["metric"] == "accuracy")]
    clean = clean.groupby("entry")["value"].mean()
    measures = _robust_measures(df)
    datasets = sorted(set(df["dataset"]))
    if clean.empty or not measures:
        return None
    fig, axes = _figure(len(datasets) * len(measures), ncols=len(measures), size=(6.0, 4.6))
    models = sorted(set(df["model"]))
    for i, dataset in enumerate(datasets):
        for j, (name, per) in enumerate(measures):
            ax = axes[i * len(measures) + j]
            robust = per.groupby("entry")["value"].mean()
            shown_labels, shown_models, fronts = [], [], []
            for k, model in enumerate(models):
                ids = [e for e in entries.index[(entries["dataset"] == dataset) & (entries["model"] == model)]
                       if e in clean.index and e in robust.index]
                if not ids:
                    continue
                shown_models.append(k)
                pts = [(float(clean[e]), float(robust[e])) for e in ids]
                for e, (x, y) in zip(ids, pts, strict=True):
                    label = entries.loc[e, "label"]
                    shown_labels.append(label)
                    ax.scatter([x], [y], color=colours[label], marker=MARKERS[k % len(MARKERS)], s=55,
                               edgecolors="black", linewidths=0.5, zorder=3)
                front = pareto_front(pts)
                if len(front) > 1:
                    fronts.append(k)
                    ax.plot(*zip(*front, strict=True), color="0.45", linestyle=LINESTYLES[k % len(LINESTYLES)],
                            linewidth=1.2, zorder=2)
            ax.set_title(f"{dataset}: clean vs {name}", fontsize=10)
            ax.set_xlabel("clean accuracy (%)")
            ax.set_ylabel(f"{name} accuracy (%)")
            ax.grid(True, alpha=0.3)
            handles = _scatter_legend(list(dict.fromkeys(shown_labels)), colours, shown_models, fronts, models)
            if handles:
                ax.legend(handles=handles, fontsize=7, loc="best")
    return fig


def _scatter_legend(labels: list[str], colours: dict[str, str], shown_models: list[int], fronts: list[int],
                    models: list[str]) -> list:
    """Colour = corrector, marker = model, dashes = that model's Pareto front."""
    from matplotlib.lines import Line2D  # lazy: matplotlib, only to draw

    handles = [Line2D([], [], linestyle="none", marker="o", markersize=7, markerfacecolor=colours[lab],
                      markeredgecolor="black", markeredgewidth=0.5, label=lab) for lab in labels]
    if len(shown_models) > 1 or fronts:
        handles += [Line2D([], [], linestyle="none", marker=MARKERS[k % len(MARKERS)], markersize=7,
                           markerfacecolor="0.8", markeredgecolor="black", label=models[k]) for k in shown_models]
    handles += [Line2D([], [], color="0.45", linestyle=LINESTYLES[k % len(LINESTYLES)],
                       label=f"Pareto front · {models[k]}") for k in fronts]
    return handles


def _curves(df: pd.DataFrame, entries: pd.DataFrame, colours: dict[str, str],
            points: Callable[[pd.DataFrame], pd.DataFrame], xlabel: str, title: str):
    """One panel per dataset/model; one line (mean, ± std band) per entry over x."""
    panels = [(d, m, points(df[(df["dataset"] == d) & (df["model"] == m)])) for d, m in blocks(df)]
    panels = [p for p in panels if not p[2].empty]
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    for ax, (dataset, model, per) in zip(axes, panels, strict=True):
        stats = _seed_stats(per, ["entry", "x"])
        for entry, line in stats.groupby("entry", sort=True):
            line = line.sort_values("x")
            label = entries.loc[entry, "label"]
            x, mean, std = (line[c].to_numpy(dtype=float) for c in ("x", "mean", "std"))
            ref = entries.loc[entry, "corrector"] == REFERENCE
            ax.plot(x, mean, marker="o", markersize=3.5, color=colours[label], label=label,
                    linestyle="--" if ref else "-", linewidth=1.4)
            if np.any(std > 0):
                ax.fill_between(x, mean - std, mean + std, color=colours[label], alpha=0.15, linewidth=0)
        ax.set_title(f"{dataset} / {model}: {title}", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")  # accuracy falls with strength: lower left stays free
    return fig


def _with_clean(sub: pd.DataFrame, per: pd.DataFrame) -> pd.DataFrame:
    """Prepend clean accuracy at x = 0 for entries that have a curve."""
    clean = sub[(sub["suite"] == "clean") & (sub["condition"] == "clean") & (sub["metric"] == "accuracy")
                & sub["value"].notna() & sub["entry"].isin(set(per["entry"]))]
    clean = clean.groupby(["entry", "seed"])["value"].mean().reset_index().assign(x=0.0)
    return pd.concat([clean, per], ignore_index=True) if not clean.empty else per


def _blur_points(sub: pd.DataFrame) -> pd.DataFrame:
    rows = sub[(sub["suite"] == "blur") & (sub["metric"] == "accuracy") & (sub["group"] != AGGREGATE)
               & sub["value"].notna() & sub["severity"].notna()]
    if rows.empty:
        return rows
    return _with_clean(sub, _per_seed(rows, ["severity"]).rename(columns={"severity": "x"}))


def _corruption_points(sub: pd.DataFrame) -> pd.DataFrame:
    """Mean over corruptions at each severity, per seed (clean at severity 0)."""
    rows = sub[(sub["suite"] == "corruptions") & (sub["metric"] == "accuracy") & (sub["group"] != AGGREGATE)
               & sub["value"].notna() & sub["severity"].notna()]
    if rows.empty:
        return rows
    return _with_clean(sub, _per_seed(rows, ["severity"]).rename(columns={"severity": "x"}))


def blur_curves(df: pd.DataFrame, entries: pd.DataFrame, colours: dict[str, str]):
    return _curves(df, entries, colours, _blur_points, "blur sigma (0 = clean)", "accuracy vs blur sigma")


def corruption_curves(df: pd.DataFrame, entries: pd.DataFrame, colours: dict[str, str]):
    return _curves(df, entries, colours, _corruption_points, "corruption severity (0 = clean; mean over corruptions)",
                   "accuracy vs corruption severity")
