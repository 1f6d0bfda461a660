"""`hwmatrix site`: a static site over a store, opened in headless Chromium from file:// and
from a plain file server. Records are synthetic but in the stored shape (checked on read)."""
from __future__ import annotations

import contextlib
import json
from urllib.parse import urlencode

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


@contextlib.contextmanager
def serving(store, app=None):
    """`hwmatrix serve`'s app (or ``app``) on uvicorn, on a free 127.0.0.1 port, in a thread."""
    import socket
    import threading
    import time

    import uvicorn

    from coordinator.site.app import make_app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app or make_app(store, fresh_s=0.5), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def live(store):
    with serving(store) as base:
        yield base


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


def test_serve_reads_the_store_at_startup_so_no_request_waits_for_it(store):
    import urllib.request

    from coordinator.site.app import make_app
    app = make_app(store, fresh_s=60)
    assert app.state.live._view is None
    with serving(store, app) as base:               # uvicorn runs the lifespan before it listens
        assert app.state.live._view is not None and "/" in app.state.live._view.pages
        assert "runs/r1.html" in urllib.request.urlopen(base).read().decode()


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


# ------------------------------------------------------------------------------ compare page

@pytest.fixture
def compare_store(tmp_path):
    """ref A against B: 20% slower on zen4 and zen3 (one run measured both), on zen2 only from
    two runs, an imported class with posted means, and 14 thread counts (more than a static site
    holds every pair of) on zen4. A hostile value sits on its own axis."""
    store = open_store((tmp_path / "store").as_uri())
    base = [40.0, 40.4, 39.8, 40.2, 40.1, 39.9]

    def put(rec):
        store.put(result_key(rec["run_id"], rec["cell_id"], rec["agent_id"]), json.dumps(rec).encode())
    for hw_class in ("zen4", "zen3"):
        for ref, factor in (("A", 1.0), ("B", 0.8)):
            put(_record("r1", f"{ref}-q4", {"ref": ref, "quant": "Q4_0"}, [x * factor for x in base],
                        hw_class=hw_class, agent=f"{hw_class}-1"))
    put(_record("r1", "A-q4", {"ref": "A", "quant": "Q4_0"}, base, hw_class="zen2", agent="zen2-1"))
    put(_record("r2", "B-q4", {"ref": "B", "quant": "Q4_0"}, [x * 0.8 for x in base], hw_class="zen2", agent="zen2-1"))
    for ref, mean in (("A", 41.0), ("B", 30.0)):
        put(_record("imp", f"{ref}-q4", {"ref": ref, "quant": "Q4_0"}, [mean], hw_class="posted-3090",
                    agent="someone", origin="imported"))
    for t in range(1, 15):
        put(_record("r3", f"t{t}", {"ref": "A", "quant": "Q8_0", "threads": t}, [x * (1 + t / 10) for x in base]))
    for note in ("plain", HOSTILE):
        put(_record("r4", f"n-{len(note)}", {"ref": "A", "quant": "Q6_K", "note": note}, base))
    return store


def _compare_url(base: str, axis: str, baseline: str, candidate: str) -> str:
    return base + "compare.html?" + urlencode({"axis": axis, "baseline": baseline, "candidate": candidate})


HEATMAP = """Array.from(document.querySelectorAll('#plots div.plot')).map(d => ({
    classes: d.data[0].y, cells: d.data[0].x, z: d.data[0].z, text: d.data[0].text}))"""
FORM = "['axis', 'baseline', 'candidate'].map(id => document.getElementById(id).value)"


def test_compare_grid_takes_the_run_that_measured_both_and_says_when_the_sides_come_from_two_runs(compare_store):
    from coordinator.site.compare import CROSS_RUN, grid
    from coordinator.site.view import load
    ref = next(ix for ix in load(compare_store, write=False).axes() if ix.name == "ref")
    data = grid(ref, "A", "B")
    rows = {r["class"]: r for r in data["rows"]}
    assert set(rows) == {"zen4", "zen3", "zen2", "posted-3090"}
    assert rows["zen4"]["verdict"] == rows["zen3"]["verdict"] == "slower" and rows["zen4"]["runs"] == ["r1", "r1"]
    assert rows["zen4"]["ratio"] == pytest.approx(0.8, abs=1e-3)
    assert rows["zen2"]["runs"] == ["r1", "r2"] and CROSS_RUN in [data["notes"][w] for w in rows["zen2"]["warnings"]]
    assert rows["zen2"]["test"] != "sequential"
    assert rows["posted-3090"]["verdict"] == "not compared" and rows["posted-3090"]["imported"]
    assert rows["posted-3090"]["ratio"] == pytest.approx(30 / 41, abs=1e-3)
    assert [c["imported"] for c in data["classes"]] == [False, False, False, True]     # imported last
    assert {r["class"]: r["verdict"] for r in grid(ref, "B", "A")["rows"]}["zen4"] == "faster"


def test_a_compare_permalink_round_trips_from_file_and_the_heatmap_is_coloured_by_verdict(browser, compare_store,
                                                                                            tmp_path):
    from coordinator.site.static import write_site
    out = tmp_path / "site"
    write_site(compare_store, out)
    v = visit(browser, _compare_url((out / "x").as_uri()[:-1], "ref", "A", "B"), wait_for="#heatmap-tg_tps")
    assert_clean(v)
    assert v.page.evaluate(FORM) == ["ref", "A", "B"]
    assert json.loads(v.page.get_attribute("body", "data-query")) == {"axis": "ref", "baseline": "A", "candidate": "B"}
    (heat,) = v.page.evaluate(HEATMAP)
    assert heat["classes"][-1] == "posted-3090 (imported)" and len(heat["classes"]) == 4
    verdicts = {row[0]: heat["z"][i][0] for i, row in enumerate([[c] for c in heat["classes"]])}
    order = ["slower", "unknown", "same", "faster", "not compared", "same binary"]
    assert order[verdicts["posted-3090 (imported)"]] == "not compared"
    assert sorted(order[z[0]] for z in heat["z"][:3]).count("slower") >= 2
    assert heat["text"][0][0] == "0.800"
    state = v.page.inner_text("#state")
    assert "ref: A \u2192 B: 4 hardware class(es)" in state and "not compared" in state
    assert "different runs" in v.page.inner_text("#rows")
    screenshot(v.page, "site-compare")

    v.page.select_option("#baseline", "B")          # the form builds the next permalink
    v.page.select_option("#candidate", "A")
    with v.page.expect_navigation():
        v.page.click("#go")
    assert "axis=ref&baseline=B&candidate=A" in v.page.url
    v.page.wait_for_selector("#heatmap-tg_tps")
    assert v.page.inner_text("#permalink") == v.page.url
    again = visit(browser, v.page.url, wait_for="#heatmap-tg_tps")   # the pasted link opens the same view
    assert_clean(again)
    assert again.page.evaluate(FORM) == ["ref", "B", "A"]
    assert again.page.evaluate(HEATMAP) == v.page.evaluate(HEATMAP)
    assert "faster" in again.page.inner_text("#state")
    for visited in (v, again):
        visited.context.close()


def test_serve_computes_a_compare_pair_the_static_site_left_out_and_shows_hostile_values_as_text(
        browser, compare_store, tmp_path):
    from coordinator.site.static import write_site
    out = tmp_path / "site"
    write_site(compare_store, out)
    static = visit(browser, _compare_url((out / "x").as_uri()[:-1], "threads", "3", "9"))
    static.page.wait_for_function("document.getElementById('state').textContent.includes('not in this static site')")
    assert_clean(static)
    static.context.close()
    with serving(compare_store) as live:
        v = visit(browser, _compare_url(live, "threads", "3", "9"), wait_for="#heatmap-tg_tps")
        assert_clean(v)
        (heat,) = v.page.evaluate(HEATMAP)
        assert heat["classes"] == ["CPU zen4 (zen4)"] and heat["text"][0][0] == f"{1.9 / 1.3:.3f}"
        v.context.close()
        hostile = visit(browser, _compare_url(live, "note", HOSTILE, "plain"), wait_for="#heatmap-tg_tps")
        assert_clean(hostile)
        assert HOSTILE in hostile.page.evaluate("Array.from(document.querySelectorAll('#baseline option')).map(o => o.textContent)")
        assert hostile.page.evaluate("document.querySelectorAll('main img').length") == 0
        screenshot(hostile.page, "serve-compare-hostile")
        hostile.context.close()
