"""CSV (one row per record x metric, every sample kept) and JSON (record summaries,
the per-class aggregates, the pivot, the comparisons and the cross-checks of replicated
cells) for spreadsheets and scripts.
"""
from __future__ import annotations

import csv
import io
import json
import math

from .formats import OutPath, ReportSource, write_text
from .model import Report, build, metric_stats

CSV_HEAD = ["run_id", "cell_id", "agent_id", "hardware_class", "hardware", "origin", "status", "engine_commit"]
CSV_TAIL = ["metric", "test", "unit", "n", "mean", "sd", "median", "samples"]


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def render_csv(source: ReportSource, out_path: OutPath = None) -> str:
    """Samples are one ';'-joined column so a row stays one record x metric. A record with no
    metric (a failed cell) still gets one row, so failures are not silently missing."""
    records = source.records
    report = build(records, source.comparisons, source.skipped)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*CSV_HEAD, *report.axes, *CSV_TAIL])
    names = report.classes
    for rec in records:
        head = [rec.get("run_id"), rec.get("cell_id"), rec.get("agent_id"), rec.get("hardware_class"),
                names.get(rec.get("hardware_class") or "unknown"), rec.get("origin") or "measured",
                rec.get("status"), (rec.get("engine") or {}).get("commit")]
        params = rec.get("params") or {}
        head = [_cell(v) for v in head] + [_cell(params.get(a)) for a in report.axes]
        metrics = rec.get("metrics") or {}
        if not metrics:
            w.writerow(head + [""] * len(CSV_TAIL))
        for name, m in metrics.items():
            stats = metric_stats(m)
            n, mean, sd = stats if stats else (m.get("n"), None, None)
            w.writerow(head + [name, _cell(m.get("test")), _cell(m.get("unit", "t/s")), _cell(n), _cell(mean),
                               _cell(sd), _cell(m.get("median")),
                               ";".join(str(s) for s in m.get("samples") or [])])
    return write_text(buf.getvalue(), out_path)


def record_summary(rec: dict) -> dict:
    """A record without its bulky parts (samples, raw rows, full hardware profile)."""
    metrics = {name: {k: m.get(k) for k in ("test", "unit", "n", "mean", "sd", "median")}
               for name, m in (rec.get("metrics") or {}).items()}
    engine = rec.get("engine") or {}
    return {"run_id": rec.get("run_id"), "cell_id": rec.get("cell_id"), "agent_id": rec.get("agent_id"),
            "params": rec.get("params"), "status": rec.get("status"), "error": rec.get("error"),
            "origin": rec.get("origin") or "measured", "hardware_class": rec.get("hardware_class"),
            "engine": {k: engine.get(k) for k in ("kind", "ref", "commit", "binary_hash") if k in engine},
            "metrics": metrics, "sweep_rows": len(rec.get("sweep_rows") or []),
            "bench_rows": len(rec.get("bench_rows") or [])}


def report_dict(report: Report, records: list[dict]) -> dict:
    cells = []
    for (hw_class, _), s in report.summaries.items():
        cells.append({"hardware_class": hw_class, "params": s.params, "records": s.records,
                      "statuses": dict(s.statuses),
                      "metrics": {m: {"test": p.test, "n": p.n, "mean": p.mean, "sd": p.sd,
                                      **({"replicas_disagree": True} if p.flag else {})}
                                  for m, p in s.metrics.items()}})
    pivots = {}
    for metric in report.metrics:
        keys, values = report.pivot_cells(metric)
        pivots[metric] = {
            "columns": [report.label(report.cells[k]) for k in keys],
            "rows": [{"hardware_class": c, "hardware": report.classes[c],
                      "values": [{"n": p.n, "mean": p.mean, "sd": p.sd} if p else None for p in row]}
                     for c, row in values.items()]}
    return {"format": "hwmatrix-report", "version": 1,
            "classes": [{"id": c, "name": n, "origin": report.origins[c]} for c, n in report.classes.items()],
            "records": [record_summary(r) for r in records], "cells": cells, "pivot": pivots,
            "comparisons": report.comparisons, "checks": report.checks,
            "skipped": [{"key": s.key, "reason": s.reason} for s in report.skipped]}


def _finite(value):
    """NaN/inf are not JSON; a non-finite number becomes null rather than an unreadable file."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def render_json(source: ReportSource, out_path: OutPath = None) -> str:
    """Compact: json's C encoder is used only without indent (an indented 100k-record report
    took 13 s, compact about a third of that); pipe it through `jq .` to read it."""
    data = report_dict(build(source.records, source.comparisons, source.skipped), source.records)
    try:
        text = json.dumps(data, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(data), separators=(",", ":"), default=str, allow_nan=False)
    return write_text(text, out_path)
