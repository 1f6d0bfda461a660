"""The three plots of the HTML report, drawn from the aggregates (never one mark per record):
bars per cell across hardware classes, sweep-bench curves, and an A/B forest plot.

matplotlib's object API (Figure + Agg) rather than pyplot: no global backend switch and no
figure registry, so a library call cannot leak state into its caller.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .model import METRIC_TITLES, Report

CELLS_PER_BAR_CHART = 12
MAX_BAR_CHARTS = 8          # per metric
MAX_SWEEP_CHARTS = 12
MAX_SWEEP_SERIES = 16
MAX_FOREST_ROWS = 60
VERDICT_COLORS = {"slower": "#c0392b", "faster": "#27ae60", "same": "#7f8c8d", "unknown": "#e67e22",
                  "same binary": "#2980b9", "not compared": "#bdc3c7"}


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


def bar_charts(report: Report, metric: str) -> list[Plot]:
    """Grouped bars: x = cells (chunks of 12), one bar per hardware class, error bar = sd."""
    keys, values = report.pivot_cells(metric)
    classes = [c for c in report.classes if any(values[c])]
    if not keys or not classes:
        return []
    chunks = [keys[i:i + CELLS_PER_BAR_CHART] for i in range(0, len(keys), CELLS_PER_BAR_CHART)]
    shown = chunks[:MAX_BAR_CHARTS]
    index = {k: i for i, k in enumerate(keys)}
    title = METRIC_TITLES.get(metric, metric)
    plots = []
    width = 0.8 / len(classes)
    for n, chunk in enumerate(shown, 1):
        fig = Figure(figsize=(max(6.0, 1.25 * len(chunk) + 2), 4.2 + 0.18 * len(classes)))
        ax = fig.add_subplot()
        for j, hw_class in enumerate(classes):
            row = [values[hw_class][index[k]] for k in chunk]
            xs = [i + (j - (len(classes) - 1) / 2) * width for i, p in enumerate(row) if p]
            ax.bar(xs, [p.mean for p in row if p], width, yerr=[p.sd for p in row if p], capsize=2,
                   label=_short(report.classes[hw_class], 70))
        ax.set_xticks(range(len(chunk)), [report.label(report.cells[k]).replace(" ", "\n") for k in chunk],
                      fontsize=7)
        ax.set_ylabel(title)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.05 - 0.06 * len(report.varying or
                                                                                       report.axes)),
                  ncol=min(2, len(classes)))
        fig.tight_layout()
        note = ""
        if n == len(shown) and len(chunks) > len(shown):
            rest = sum(len(c) for c in chunks[len(shown):])
            note = f"{rest} more cells are not drawn; every cell is in the tables."
        plots.append(Plot(f"{title} by cell and hardware class ({n}/{len(shown)})",
                          "Each group is one cell; each bar is one hardware class's mean over all its "
                          "repetitions, the whisker its standard deviation. Compare bars within a group.",
                          _png(fig), note))
    return plots


def sweep_charts(report: Report) -> list[Plot]:
    """S_PP and S_TG against N_KV, one line per ref @ class, as ik_llama.cpp users post them."""
    plots = []
    entries = list(report.sweeps.values())
    for entry in entries[:MAX_SWEEP_CHARTS]:
        series = sorted(entry["series"].items(), key=lambda kv: (report.class_display(kv[0][1]), kv[0][0]))
        fig = Figure(figsize=(10, 4.6))
        axes = fig.subplots(1, 2)
        for (ref, hw_class), points in series[:MAX_SWEEP_SERIES]:
            n_kvs = sorted(points)
            label = _short(f"{ref} @ {report.class_display(hw_class)}", 70)
            for ax, i in zip(axes, (0, 1)):
                pts = [(n, points[n][i]) for n in n_kvs if points[n][i].n]
                ax.errorbar([n for n, _ in pts], [p.mean for _, p in pts], yerr=[p.sd for _, p in pts],
                            marker="o", markersize=3, capsize=2, label=label)
        for ax, name in zip(axes, ("S_PP t/s (prompt processing)", "S_TG t/s (generation)")):
            ax.set_xlabel("N_KV (tokens already in the KV cache)")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
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


def forest_plot(report: Report, ci_level: float = 0.95) -> list[Plot]:
    """Ratio candidate/baseline with its CI per comparison; the line at 1 means no change."""
    comps = [c for c in report.comparisons if isinstance(c.get("ratio"), (int, float))
             and math.isfinite(c["ratio"])]
    if not comps:
        return []
    rows = sorted(comps, key=_forest_rank)[:MAX_FOREST_ROWS]
    fig = Figure(figsize=(12, 1.2 + 0.24 * len(rows)))
    ax = fig.add_subplot()
    for y, c in enumerate(reversed(rows)):
        color = VERDICT_COLORS.get(c.get("verdict"), "#34495e")
        lo, hi = c.get("ci_low"), c.get("ci_high")
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [y, y], color=color, linewidth=1.6)
        ax.plot([c["ratio"]], [y], "o", color=color, markersize=4)
    ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    labels = [_short(f"{c.get('cell')} · {METRIC_TITLES.get(c.get('metric'), c.get('metric'))} · "
                     f"{c.get('candidate')}/{c.get('baseline')} · {report.class_display(c.get('hardware_class'))}",
                     100) for c in reversed(rows)]
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_xlabel(f"ratio candidate / baseline (mean), {ci_level:.0%} CI")
    for verdict, color in VERDICT_COLORS.items():
        if any(c.get("verdict") == verdict for c in rows):
            ax.plot([], [], "o", color=color, label=verdict)
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    note = (f"Showing the {len(rows)} most notable of {len(comps)} comparisons (changes first, then the "
            "largest ratios); all are in the table." if len(comps) > len(rows) else "")
    return [Plot("A/B ratios with confidence intervals",
                 "Each row is one cell on one hardware class: the dot is candidate/baseline, the bar its "
                 "CI. Left of the dashed line at 1 is slower, right is faster; a bar that crosses 1 is "
                 "not a demonstrated change. Colour is the verdict.", _png(fig), note)]
