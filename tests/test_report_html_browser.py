"""`hwmatrix report --format html` as a user sees it: opened from file:// in headless chromium.
Also proves the harness's detectors (tests/browser.py) catch what they claim to."""
from __future__ import annotations

import importlib.util
import urllib.request

import pytest

from coordinator import reports
from tests.browser import REPO, assert_clean, screenshot, serve_dir, visit

HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>"]


def _bench_report():
    spec = importlib.util.spec_from_file_location("bench_report", REPO / "bench" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def synthetic():
    return _bench_report().make_records(300)


def test_html_report_opens_offline_with_decoded_plots_and_tables(browser, synthetic, tmp_path):
    records, comparisons = synthetic
    path = tmp_path / "report.html"
    reports.render("html", records, comparisons, out_path=path)
    with visit(browser, path.as_uri(), wait_for="h1") as v:
        assert_clean(v)
        assert v.page.locator("h1").inner_text() == "hwmatrix report"
        widths = v.page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        assert widths and all(w > 0 for w in widths), f"undecoded plots: {widths}"
        assert v.page.locator("table").count() >= 3
        assert v.page.locator("table tbody tr").count() > 10
        assert screenshot(v.page, "report-html").stat().st_size > 10_000


def _params_report(records, values, tmp_path, name):
    """The report of ``records`` with params.note cycling through ``values`` (so it is a shown axis)."""
    out = []
    for i, rec in enumerate(records):
        out.append({**rec, "params": {**rec["params"], "note": values[i % len(values)]}})
    path = tmp_path / f"{name}.html"
    reports.render("html", out, [], out_path=path)
    return path


def test_hostile_params_render_as_text_not_markup(browser, synthetic, tmp_path):
    records = [r for r in synthetic[0] if r["status"] == "ok"][:40]
    safe = _params_report(records, ["safe-a", "safe-b"], tmp_path, "safe")
    hostile = _params_report(records, HOSTILE, tmp_path, "hostile")
    count = "sel => document.querySelectorAll(sel).length"
    with visit(browser, safe.as_uri()) as v:
        baseline = {sel: v.page.evaluate(count, sel) for sel in ("img", "script", "[onerror]")}
    with visit(browser, hostile.as_uri()) as v:
        assert_clean(v)                       # also: no alert() dialog opened, no request to "x"
        text = v.page.locator("body").inner_text()
        for value in HOSTILE:
            assert value in text
        assert {sel: v.page.evaluate(count, sel) for sel in baseline} == baseline
        assert baseline["[onerror]"] == 0 and baseline["script"] == 0


def _page(tmp_path, body: str):
    path = tmp_path / "page.html"
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{body}</body></html>")
    return path.as_uri()


def test_harness_reports_console_errors_and_uncaught_exceptions(browser, tmp_path):
    url = _page(tmp_path, "<p>hi</p><script>console.error('x'); throw new Error('boom')</script>")
    with visit(browser, url) as v:
        assert any("console.error: x" in e for e in v.console_errors), v.console_errors
        assert any("boom" in e for e in v.console_errors), v.console_errors
        assert v.outside_requests == []
        with pytest.raises(AssertionError, match="console.error: x"):
            assert_clean(v)


def test_harness_records_and_blocks_outside_requests(browser, tmp_path):
    url = _page(tmp_path, '<img src="http://example.com/x.png"><script>alert("hi")</script>')
    with visit(browser, url) as v:
        assert v.outside_requests == ["http://example.com/x.png"]
        assert v.dialogs == ["alert: hi"]
        with pytest.raises(AssertionError, match="outside request: http://example.com/x.png"):
            assert_clean(v)


def test_harness_serves_a_folder_and_counts_localhost_as_inside(browser, tmp_path):
    (tmp_path / "index.html").write_text("<!DOCTYPE html><title>t</title><h1 id='hi'>served</h1>"
                                         "<img src='pixel.svg'>")
    (tmp_path / "pixel.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg' width='4' height='4'/>")
    with serve_dir(tmp_path) as base:
        assert base.startswith("http://127.0.0.1:")
        assert b"served" in urllib.request.urlopen(base, timeout=5).read()
        with visit(browser, base, wait_for="#hi") as v:
            assert_clean(v)
            assert v.page.locator("#hi").inner_text() == "served"
