"""The compare page's data: any baseline against any candidate on one axis (any param: ref,
rtr, quant, threads...; engines differ by ref), across every hardware class that has both, as a
classes x cells grid of verdicts.

coordinator.results.compare does the statistics; this module picks the records. Per (class,
cell) it takes the latest run that measured both sides (they ran interleaved there); where no
run did, the latest record of each side, and the row says the sides come from different runs.
Imported records stand beside measured ones as "not compared": a ratio, never a test."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from coordinator.matrix.display import display
from coordinator.reports.model import class_name
from coordinator.results.compare import METRICS, comparisons

CROSS_RUN = "baseline and candidate from different runs (never interleaved): host drift between them is in the ratio"


def _num(x, digits: int = 4):
    """A figure for the page: rounded (the data files hold thousands of rows), None when not finite."""
    return float(f"{x:.{digits}g}") if isinstance(x, (int, float)) and math.isfinite(x) else None


def _first(pair: tuple):
    return pair[0]


def _finished(rec: dict) -> str:
    stamps = rec.get("timestamps") or {}
    return str(stamps.get("finished") or stamps.get("bench_finished") or stamps.get("bench_started") or "")


@dataclass
class AxisIndex:
    """One axis' records, grouped once so that each (baseline, candidate) pair only walks groups:
    (class, the other params) -> the axis value's display -> run_id -> (finished, the run's latest ok record)."""
    name: str
    values: list[str]                                      # displays, in _order
    typed: dict[str, object]                               # display -> the value as records hold it
    groups: dict[tuple, dict[str, dict[str, tuple[str, dict]]]] = field(default_factory=dict)

    def pairs(self, baseline: str, candidate: str) -> list[tuple[dict, dict]]:
        out = []
        for sides in self.groups.values():
            base, cand = sides.get(baseline), sides.get(candidate)
            if not base or not cand:
                continue
            both = base.keys() & cand.keys()
            if both:
                run = max(both, key=lambda r: (max(base[r][0], cand[r][0]), r))
                out.append((base[run][1], cand[run][1]))
            else:
                out.append((max(base.values(), key=_first)[1], max(cand.values(), key=_first)[1]))
        return out


def axis_indexes(records: list[dict]) -> list[AxisIndex]:
    """Every param with two or more values among ok records, sorted by name."""
    ok = [r for r in records if r.get("status") == "ok" and isinstance(r.get("params"), dict)]
    values: dict[str, dict[str, object]] = {}
    for rec in ok:
        for axis, value in rec["params"].items():
            values.setdefault(axis, {}).setdefault(display(value), value)
    items = [sorted((k, repr(v)) for k, v in rec["params"].items()) for rec in ok]
    out = []
    for axis in sorted(a for a, v in values.items() if len(v) > 1):
        index = AxisIndex(axis, sorted(values[axis], key=lambda d: _order(values[axis][d])), values[axis])
        for rec, params_items in zip(ok, items):
            params = rec["params"]
            if axis not in params:
                continue
            others = tuple(kv for kv in params_items if kv[0] != axis)
            runs = index.groups.setdefault((rec.get("hardware_class"), others), {}).setdefault(display(params[axis]), {})
            finished, run = _finished(rec), str(rec.get("run_id"))
            if run not in runs or finished >= runs[run][0]:
                runs[run] = (finished, rec)
        out.append(index)
    return out


ALL_PAIRS_UP_TO = 12     # values of an axis a static site holds every ordered pair of


def static_pairs(index: AxisIndex) -> list[tuple[int, int]]:
    """The (baseline, candidate) positions a static site precomputes: every ordered pair up to
    ALL_PAIRS_UP_TO values; above (a sweep over many commits), each value against its
    neighbours and against the first, both ways, so the files grow linearly. `serve` computes any pair."""
    n = len(index.values)
    if n <= ALL_PAIRS_UP_TO:
        return [(b, c) for b in range(n) for c in range(n) if b != c]
    near = {(i, j) for i in range(n) for j in (i - 1, i + 1, 0) if 0 <= j < n and j != i}
    return sorted(near | {(j, i) for i, j in near})


def axes_listing(indexes: list[AxisIndex], static: bool = False) -> dict:
    """What the page's form offers: each axis and its values (the data files are named by their
    positions) and, in a static site, the pairs it holds where that is not every pair."""
    out = []
    for ix in indexes:
        pairs = static_pairs(ix) if static and len(ix.values) > ALL_PAIRS_UP_TO else None
        out.append({"name": ix.name, "values": ix.values, **({"pairs": pairs} if pairs else {})})
    return {"axes": out}


def _order(value) -> tuple:
    """Numbers in numeric order (threads 2 before 10), everything else by its display."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value, "") if number else (1, 0, display(value))


def grid(index: AxisIndex, baseline: str, candidate: str) -> dict:
    """The comparison of one candidate against one baseline: classes (rows), cells (columns)
    and a row per (class, cell, metric) with ratio, CI, verdict and the runs its records came from."""
    pairs = index.pairs(baseline, candidate)
    rows = comparisons([], {index.name: index.typed[baseline]}, {index.name: index.typed[candidate]},
                       metrics=METRICS, pairs=pairs)
    def group(hw_class, others: dict) -> tuple:
        return hw_class, json.dumps(others, sort_keys=True, default=str)
    by_group = {group(c.get("hardware_class"), {k: v for k, v in c["params"].items() if k != index.name}): (b, c)
                for b, c in pairs}                   # a pair per (class, other params); a row names its group
    classes, cells, notes, out = {}, {}, {}, []
    for row in rows:
        base, cand = by_group[group(row["hardware_class"], row["params"])]
        hw = row["hardware_class"] or "unknown"
        imported = "imported" in (base.get("origin"), cand.get("origin"))
        if hw not in classes:
            classes[hw] = {"id": hw, "name": class_name(cand), "imported": imported}
        cell = " ".join(f"{k}={display(v)}" for k, v in row["params"].items())   # every other param, model too
        cells.setdefault(cell, None)
        same_run = base.get("run_id") == cand.get("run_id")
        warnings = [notes.setdefault(w, len(notes)) for w in (row.get("warnings") or [])
                    + ([] if same_run else [CROSS_RUN])]
        out.append({"class": hw, "cell": cell, "metric": row["metric"], "ratio": _num(row["ratio"]),
                    "ci_low": _num(row["ci_low"]), "ci_high": _num(row["ci_high"]), "verdict": row["verdict"],
                    "p_adjusted": _num(row["p_adjusted"], 3), "test": row["test"], "n_base": row["n_base"],
                    "n_cand": row["n_cand"], "imported": imported,
                    "runs": [str(base.get("run_id")), str(cand.get("run_id"))], "warnings": warnings})
    return {"axis": index.name, "baseline": baseline, "candidate": candidate,
            "classes": sorted(classes.values(), key=lambda c: (c["imported"], c["name"], c["id"])),
            "cells": sorted(cells), "metrics": [m for m in METRICS if any(r["metric"] == m for r in out)],
            "rows": out, "notes": list(notes)}            # a row's warnings are positions in notes


def script(name: str, data: dict) -> str:
    """A data file the page loads with a <script> tag (fetch() is refused on file://): a call
    of ``name`` with the data as JSON (ASCII only, so no character can end the script early)."""
    return f"{name}({json.dumps(data, allow_nan=False, default=str)});\n"
