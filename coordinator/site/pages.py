"""Each page of the site from a SiteView, through Jinja2 templates with autoescaping on:
everything taken from records (names, params, log text) is shown as text.

``root`` is the relative path from a page to the site's root, so links work from file://."""
from __future__ import annotations

from collections import Counter
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape

from coordinator.matrix.display import display
from coordinator.reports.model import METRIC_TITLES, build, class_name, params_key
from coordinator.results.compare import comparisons
from coordinator.results.noise import figure_line, noise_figures
from coordinator.site import figures
from coordinator.site.view import SiteView

ENV = Environment(loader=PackageLoader("coordinator.site", "templates"), autoescape=select_autoescape(default=True))
FAILED = {"lost", "canceled"}


def record_anchor(rec: dict) -> str:
    return quote(f"{rec.get('cell_id')}--{rec.get('agent_id')}", safe="")


def status_counts(records: list[dict]) -> dict[str, int]:
    """ok / failed / lost, as the runs page shows them (canceled counts as lost)."""
    counts = Counter(r.get("status") for r in records)
    lost = sum(counts[s] for s in FAILED)
    return {"ok": counts["ok"], "failed": sum(counts.values()) - counts["ok"] - lost, "lost": lost}


def runs_page(view: SiteView) -> str:
    rows = []
    for run_id, summary in sorted(view.runs.items(), key=lambda kv: kv[1].get("last") or "", reverse=True):
        recs = view.records.get(run_id, [])
        rows.append({"run_id": run_id, "href": f"runs/{quote(run_id)}.html", "summary": summary,
                     "cells": len({r.get("cell_id") for r in recs}), **status_counts(recs)})
    skipped = [s.note().removeprefix("skipped ") for s in view.skipped]
    return ENV.get_template("runs.html").render(root="", title="runs", runs=rows, skipped=skipped,
                                                store=view.store_url)


def _pair_rows(records: list[dict], manifest: dict | None) -> list[dict]:
    """The run's A/B rows for the manifest's one-axis compare pairs (a pair without a
    candidate compares the baseline with every other value of its axis)."""
    rows = []
    for pair in (manifest or {}).get("compare") or []:
        base, cand = pair.get("baseline") or {}, pair.get("candidate")
        if not isinstance(base, dict) or len(base) != 1 or (cand is not None and (not isinstance(cand, dict)
                                                                                 or list(cand) != list(base))):
            continue
        (axis, value), = base.items()
        others = [cand[axis]] if cand else sorted({repr(r["params"][axis]): r["params"][axis] for r in records
                                                   if axis in r.get("params", {})
                                                   and r["params"][axis] != value}.values(), key=repr)
        for other in others:
            rows += [{**row, "axis": axis} for row in comparisons(records, {axis: value}, {axis: other})]
    return rows


def _by_candidate(pairs: list[dict]) -> dict[tuple, list[dict]]:
    """(class, params key of the candidate cell) -> the A/B rows whose candidate it is."""
    out: dict[tuple, list[dict]] = {}
    for row in pairs:
        params = {**row["params"], row["axis"]: row["candidate"]}
        out.setdefault((row.get("hardware_class"), params_key(params)), []).append(row)
    return out


def run_page(view: SiteView, run_id: str) -> str:
    records = view.records.get(run_id, [])
    pairs = _pair_rows(records, view.manifests.get(run_id))
    report = build(records, pairs)
    axes = report.varying or report.axes
    changes, by_cell = _by_candidate(pairs), {}
    for rec in records:
        by_cell.setdefault((rec.get("hardware_class") or "unknown", params_key(rec.get("params") or {})), []).append(rec)
    classes = []
    for hw_class, name in report.classes.items():
        cells = []
        for summary in report.class_cells(hw_class):
            key = (hw_class, params_key(summary.params))
            recs = by_cell.get(key, [])
            cells.append({"params": [display(summary.params.get(a)) for a in axes],
                          "metrics": [summary.metrics[m].text() if m in summary.metrics else "-"
                                      for m in report.metrics],
                          "changes": changes.get(key, []), "status": summary.status_text(),
                          "records": [{"href": f"{quote(run_id)}/records.html#{record_anchor(r)}",
                                       "agent": r.get("agent_id")} for r in recs]})
        classes.append({"id": hw_class, "name": name, "imported": report.origins.get(hw_class) == "imported",
                        "cells": cells})
    plots = [(METRIC_TITLES.get(m, m), figures.bars(report, m)) for m in report.metrics]
    plots += figures.sweeps(report)
    forest = figures.forest(pairs, report.class_display)
    if forest:
        plots.append(("ratios", forest))
    return ENV.get_template("run.html").render(
        root="../", title=f"run {run_id}", run_id=run_id, summary=view.runs.get(run_id, {}), axes=axes,
        metrics=[METRIC_TITLES.get(m, m) for m in report.metrics], classes=classes, plots=plots,
        manifest=view.manifests.get(run_id), counts=status_counts(records), compare=compare_links(pairs))


def records_page(view: SiteView, run_id: str, log_href) -> str:
    """Every record of a run, each with its raw logs (``log_href(key)`` -> link or None).
    Flat dicts read by subscript: Jinja's attribute lookup on a dict tries getattr first, which
    made this page most of a 100,000-record site's build."""
    items, names = [], {}
    for rec in sorted(view.records.get(run_id, []), key=lambda r: (str(r.get("cell_id")), str(r.get("agent_id")))):
        metrics = [{"name": name, "test": m.get("test"), "mean": m.get("mean"), "sd": m.get("sd"),
                    "samples": ", ".join(f"{x:.2f}" for x in m.get("samples") or []),
                    "process_sizes": m.get("process_sizes")}
                   for name, m in (rec.get("metrics") or {}).items()]
        logs = [{"name": name, "href": log_href(key)} for name, key in sorted((rec.get("logs") or {}).items())
                if isinstance(key, str)]
        hw_class = rec.get("hardware_class")
        if hw_class not in names:
            names[hw_class] = class_name(rec)
        engine = rec.get("engine") or {}
        items.append({"anchor": record_anchor(rec), "cell_id": rec.get("cell_id"), "agent_id": rec.get("agent_id"),
                      "status": rec.get("status"), "hardware_class": hw_class, "origin": rec.get("origin") or "measured",
                      "finished": (rec.get("timestamps") or {}).get("finished") or "-", "error": rec.get("error"),
                      "engine": f"{engine.get('kind') or ''} {str(engine.get('commit') or '')[:12]}",
                      "metrics": metrics, "logs": logs, "class_name": names[hw_class],
                      "params": [(k, display(v)) for k, v in (rec.get("params") or {}).items()]})
    return ENV.get_template("records.html").render(root="../../", title=f"records of {run_id}", run_id=run_id,
                                                   records=items)


def hardware_page(view: SiteView) -> str:
    records = view.all_records()
    classes: dict[str, dict] = {}
    for rec in records:
        hw_class = rec.get("hardware_class") or "unknown"
        if hw_class not in classes:
            classes[hw_class] = {"name": class_name(rec), "origin": rec.get("origin") or "measured",
                                 "hardware": rec.get("hardware") or {}, "agents": Counter(), "last": {}}
        entry = classes[hw_class]
        entry["agents"][str(rec.get("agent_id"))] += 1
        finished = (rec.get("timestamps") or {}).get("finished") or ""
        agent = str(rec.get("agent_id"))
        entry["last"][agent] = max(entry["last"].get(agent, ""), finished)
    for noise in noise_figures(records):
        entry = classes.get(noise.hw_class or "unknown")
        if entry is not None:
            entry.setdefault("noise", []).append(f"{noise.metric}: {figure_line(noise)}")
    return ENV.get_template("hardware.html").render(root="", title="hardware", classes=sorted(
        classes.items(), key=lambda kv: (kv[1]["origin"] == "imported", kv[1]["name"])))


def compare_page() -> str:
    """The compare page's shell: the query is read from its URL and the grid drawn by assets/compare.js."""
    return ENV.get_template("compare.html").render(root="", title="compare")


def compare_links(pairs: list[dict]) -> list[dict]:
    """A compare-page link per (axis, baseline, candidate) of a run's A/B rows."""
    seen = {}
    for row in pairs:
        query = {"axis": row["axis"], "baseline": display(row["baseline"]), "candidate": display(row["candidate"])}
        seen.setdefault(tuple(query.values()), query)
    return [{"href": "compare.html?" + urlencode(q), **q} for q in seen.values()]


def history_index(series: list[tuple]) -> str:
    """``series``: (SeriesKey, History) per series, in series_keys order."""
    rows = [{"href": f"history/{key.slug()}.html", "label": key.label(), "points": len(h.points),
             "changes": len(h.changes), "causes": sorted({c.cause for c in h.changes})} for key, h in series]
    return ENV.get_template("history_index.html").render(root="", title="history", series=rows)


def history_page(h) -> str:
    return ENV.get_template("history.html").render(root="../", title=f"history {h.key.label()}", h=h,
                                                   figure=figures.history(h))
