"""Plotly figures for the pages, as JSON the bundled plotly.js draws (no CDN, no internet).

Sweeps and the forest plot are built with plotly's graph_objects, so their schema is checked;
bars and history, drawn once per run or series, are written as plotly's JSON directly (the
shape the tests check in the browser). Each function returns the figure as JSON."""
from __future__ import annotations

import json

import plotly.graph_objects as go

from coordinator.reports.model import METRIC_TITLES, Report

LAYOUT = dict(margin=dict(l=60, r=20, t=40, b=80), height=420)


def bars(report: Report, metric: str) -> str:
    """Mean ± sd per cell, one bar group per hardware class. Plain JSON, like history(): with
    graph_objects the 120 bar charts over bench/report.py's 100,000 records took 4 s to validate."""
    keys, values = report.pivot_cells(metric)
    labels = [report.label(report.cells[k]) for k in keys]
    data = [{"type": "bar", "name": report.classes[hw_class], "x": labels, "y": [p.mean if p else None for p in row],
             "error_y": {"type": "data", "array": [p.sd if p else None for p in row], "visible": True}}
            for hw_class, row in values.items()]
    layout = {**LAYOUT, "title": {"text": METRIC_TITLES.get(metric, metric)}, "barmode": "group",
              "yaxis": {"title": {"text": "tokens/s"}}}
    return json.dumps({"data": data, "layout": layout}, allow_nan=False)


def sweeps(report: Report) -> list[tuple[str, str]]:
    """(title, figure) per sweep-bench cell: t/s against N_KV, a line per (ref, class)."""
    out = []
    for entry in report.sweeps.values():
        title = report.label(entry["params"], skip=("ref",))
        fig = go.Figure(layout=dict(LAYOUT, title=f"sweep-bench {title}", xaxis_title="N_KV",
                                    yaxis_title="tokens/s"))
        for (ref, hw_class), series in sorted(entry["series"].items()):
            n_kv = sorted(series)
            for i, name in ((0, "pp"), (1, "tg")):
                fig.add_scatter(x=n_kv, y=[series[k][i].mean for k in n_kv], mode="lines+markers",
                                name=f"{name} {ref} · {report.class_display(hw_class)}")
        out.append((title, fig.to_json()))
    return out


def forest(rows: list[dict], class_name) -> str | None:
    """Each comparison's ratio with its CI, a line at 1 (no change); None without ratios."""
    rows = [r for r in rows if r.get("ratio") is not None]
    if not rows:
        return None
    labels = [f"{class_name(r.get('hardware_class'))} · {r.get('cell')} · {r.get('metric')} · "
              f"{r.get('baseline')} → {r.get('candidate')}" for r in rows]
    ratio = [r["ratio"] for r in rows]
    fig = go.Figure(layout=dict(LAYOUT, title="ratios, candidate / baseline, with 95% CI",
                                height=max(300, 24 * len(rows) + 120), xaxis_title="ratio",
                                margin=dict(l=420, r=20, t=40, b=40)))
    fig.add_scatter(x=ratio, y=labels, mode="markers", name="ratio", text=[r.get("verdict") for r in rows],
                    error_x=dict(type="data", symmetric=False,
                                 array=[(r["ci_high"] - r["ratio"]) if r.get("ci_high") is not None else 0
                                        for r in rows],
                                 arrayminus=[(r["ratio"] - r["ci_low"]) if r.get("ci_low") is not None else 0
                                             for r in rows]))
    fig.add_vline(x=1.0, line_dash="dash", line_color="#888")
    return fig.to_json()


def history(h) -> str:
    """A series' points with their spread (min..max of process values), a dashed line at each
    change point, and the value relative to the control on a second axis when there is one.

    Written as plotly's JSON directly rather than through graph_objects: a site has a page per
    series (1,600 over bench/report.py's 100,000 records), and make_subplots plus validation
    cost tens of milliseconds each, most of the build."""
    pts = h.points
    x = [f"{p.index}: {p.ref}@{p.commit or '-'}" if h.x == "commit" else f"{p.index}: {p.finished or p.run_id}"
         for p in pts]
    data = []
    for imported in (False, True):
        sel = [p for p in pts if p.imported == imported]
        if sel:
            data.append({"type": "scatter", "mode": "markers+lines", "x": [x[p.index] for p in sel],
                         "y": [p.value for p in sel], "name": "imported (never tested)" if imported else h.key.metric,
                         "error_y": {"type": "data", "symmetric": False, "array": [p.high - p.value for p in sel],
                                     "arrayminus": [p.value - p.low for p in sel]}})
    rel = [p for p in pts if p.relative is not None]
    if h.control and rel:
        data.append({"type": "scatter", "mode": "markers+lines", "x": [x[p.index] for p in rel],
                     "y": [p.relative for p in rel], "name": f"relative to {h.control}", "yaxis": "y2",
                     "line": {"dash": "dot"}})
    marks = [p for p in pts if p.hardware_change or p.build_change]
    if marks:
        data.append({"type": "scatter", "mode": "markers", "x": [x[p.index] for p in marks],
                     "y": [p.value for p in marks], "name": "hardware / build changed",
                     "marker": {"symbol": "diamond-open", "size": 14},
                     "text": ["; ".join(filter(None, [p.hardware_change, p.build_change])) for p in marks]})
    shapes = [{"type": "line", "xref": "x", "yref": "paper", "x0": c.index - 0.5, "x1": c.index - 0.5,
               "y0": 0, "y1": 1, "line": {"dash": "dash", "color": "#c0392b"}} for c in h.changes]
    layout = {**LAYOUT, "title": {"text": h.key.label()}, "height": 460, "shapes": shapes,
              "xaxis": {"type": "category"}, "yaxis": {"title": {"text": h.key.metric}},
              "yaxis2": {"overlaying": "y", "side": "right", "title": {"text": f"/ {h.control}"}, "showgrid": False}}
    return json.dumps({"data": data, "layout": layout}, allow_nan=False)
