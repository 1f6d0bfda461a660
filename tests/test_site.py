"""`hwmatrix site`: a static site over a store, opened in headless Chromium from file:// and
from a plain file server. Records are synthetic but in the stored shape (checked on read)."""
from __future__ import annotations

import json

import pytest

from agent.spec.record import Metric, ResultRecord
from agent.store.backends import open_store
from agent.store.keys import log_key, manifest_key, result_key
from tests.browser import assert_clean, screenshot, serve_dir, visit
from tests.conftest import hwmatrix

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def _record(run: str, cell: str, params: dict, tg: list[float], hw_class="zen4", agent="a1", **extra) -> dict:
    rec = ResultRecord(run_id=run, matrix={"name": "m", "hash": "h"}, cell_id=cell, agent_id=agent, params=params,
                       status="ok", hardware_class=hw_class,
                       hardware={"cpu": {"brand": f"CPU {hw_class}"}, "gpus": {"count": 0, "devices": []}},
                       engine={"kind": "llama.cpp", "commit": "abc1234" * 5},
                       metrics={"tg_tps": Metric.from_samples("tg16", tg, process_sizes=[1] * len(tg))},
                       timestamps={"finished": "2026-11-27T09:00:00"}).model_dump(mode="json")
    rec.update(extra)
    return rec


@pytest.fixture
def store(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    base = [40.0, 40.4, 39.8, 40.2, 40.1, 39.9]
    slow = [x * 0.8 for x in base]
    for hw_class in ("zen4", "zen3"):
        for ref, tg in (("A", base), ("B", slow)):
            cell = f"{ref}-q4"
            rec = _record("r1", cell, {"ref": ref, "quant": "Q4_0"}, tg, hw_class=hw_class, agent=f"{hw_class}-1")
            log = log_key("r1", cell, rec["agent_id"], "stderr.txt")
            rec["logs"] = {"stderr.txt": log}
            store.put(result_key("r1", cell, rec["agent_id"]), json.dumps(rec).encode())
            store.put(log, f"llama-bench said {HOSTILE}\n".encode())
    store.put(manifest_key("r1"), json.dumps({"run_id": "r1", "cells": [], "compare": [
        {"baseline": {"ref": "A"}, "candidate": {"ref": "B"}}]}).encode())
    hostile = _record("r2", "x", {"ref": "A", "quant": "Q4_0", "note": HOSTILE}, base)
    store.put(result_key("r2", "x", "a1"), json.dumps(hostile).encode())
    store.put(result_key("r2", "bad", "a1"), b"[1,2]")
    return store


def test_site_command_writes_an_index_and_a_page_per_run(store, tmp_path):
    out = tmp_path / "site"
    done = hwmatrix("site", "--store", store.url, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "1 stored object(s) skipped" in done.stdout
    for rel in ("index.html", "hardware.html", "runs/r1.html", "runs/r1/records.html", "runs/r2.html",
                "assets/plotly.min.js", "assets/site.js"):
        assert (out / rel).is_file(), rel
    assert "runs/r2/results/bad/a1.json" in (out / "index.html").read_text()


def test_every_page_loads_from_file_with_no_console_error_and_nothing_leaving_the_machine(browser, store, tmp_path):
    from coordinator.site.static import write_site
    out = tmp_path / "site"
    write_site(store, out)
    for rel, shot in (("index.html", "site-runs"), ("runs/r1.html", "site-run"),
                      ("runs/r1/records.html", "site-records"), ("hardware.html", "site-hardware")):
        v = visit(browser, (out / rel).as_uri())
        assert_clean(v)
        screenshot(v.page, shot)
        v.page.context.close()


def test_the_run_page_draws_its_plots_with_data_and_shows_the_verdict_of_its_compare_pair(browser, store, tmp_path):
    from coordinator.site.static import write_site
    out = tmp_path / "site"
    write_site(store, out)
    v = visit(browser, (out / "runs/r1.html").as_uri())
    assert_clean(v)
    traces = v.page.evaluate("Array.from(document.querySelectorAll('div.plot')).map(d => (d.data || []).length)")
    assert traces == [2, 1]          # bars: a trace per class; the forest plot: one trace of ratios
    text = v.page.inner_text("main")
    assert text.count("slower") >= 2 and "-20.0%" in text   # B is 20% slower on both classes
    v.page.context.close()


def test_html_in_params_and_logs_is_shown_as_text_and_never_run(browser, store, tmp_path):
    from coordinator.site.static import write_site
    out = tmp_path / "site"
    write_site(store, out)
    with serve_dir(out) as base:                              # a plain file server works too
        for rel in ("runs/r2.html", "runs/r2/records.html", "runs/r1/records.html"):
            v = visit(browser, base + rel)
            assert_clean(v)
            assert not v.dialogs
            assert v.page.evaluate("""document.querySelectorAll("main img, main script:not([src$='assets/site.js'])").length""") == 0
            if rel != "runs/r1/records.html":
                assert HOSTILE in v.page.inner_text("main")
            v.page.context.close()
        log = next((out / "store").rglob("stderr.txt.txt"))
        v = visit(browser, base + str(log.relative_to(out)))
        assert HOSTILE in v.page.inner_text("body") and not v.dialogs
        v.page.context.close()


@pytest.fixture
def live(store):
    """`hwmatrix serve`'s app on uvicorn, on a free 127.0.0.1 port, in a thread."""
    import socket
    import threading
    import time

    import uvicorn

    from coordinator.site.app import make_app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(store, fresh_s=0.5), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def test_serve_shows_the_same_pages_live_and_clean_and_sees_a_run_added_after_it_started(browser, store, live):
    import time
    import urllib.request

    for rel, shot in (("", "serve-runs"), ("runs/r1.html", "serve-run"), ("runs/r1/records.html", None),
                      ("hardware.html", None)):
        v = visit(browser, live + rel)
        assert_clean(v)
        if rel == "runs/r1.html":
            points = "Array.from(document.querySelectorAll('div.plot')).map(d => d.data.map(t => t.x.length))"
            assert v.page.evaluate(points) == [[2, 2], [2]]     # bars: 2 classes x 2 refs; forest: 2 ratios
        if shot:
            screenshot(v.page, shot)
        v.page.context.close()
    assert "r3" not in urllib.request.urlopen(live).read().decode()
    store.put(result_key("r3", "c", "a1"), json.dumps(_record("r3", "c", {"ref": "A"}, [40.0, 41.0, 40.5])).encode())
    deadline = time.monotonic() + 10                          # re-read in the background every 0.5 s
    while "runs/r3.html" not in urllib.request.urlopen(live).read().decode() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "runs/r3.html" in urllib.request.urlopen(live).read().decode()
    assert not store.exists("runs/r3/index.json") and not store.exists("catalog.json")   # read-only


def test_serve_answers_only_get_and_serves_only_log_keys_as_text(store, live):
    import urllib.error
    import urllib.request

    def status(path: str, method: str = "GET") -> int:
        try:
            return urllib.request.urlopen(urllib.request.Request(live + path, method=method)).status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status("index.html", "POST") == 405 and status("runs/r1.html", "DELETE") == 405
    assert status("store/runs/r1/results/A-q4/zen4-1.json.txt") == 404          # a record is no log
    assert status("store/runs/r1/logs/../../catalog.json.txt") == 404
    assert status("runs/nope.html") == 404
    log = urllib.request.urlopen(live + "store/runs/r1/logs/A-q4/zen4-1/stderr.txt.txt")
    assert log.headers["Content-Type"].startswith("text/plain") and log.headers["X-Content-Type-Options"] == "nosniff"
    assert HOSTILE in log.read().decode()


def test_serve_binds_to_127_0_0_1_unless_told_otherwise():
    from coordinator.cli.main import build_parser
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.func.__name__ == "run_serve"


def test_the_history_page_shows_a_planted_change_point_and_none_in_a_flat_series(browser, tmp_path):
    import random

    from coordinator.results.history import SeriesKey
    from coordinator.site.static import write_site
    store = open_store((tmp_path / "store").as_uri())
    rng = random.Random(15)
    for run in range(20):
        for hw_class, level in (("zen4", 40.0 if run < 12 else 32.0), ("zen3", 40.0)):   # zen4 drops 20% at 12
            tg = [level * rng.gauss(1, 0.03) for _ in range(5)]
            rec = _record(f"n{run:02d}", "c", {"ref": "A", "quant": "Q4_0"}, tg, hw_class=hw_class,
                          agent=f"{hw_class}-1", timestamps={"finished": f"2026-11-{run + 1:02d}T09:00:00"})
            store.put(result_key(rec["run_id"], "c", rec["agent_id"]), json.dumps(rec).encode())
    out = tmp_path / "site"
    write_site(store, out)
    pages = {}
    for hw_class in ("zen4", "zen3"):
        slug = SeriesKey(hw_class, {"quant": "Q4_0"}, "tg_tps").slug()
        v = visit(browser, (out / "history" / f"{slug}.html").as_uri())
        assert_clean(v)
        assert v.page.evaluate("document.getElementById('history-plot').data[0].y.length") == 20
        pages[hw_class] = v
    planted, flat = pages["zen4"].page, pages["zen3"].page
    assert planted.eval_on_selector_all("#changes tr.change", "rows => rows.map(r => r.dataset.index)") == ["12"]
    change = planted.inner_text("#changes tr.change")
    assert "-19." in change or "-20." in change or "-21." in change
    assert "unknown" in change and "no control" in change
    assert planted.evaluate("document.getElementById('history-plot').layout.shapes.length") == 1
    assert flat.query_selector("#no-changes") and not flat.query_selector("#changes")
    assert not flat.evaluate("(document.getElementById('history-plot').layout.shapes || []).length")
    screenshot(planted, "site-history-planted")
    screenshot(flat, "site-history-flat")
    index = visit(browser, (out / "history.html").as_uri())
    assert_clean(index)
    assert index.page.eval_on_selector_all("#series tbody tr", "rows => rows.length") == 2
    screenshot(index.page, "site-history-index")
    for v in (*pages.values(), index):
        v.page.context.close()
