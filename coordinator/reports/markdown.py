"""GitHub markdown: what gets pasted into an llama.cpp / ik_llama.cpp issue.

tabulate "pipe" because GitHub's own "github" format drops the alignment colons. The pivot
is split into tables of a few cells each so it stays readable in an issue's width.
"""
from __future__ import annotations

from tabulate import tabulate

from coordinator.matrix.display import display
from coordinator.results.stats import ratio_note
from .busy import headline as busy_headline
from .formats import OutPath, ReportSource, write_text
from .model import (CHECK_NOTE, METRIC_TITLES, Report, build, check_counts, check_headers, check_headline,
                    check_rows, comparison_cells, comparison_headers, correction_name, skipped_headline, skipped_lines)

PIVOT_COLUMNS = 6


def _esc(text: str) -> str:
    """A '|' inside a cell would end it in GitHub's table parser."""
    return str(text).replace("|", "\\|")


def table(headers: list[str], rows: list[list[str]], numeric: range | set = frozenset()) -> str:
    """Numbers right-aligned (the ``numeric`` column indices), text left."""
    align = ["right" if i in numeric else "left" for i in range(len(headers))]
    return tabulate([[_esc(c) for c in r] for r in rows], headers=[_esc(h) for h in headers],
                    tablefmt="pipe", disable_numparse=True, colalign=align)


def class_table(report: Report, hw_class: str) -> str:
    axes = report.varying or report.axes
    headers = [*axes, "tests run", *(METRIC_TITLES.get(m, m) for m in report.metrics), "records", "status"]
    rows = []
    for s in report.class_cells(hw_class):
        tests = " / ".join(p.test for p in s.metrics.values() if p.test) or "-"
        rows.append([*(display(s.params.get(a)) for a in axes), tests,
                     *(s.metrics[m].text() if m in s.metrics else "-" for m in report.metrics),
                     str(s.records), s.status_text()])
    return table(headers, rows, numeric=range(len(axes) + 1, len(headers) - 1))


def pivot_tables(report: Report, metric: str) -> list[str]:
    headers, rows = report.pivot(metric)
    out = []
    for start in range(1, len(headers), PIVOT_COLUMNS):
        cols = [0, *range(start, min(start + PIVOT_COLUMNS, len(headers)))]
        out.append(table([headers[i] for i in cols], [[r[i] for i in cols] for r in rows],
                         numeric=range(1, len(cols))))
    return out


def sweep_tables(report: Report) -> list[str]:
    """N_KV rows, one S_PP / S_TG column pair per ref @ class: the table ik users post."""
    out = []
    for entry in report.sweeps.values():
        series = sorted(entry["series"].items(), key=lambda kv: (report.class_display(kv[0][1]), kv[0][0]))
        n_kvs = sorted({n for _, points in series for n in points})
        headers = ["N_KV"]
        for (ref, hw_class), _ in series:
            name = f"{ref} @ {report.class_display(hw_class)}"
            headers += [f"S_PP {name}", f"S_TG {name}"]
        rows = []
        for n_kv in n_kvs:
            row = [str(n_kv)]
            for _, points in series:
                pp, tg = points.get(n_kv, (None, None))
                row += [pp.text() if pp and pp.n else "-", tg.text() if tg and tg.n else "-"]
            rows.append(row)
        title = report.label(entry["params"], skip=("ref",))
        out.append(f"**{_esc(title)}** (t/s, mean ± sd over repetitions)\n\n"
                   + table(headers, rows, numeric=range(len(headers))))
    return out


def comparison_section(report: Report, correction: str, ci_level: float) -> str:
    comps = report.comparisons
    tested = sum(1 for c in comps if c.get("p_adjusted") is not None)
    lines = [table(comparison_headers(ci_level), [comparison_cells(report, c) for c in comps],
                   numeric={4, 5, 6, 9, 10}), "",
             f"{ratio_note()} at {ci_level:.0%} (above 1 is faster); "
             f"test = the significance test run on per-process means (one engine process is one sample); "
             f"p adj = p adjusted across all "
             f"{tested} tested comparisons with {correction_name(comps, correction)}. Pairs are only ever "
             f"formed within one hardware class."]
    warned = [c for c in comps if c.get("warnings")]
    if warned:
        lines += ["", "**Warnings**", ""]
        for c in warned:
            where = f"{report.class_display(c.get('hardware_class'))} · {c.get('cell')} · {c.get('metric')}"
            lines.append(f"- {where}: {'; '.join(c['warnings'])}")
    return "\n".join(lines)


def check_section(report: Report) -> str:
    """Disagreements first (DISAGREE), then unknowns; agreements only counted."""
    rows = check_rows(report)
    lines = [table(check_headers(), rows), ""] if rows else []
    lines.append(f"{check_counts(report)['agree']} pair(s) agree. {CHECK_NOTE}")
    return "\n".join(lines)


def render(source: ReportSource, out_path: OutPath = None) -> str:
    report = build(source.records, source.comparisons, source.skipped)
    correction, ci_level = source.correction, source.ci_level
    parts = ["## hwmatrix report", "",
             f"{report.n_records} records, {len(report.classes)} hardware classes, {len(report.cells)} cells. "
             "Values are tokens/s, mean ± sd over every repetition of every run of a cell.", ""]
    if report.checks:
        parts += [f"**{check_headline(report)}**", ""]
    if report.skipped:
        parts += [f"**{skipped_headline(report)}**", ""]
    if busy := busy_headline([s.busy for s in report.summaries.values()]):
        parts += [f"**{busy}**", ""]
    for hw_class, name in report.classes.items():
        origin = " (imported numbers, not measured here)" if report.origins.get(hw_class) == "imported" else ""
        parts += [f"### {name}", "", f"class `{hw_class}`{origin}", "", class_table(report, hw_class), ""]
    for metric in report.metrics:
        parts += [f"### Across hardware: {METRIC_TITLES.get(metric, metric)}", ""]
        for t in pivot_tables(report, metric):
            parts += [t, ""]
    sweeps = sweep_tables(report)
    if sweeps:
        parts += ["### Sweep-bench: S_PP and S_TG against N_KV", ""]
        for t in sweeps:
            parts += [t, ""]
    if report.checks:
        parts += ["### Cross-checks", "", check_section(report), ""]
    if report.comparisons:
        parts += ["### A/B comparisons", "", comparison_section(report, correction, ci_level), ""]
    if report.skipped:
        parts += ["### Skipped records", "", *(f"- {_esc(line)}" for line in skipped_lines(report)), ""]
    return write_text("\n".join(parts), out_path)
