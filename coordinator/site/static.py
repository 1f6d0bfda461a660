"""`hwmatrix site`: the whole site written under one folder, index.html at its root.

Every script and style ships inside (plotly.js from plotly's Python package), pages link
with relative paths, and raw logs are copied beside the pages (each cut at view.LOG_CAP bytes,
saying so), so the folder works offline from file:// or any plain file server."""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from coordinator.site import compare, pages
from coordinator.site.view import load, log_text, settle

ASSETS = ("site.css", "site.js", "compare.js")


@dataclass
class Written:
    pages: dict[str, int] = field(default_factory=dict)      # relative path -> bytes
    seconds: float = 0.0
    records: int = 0
    skipped: int = 0


def _write(out: Path, rel: str, data: str | bytes, written: Written) -> None:
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    path.write_bytes(raw)
    written.pages[rel] = len(raw)


def _copy_log(store, key: str, out: Path, written: Written) -> str | None:
    """The log's path in the site, relative to the records page; None when it is unreadable."""
    data = log_text(store, key)
    if data is None:
        return None
    rel = "store/" + "/".join(quote(part, safe="") for part in key.split("/"))
    _write(out, rel + ".txt", data, written)
    return "../../" + rel + ".txt"


def _write_compare(view, out: Path, written: Written) -> None:
    """The compare page and, since a static site cannot compute, a data file per pair of values
    of each axis (compare.static_pairs; bench/site.py: 70 files, 22 MB over 100,000 records)."""
    _write(out, "compare.html", pages.compare_page(), written)
    indexes = view.axes()
    _write(out, "data/compare/axes.js", compare.script("hwmatrixAxes", compare.axes_listing(indexes, static=True)), written)
    for i, index in enumerate(indexes):
        for b, c in compare.static_pairs(index):
            _write(out, f"data/compare/{i}/{b}-{c}.js",
                   compare.script("hwmatrixCompare", compare.grid(index, index.values[b], index.values[c])), written)


def write_site(store, out_dir: str | Path) -> Written:
    started = time.perf_counter()
    out, written = Path(out_dir), Written()
    view = load(store)
    settle()
    try:
        _write_pages(store, view, out, written)
    finally:
        gc.unfreeze()                   # the build's objects are the collector's again
    written.records, written.skipped = len(view.all_records()), len(view.skipped)
    written.seconds = time.perf_counter() - started
    return written


def _write_pages(store, view, out: Path, written: Written) -> None:
    import plotly.offline

    for name in ASSETS:
        _write(out, f"assets/{name}", resources.files("coordinator.site").joinpath("assets", name).read_bytes(),
               written)
    _write(out, "assets/plotly.min.js", plotly.offline.get_plotlyjs(), written)
    _write(out, "index.html", pages.runs_page(view), written)
    _write(out, "hardware.html", pages.hardware_page(view), written)
    series = view.histories()
    _write(out, "history.html", pages.history_index(series), written)
    for key, h in series:
        _write(out, f"history/{key.slug()}.html", pages.history_page(h), written)
    _write_compare(view, out, written)
    for run_id in view.records:
        safe = quote(run_id, safe="")
        _write(out, f"runs/{safe}.html", pages.run_page(view, run_id), written)
        _write(out, f"runs/{safe}/records.html",
               pages.records_page(view, run_id, lambda key: _copy_log(store, key, out, written)), written)
