"""`hwmatrix report`: one entry point, one registry of formats, one short module per format.

    render(fmt, records, comparisons, out_path=None) -> str | bytes

fmt is a registered name or alias (markdown/md, csv, json, html, sqlite). Text formats return
str; binary ones (sqlite) bytes, the database file's. With out_path the result is also
written there (sqlite: a fresh file). ``records`` are checked records
(coordinator.results.records.load_checked); ``skipped``, what that left out, is listed by
markdown, html and json (csv and sqlite hold records only).

A new format is a module with ``render(source, out_path)`` (``formats.Render``) and one
``register_format`` line here; the CLI's --format / --export choices come from FORMATS.
"""
from __future__ import annotations

from coordinator.reports.formats import OutPath, ReportFormat, ReportSource

FORMATS: dict[str, ReportFormat] = {}


def register_format(fmt: ReportFormat) -> None:
    FORMATS[fmt.name] = fmt


register_format(ReportFormat("markdown", ".md", "coordinator.reports.markdown:render", aliases=("md",)))
register_format(ReportFormat("csv", ".csv", "coordinator.reports.csv_json:render_csv"))
register_format(ReportFormat("json", ".json", "coordinator.reports.csv_json:render_json"))
register_format(ReportFormat("html", ".html", "coordinator.reports.html:render", aliases=("htm",)))
register_format(ReportFormat("sqlite", ".sqlite", "coordinator.reports.sqlite_export:render", binary=True,
                             aliases=("db", "sqlite3")))


def format_names(binary: bool) -> list[str]:
    """Every name and alias of the text (or the binary) formats, for the CLI's choices."""
    return [name for f in FORMATS.values() if f.binary == binary for name in (f.name, *f.aliases)]


def report_format(name: str) -> ReportFormat:
    name = name.lower()
    for fmt in FORMATS.values():
        if name == fmt.name or name in fmt.aliases:
            return fmt
    raise ValueError(f"unknown report format {name!r}: use one of {', '.join(FORMATS)}")


def render(fmt: str, records: list[dict], comparisons: list[dict] | None = None, out_path: OutPath = None, *,
           correction: str = "holm", ci_level: float = 0.95, skipped: list | None = None) -> str | bytes:
    """``correction`` and ``ci_level`` only label the A/B table (the comparisons carry the
    numbers); pass the settings the comparisons were computed with."""
    source = ReportSource(records, comparisons, skipped, correction, ci_level)
    return report_format(fmt).render(source, out_path)
