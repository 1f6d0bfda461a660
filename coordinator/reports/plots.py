"""The three plots of the HTML report, drawn from the aggregates (never one mark per record):
bars per cell across hardware classes, sweep-bench curves, and an A/B forest plot.

matplotlib's object API (Figure + Agg) rather than pyplot: no global backend switch and no
figure registry, so a library call cannot leak state into its caller. Text is drawn as
plain text: a label holding `$...$` (a class name, a params value) is not parsed as math,
which raised on anything that is not valid TeX.
"""
from __future__ import annotations

import functools
import io
import math
import textwrap
from dataclasses import dataclass

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from coordinator.matrix.display import display
from .model import METRIC_TITLES, Report

CELLS_PER_BAR_CHART = 12
MAX_BAR_CHARTS = 8          # per metric
MAX_SWEEP_CHARTS = 12
MAX_SWEEP_SERIES = 16
MAX_FOREST_ROWS = 60
VERDICT_COLORS = {"slower": "#c0392b", "faster": "#27ae60", "same": "#7f8c8d", "unknown": "#e67e22",
                  "same binary": "#2980b9", "not compared": "#bdc3c7"}


def _plain_text(draw):
    """Run ``draw`` with matplotlib's mathtext off for every text it creates."""
    @functools.wraps(draw)
    def wrapped(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)
    return wrapped


@dataclass
class Plot:
    title: str
    how_to_read: str
    png: bytes
    note: str = ""


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return buf.getvalue()


def _short(text: str, limit: int = 38) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _tick_label(report: Report, params: dict) -> str:
    """One key=value per line, long ones wrapped, so neighbouring labels don't collide."""
    keys = [k for k in (report.varying or report.axes) if k in params]
    return "\n".join(textwrap.fill(f"{k}={display(params[k])}", 20) for k in keys) or "all"


def _colors(n: int) -> list:
    """Distinct colours for up to 20 classes (tab20), then an evenly spaced continuous map."""
    cmap = matplotlib.colormaps["tab20" if n > 10 else "tab10"]
    if n <= 20:
        return [cmap(i) for i in range(n)]
    spread = matplotlib.colormaps["turbo"]
    return [spread(i / (n - 1)) for i in range(n)]


@_plain_text
def bar_charts(report: Report, metric: str) -> list[Plot]:
    """Grouped bars: x = cells (chunks of 12), one bar per hardware class, error bar = sd.

    Bars and whiskers are one PolyCollection / LineCollection per class rather than one
    Rectangle per bar: with 20 classes x 12 cells that is several times faster to draw."""
    keys, values = report.pivot_cells(metric)
    classes = [c for c in report.classes if any(values[c])]
    if not keys or not classes:
        return []
    chunks = [keys[i:i + CELLS_PER_BAR_CHART] for i in range(0, len(keys), CELLS_PER_BAR_CHART)]
    shown = chunks[:MAX_BAR_CHARTS]
    index = {k: i for i, k in enumerate(keys)}
    title = METRIC_TITLES.get(metric, metric)
    colors = _colors(len(classes))
    width = 0.8 / len(classes)
    plots = []
    for n, chunk in enumerate(shown, 1):
        fig = Figure(figsize=(max(6.0, 1.25 * len(chunk) + 2), 4.2))
        ax = fig.add_subplot()
        top = 0.0
        whiskers = []
        for j, hw_class in enumerate(classes):
            boxes = []
            for i, k in enumerate(chunk):
                p = values[hw_class][index[k]]
                if p is None:
                    continue
                x = i + (j - (len(classes) - 1) / 2) * width
                boxes.append([(x - width / 2, 0), (x - width / 2, p.mean), (x + width / 2, p.mean),
                              (x + width / 2, 0)])
                lo, hi = p.mean - p.sd, p.mean + p.sd
                cap = width / 4
                whiskers += [[(x, lo), (x, hi)], [(x - cap, hi), (x + cap, hi)], [(x - cap, lo), (x + cap, lo)]]
                top = max(top, hi)
            ax.add_collection(PolyCollection(boxes, facecolors=[colors[j]], edgecolors="none"))
        ax.add_collection(LineCollection(whiskers, colors="black", linewidths=0.7))
        ax.set_xlim(-0.6, len(chunk) - 0.4)
        ax.set_ylim(0, top * 1.05 or 1)
        ax.set_xticks(range(len(chunk)), [_tick_label(report, report.cells[k]) for k in chunk], fontsize=7)
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
        handles = [Patch(color=colors[j], label=_short(report.classes[c], 70)) for j, c in enumerate(classes)]
        # above the axes: below them it would collide with tall cell labels
        ax.legend(handles=handles, fontsize=7, loc="lower center", ncol=min(3, len(classes)),
                  bbox_to_anchor=(0.5, 1.01), frameon=False)
        note = ""
        if n == len(shown) and len(chunks) > len(shown):
            rest = sum(len(c) for c in chunks[len(shown):])
            note = f"{rest} more cells are not drawn; every cell is in the tables."
        plots.append(Plot(f"{title} by cell and hardware class ({n}/{len(shown)})",
                          "Each group is one cell; each bar is one hardware class's mean over all its "
                          "repetitions, the whisker its standard deviation. Compare bars within a group.",
                          _png(fig), note))
    return plots


@_plain_text
def sweep_charts(report: Report) -> list[Plot]:
    """S_PP and S_TG against N_KV, one line per ref @ class, as ik_llama.cpp users post them."""
    plots = []
    # one N_KV point is not a curve (a pasted single row): the tables show it
    entries = [e for e in report.sweeps.values() if any(len(points) > 1 for points in e["series"].values())]
    for entry in entries[:MAX_SWEEP_CHARTS]:
        series = sorted(entry["series"].items(), key=lambda kv: (report.class_display(kv[0][1]), kv[0][0]))
        fig = Figure(figsize=(10, 4.6))
        axes = fig.subplots(1, 2)
        drawn = series[:MAX_SWEEP_SERIES]
        colors = _colors(len(drawn))
        whiskers: tuple[list, list] = ([], [])
        whisker_colors: tuple[list, list] = ([], [])
        for color, ((ref, hw_class), points) in zip(colors, drawn):
            n_kvs = sorted(points)
            label = _short(f"{ref} @ {report.class_display(hw_class)}", 70)
            for ax, i in zip(axes, (0, 1)):
                pts = [(n, points[n][i]) for n in n_kvs if points[n][i].n]
                ax.plot([n for n, _ in pts], [p.mean for _, p in pts], marker="o", markersize=3, color=color,
                        label=label)
                whiskers[i].extend([(n, p.mean - p.sd), (n, p.mean + p.sd)] for n, p in pts if p.sd)
                whisker_colors[i].extend(color for _, p in pts if p.sd)
        for ax, segs, cols in zip(axes, whiskers, whisker_colors):
            ax.add_collection(LineCollection(segs, colors=cols, linewidths=0.8))
        for ax, name in zip(axes, ("S_PP t/s (prompt processing)", "S_TG t/s (generation)")):
            ax.set_xlabel("N_KV (tokens already in the KV cache)")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(2, len(handles)))
        note = (f"{len(series) - MAX_SWEEP_SERIES} more series are not drawn."
                if len(series) > MAX_SWEEP_SERIES else "")
        plots.append(Plot(f"Sweep-bench: {report.label(entry['params'], skip=('ref',))}",
                          "Speed as the context fills: each line is one ref on one hardware class; points "
                          "are means over repetitions, whiskers their sd. A line that falls faster than "
                          "another loses more speed at long context.", _png(fig), note))
    if len(entries) > MAX_SWEEP_CHARTS:
        plots[-1].note = (plots[-1].note + f" {len(entries) - MAX_SWEEP_CHARTS} more sweep cells are "
                          "in the tables.").strip()
    return plots


def _forest_rank(c: dict) -> tuple:
    """Changes first, then the largest effects: what a reader must see if not all rows fit."""
    changed = c.get("verdict") in ("slower", "faster")
    return (not changed, -abs(math.log(c["ratio"])) if c["ratio"] > 0 else 0.0)


@_plain_text
def forest_plot(report: Report, ci_level: float = 0.95) -> list[Plot]:
    """Ratio candidate/baseline with its CI per comparison; the line at 1 means no change."""
    comps = [c for c in report.comparisons if isinstance(c.get("ratio"), (int, float))
             and math.isfinite(c["ratio"])]
    if not comps:
        return []
    rows = sorted(comps, key=_forest_rank)[:MAX_FOREST_ROWS]
    fig = Figure(figsize=(12, 1.2 + 0.24 * len(rows)))
    ax = fig.add_subplot()
    ordered = list(reversed(rows))
    colors = [VERDICT_COLORS.get(c.get("verdict"), "#34495e") for c in ordered]
    bars = [(i, [(c["ci_low"], i), (c["ci_high"], i)]) for i, c in enumerate(ordered)
            if c.get("ci_low") is not None and c.get("ci_high") is not None]
    ax.add_collection(LineCollection([seg for _, seg in bars], colors=[colors[i] for i, _ in bars], linewidths=1.6))
    ax.scatter([c["ratio"] for c in ordered], range(len(ordered)), c=colors, s=16, zorder=3)
    ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    labels = [_short(f"{c.get('cell')} · {METRIC_TITLES.get(c.get('metric'), c.get('metric'))} · "
                     f"{c.get('candidate')}/{c.get('baseline')} · {report.class_display(c.get('hardware_class'))}",
                     100) for c in reversed(rows)]
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylim(-0.8, len(rows) - 0.2)
    ax.set_xlabel(f"ratio candidate / baseline (mean), {ci_level:.0%} CI")
    handles = [Line2D([], [], marker="o", linestyle="", color=color, label=verdict)
               for verdict, color in VERDICT_COLORS.items() if any(c.get("verdict") == verdict for c in rows)]
    ax.legend(handles=handles, fontsize=7, loc="upper center", ncol=len(handles),
              bbox_to_anchor=(0.5, -0.5 / fig.get_figheight()))
    ax.grid(axis="x", alpha=0.3)
    note = (f"Showing the {len(rows)} most notable of {len(comps)} comparisons (changes first, then the "
            "largest ratios); all are in the table." if len(comps) > len(rows) else "")
    return [Plot("A/B ratios with confidence intervals",
                 "Each row is one cell on one hardware class: the dot is candidate/baseline, the bar its "
                 "CI. Left of the dashed line at 1 is slower, right is faster; a bar that crosses 1 is "
                 "not a demonstrated change. Colour is the verdict.", _png(fig), note)]
