"""A series' history for the terminal: a header, one table row per point with its marks
(a change found there, a hardware or build change since the previous point), and the
detection settings underneath so the changes can be reproduced."""
from __future__ import annotations

from tabulate import tabulate

from coordinator.results.history import History, Point

HEADERS = ["x", "ref", "commit", "run", "value [low, high]", "processes", "relative", "marks"]


def _x(h: History, p: Point) -> str:
    if h.x == "commit":
        return p.commit or p.ref
    return p.finished or p.run_id


def _marks(h: History, p: Point) -> str:
    marks = [f"CHANGE {c.change_pct:+.1f}% on {c.on} ({c.cause}, p={c.p_value:.2g}): {c.note}"
             for c in h.changes if c.index == p.index]
    if p.imported:
        marks.append("imported")
    if h.control is not None and p.ref == h.control:
        marks.append("control")
    if p.hardware_change:
        marks.append(f"hw: {p.hardware_change}")
    if p.build_change:
        marks.append(f"build: {p.build_change}")
    return "; ".join(marks)


def _row(h: History, p: Point) -> list[str]:
    run = p.run_id if p.runs == 1 else f"{p.run_id} (+{p.runs - 1} runs)"
    return [_x(h, p), p.ref, p.commit or "", run, f"{p.value:.4g} [{p.low:.4g}, {p.high:.4g}]", str(p.processes),
            "" if p.relative is None else f"{p.relative:.4f}", _marks(h, p)]


def _footer(method: dict) -> str:
    lines = [f"changes: {method['library']} {method['version']}, {method['algorithm']}; cost {method['cost']}, "
             f"min_size {method['min_size']}, jump {method['jump']}; penalty {method['penalty']} with sigma = "
             f"{method['sigma']}; kept where {method['significance']} p < {method['p_threshold']:g} and "
             f"|change| >= {method['min_change_pct']:g}%; imported points {method['imported'].split(',')[0]}, "
             "never detected on"]
    for name, info in method.get("series", {}).items():
        if "penalty" in info:
            lines.append(f"  {name}: n={info['n']} sigma={info['sigma']:.4g} penalty={info['penalty']:.4g} "
                         f"({info['algorithm']})")
        else:
            lines.append(f"  {name}: n={info['n']} (too few points)")
    return "\n".join(lines)


def render(h: History) -> str:
    control = h.control or "none"
    head = f"{h.key.label()}  (x: {h.x}, control: {control}, {len(h.points)} points, {len(h.changes)} change(s))"
    table = tabulate([_row(h, p) for p in h.points], headers=HEADERS, tablefmt="simple", disable_numparse=True)
    return f"{head}\n\n{table}\n\n{_footer(h.method)}\n"
