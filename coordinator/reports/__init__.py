"""`hwmatrix report`: one entry point, one short module per output format.

    render(fmt, records, comparisons, out_path=None) -> str | bytes

fmt is markdown (md), csv, json, html or sqlite. Text formats return str; sqlite returns the
database file's bytes. With out_path the result is also written there (sqlite: a fresh file).
The records are aggregated once (model.build) and every text format renders from that.
``records`` are checked records (coordinator.results.records.load_checked); ``skipped``, what that
left out, is listed by markdown, html and json (csv and sqlite hold records only).
"""
from __future__ import annotations

import os
from pathlib import Path

from . import csv_json, html, markdown, model, sqlite_export

FORMATS = ("markdown", "csv", "json", "html", "sqlite")
ALIASES = {"md": "markdown", "htm": "html", "db": "sqlite", "sqlite3": "sqlite"}


def render(fmt: str, records: list[dict], comparisons: list[dict] | None = None,
           out_path: str | os.PathLike | None = None, *, correction: str = "holm",
           ci_level: float = 0.95, skipped: list | None = None) -> str | bytes:
    """``correction`` and ``ci_level`` only label the A/B table (the comparisons carry the
    numbers); pass the settings the comparisons were computed with."""
    fmt = ALIASES.get(fmt.lower(), fmt.lower())
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "sqlite":
        return sqlite_export.render(records, out_path)
    report = model.build(records, comparisons, skipped)
    if fmt == "markdown":
        text = markdown.render(report, correction, ci_level)
    elif fmt == "csv":
        text = csv_json.render_csv(report, records)
    elif fmt == "json":
        text = csv_json.render_json(report, records)
    else:
        text = html.render(report, correction, ci_level)
    if out_path is not None:
        Path(out_path).write_text(text, encoding="utf-8", newline="")
    return text


__all__ = ["FORMATS", "render"]
