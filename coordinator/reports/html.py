"""One self-contained HTML file: inline CSS, tables, and the plots as base64 PNG, with no
external reference, so it can be mailed, attached to an issue, or opened offline.
"""
from __future__ import annotations

import base64
from html import escape

from coordinator.matrix.display import display
from coordinator.results.stats import ratio_note
from .busy import headline as busy_headline
from .formats import OutPath, ReportSource, write_text
from .model import (CHECK_NOTE, METRIC_TITLES, Report, build, check_counts, check_headers, check_headline,
                    check_rows, comparison_cells, comparison_headers, correction_name, skipped_headline, skipped_lines)

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:2px 6px;white-space:nowrap}
th{background:#f2f2f2;text-align:left;white-space:normal;max-width:16em;vertical-align:bottom} td.n{text-align:right;font-variant-numeric:tabular-nums}
.wide{overflow-x:auto} .read{color:#555;font-style:italic;margin:.2em 0 .4em} .note{color:#a15c00}
img{max-width:100%;display:block;margin:.3em 0 1.5em}
.slower{color:#c0392b;font-weight:bold} .faster{color:#27ae60;font-weight:bold}
.DISAGREE{color:#c0392b;font-weight:bold} .alert{color:#c0392b}
"""


def _table(headers: list[str], rows: list[list[str]], numeric: range | set, cls_col: int | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    out = [f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>']
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            attr = ' class="n"' if i in numeric else ""
            if i == cls_col:
                attr = f' class="{escape(v)}"'
            cells.append(f"<td{attr}>{escape(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _plot(p) -> str:
    data = base64.b64encode(p.png).decode("ascii")
    note = f'<p class="note">{escape(p.note)}</p>' if p.note else ""
    return (f"<h3>{escape(p.title)}</h3>\n<p class=\"read\">How to read this: {escape(p.how_to_read)}</p>\n"
            f'<img alt="{escape(p.title)}" src="data:image/png;base64,{data}">\n{note}')


def _class_table(report: Report, hw_class: str) -> str:
    axes = report.varying or report.axes
    headers = [*axes, "tests run", *(METRIC_TITLES.get(m, m) for m in report.metrics), "records", "status"]
    rows = []
    for s in report.class_cells(hw_class):
        rows.append([*(display(s.params.get(a)) for a in axes),
                     " / ".join(p.test for p in s.metrics.values() if p.test) or "-",
                     *(s.metrics[m].text() if m in s.metrics else "-" for m in report.metrics),
                     str(s.records), s.status_text()])
    return _table(headers, rows, numeric=range(len(axes) + 1, len(headers) - 1))


def render(source: ReportSource, out_path: OutPath = None) -> str:
    from . import plots     # matplotlib costs about a second to import; only HTML needs it
    report = build(source.records, source.comparisons, source.skipped)
    correction, ci_level = source.correction, source.ci_level
    body = ["<h1>hwmatrix report</h1>",
            f"<p>{report.n_records} records, {len(report.classes)} hardware classes, {len(report.cells)} cells. "
            "Values are tokens/s, mean ± sd over every repetition of every run of a cell.</p>"]
    if report.checks:
        alert = ' class="alert"' if check_counts(report)["disagree"] else ""
        body.append(f"<p{alert}><b>{escape(check_headline(report))}</b></p>")
    if report.skipped:
        body.append(f'<p class="alert"><b>{escape(skipped_headline(report))}</b></p>')
    if busy := busy_headline([s.busy for s in report.summaries.values()]):
        body.append(f'<p class="alert"><b>{escape(busy)}</b></p>')
    if report.comparisons:
        comps = report.comparisons
        tested = sum(1 for c in comps if c.get("p_adjusted") is not None)
        body += ["<h2>A/B comparisons</h2>", *(_plot(p) for p in plots.forest_plot(report, ci_level)),
                 _table(comparison_headers(ci_level), [comparison_cells(report, c) for c in comps],
                        numeric={4, 5, 6, 9, 10}, cls_col=8),
                 f"<p>{escape(ratio_note())} at {ci_level:.0%}; p adj = p "
                 f"adjusted across all {tested} tested comparisons with "
                 f"{escape(correction_name(comps, correction))}. Pairs are only formed within one hardware "
                 "class.</p>"]
        warned = [c for c in comps if c.get("warnings")]
        if warned:
            items = "".join(f"<li>{escape(report.class_display(c.get('hardware_class')))} · "
                            f"{escape(str(c.get('cell')))}"
                            f" · {escape(str(c.get('metric')))}: {escape('; '.join(c['warnings']))}</li>"
                            for c in warned)
            body.append(f"<h3>Warnings</h3><ul>{items}</ul>")
    if report.checks:
        rows = check_rows(report)
        body.append("<h2>Cross-checks</h2>")
        if rows:
            body.append(_table(check_headers(), rows, numeric=set(), cls_col=0))
        body.append(f"<p>{check_counts(report)['agree']} pair(s) agree. {escape(CHECK_NOTE)}</p>")
    body.append("<h2>Across hardware</h2>")
    for metric in report.metrics:
        headers, rows = report.pivot(metric)
        body += [f"<h3>{escape(METRIC_TITLES.get(metric, metric))}: hardware classes × cells</h3>",
                 _table(headers, rows, numeric=range(1, len(headers)))]
        body += [_plot(p) for p in plots.bar_charts(report, metric)]
    sweep = plots.sweep_charts(report)
    if sweep:
        body += ["<h2>Sweep-bench</h2>", *(_plot(p) for p in sweep)]
    body.append("<h2>Results by hardware class</h2>")
    for hw_class, name in report.classes.items():
        origin = " (imported numbers, not measured here)" if report.origins.get(hw_class) == "imported" else ""
        body += [f"<h3>{escape(name)}</h3><p>class <code>{escape(hw_class)}</code>{origin}</p>",
                 _class_table(report, hw_class)]
    if report.skipped:
        items = "".join(f"<li>{escape(line)}</li>" for line in skipped_lines(report))
        body.append(f"<h2>Skipped records</h2><ul>{items}</ul>")
    return write_text("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>hwmatrix report</title>"
                      f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n", out_path)
