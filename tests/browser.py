"""Headless-browser harness for the HTML outputs (report, results site).

Uses Debian's /usr/bin/chromium (or $HWMATRIX_CHROMIUM) through Playwright's executable_path:
Playwright's own browser downloads are never used. A page under test must work offline, so
every request leaving the machine is recorded and aborted, and console errors are collected:
``assert_clean`` turns both into a test failure.

    browser            session fixture: a launched playwright Browser
    visit(browser, url, wait_for=None) -> Visit   (.page .console_errors .outside_requests .dialogs)
    assert_clean(visit)
    screenshot(page, name, max_height=8000) -> Path
    serve_dir(path)    context manager -> "http://127.0.0.1:PORT/"
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]   # without the background-networking flags chromium tries the network
LOCAL_SCHEMES = {"file", "data", "blob", "about"}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
VIEWPORT = {"width": 1400, "height": 900}
TIMEOUT_MS = 15_000       # a broken page fails in seconds, not at pytest-timeout


def chromium_path() -> str:
    return os.environ.get("HWMATRIX_CHROMIUM") or "/usr/bin/chromium"


def _unavailable(message: str):
    """Fail, never silently pass; HWMATRIX_SKIP_BROWSER=1 opts out explicitly."""
    if os.environ.get("HWMATRIX_SKIP_BROWSER") == "1":
        pytest.skip(message)
    pytest.fail(f"{message} (tests/run.sh installs it; set HWMATRIX_SKIP_BROWSER=1 to skip browser tests)",
                pytrace=False)


@pytest.fixture(scope="session")
def browser():
    """Headless chromium for the whole session; each visit() gets a fresh context."""
    exe = chromium_path()
    if not os.access(exe, os.X_OK):
        _unavailable(f"chromium not found at {exe} (set HWMATRIX_CHROMIUM or apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is missing (pip install -e '.[test]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def is_outside(url: str) -> bool:
    """True for a request that would leave the machine."""
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return False
    return not (parts.scheme in ("http", "https", "ws", "wss") and parts.hostname in LOCAL_HOSTS)


@dataclass
class Visit:
    """One page load and what it did; usable as a context manager that closes its context."""
    page: object
    context: object
    console_errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.context.close()

    def __enter__(self) -> Visit:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def visit(browser, url: str, wait_for: str | None = None) -> Visit:
    """Open ``url`` in a fresh 1400x900 context, recording from the first request on;
    outside requests are aborted (the network is closed: never wait on it) but recorded.
    Dialogs (alert, confirm) are recorded and dismissed. ``wait_for``: a selector to await."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    v = Visit(page, context)

    def on_request(request):
        if is_outside(request.url):
            v.outside_requests.append(request.url)

    def route(r):
        if is_outside(r.request.url):
            r.abort()
        else:
            r.continue_()

    def on_websocket(ws):
        if is_outside(ws.url):
            v.outside_requests.append(ws.url)

    def on_dialog(dialog):
        v.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    context.on("request", on_request)
    context.route("**/*", route)
    page.on("websocket", on_websocket)
    page.on("console", lambda m: m.type == "error" and v.console_errors.append(
        f"console.error: {m.text} ({m.location.get('url', '')}:{m.location.get('lineNumber', '')})"))
    page.on("pageerror", lambda e: v.console_errors.append(f"uncaught: {e}"))
    page.on("dialog", on_dialog)
    try:
        page.goto(url, wait_until="load")
        if wait_for:
            page.wait_for_selector(wait_for)
    except Exception:
        context.close()
        raise
    return v


def assert_clean(v: Visit) -> None:
    """No console errors, no uncaught exceptions, no dialogs, no request leaving the machine."""
    problems = [*(f"console: {e}" for e in v.console_errors),
                *(f"outside request: {u}" for u in v.outside_requests),
                *(f"dialog: {d}" for d in v.dialogs)]
    assert not problems, f"{v.page.url} is not clean:\n  " + "\n  ".join(problems)


def screenshots_dir() -> Path:
    path = Path(os.environ.get("HWMATRIX_SCREENSHOTS") or REPO / "test-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(page, name: str, max_height: int = 8000) -> Path:
    """A full-page PNG for a human to look at after the run, cut at ``max_height`` px: a
    full report is ~100,000 px tall and chromium takes 30 s to paint that without a GPU."""
    path = screenshots_dir() / f"{name}.png"
    size = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    clip = {"x": 0, "y": 0, "width": size[0], "height": min(size[1], max_height)}
    page.screenshot(path=str(path), full_page=True, clip=clip)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve_dir(path):
    """A plain static file server on 127.0.0.1 (what a user gets from `python -m http.server`)."""
    handler = functools.partial(_QuietHandler, directory=str(path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
