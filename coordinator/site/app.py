"""`hwmatrix serve`: the site's pages live, from the store as it changes (read-only).

A Starlette app on uvicorn: the same templates and paths as the static site, so a link works
in both. The store is read with write=False (no index or catalog written back), and re-read
in the background every FRESH_S seconds; logs are served from the store as text/plain with
nosniff, and only keys under runs/<id>/logs/. Only GET and HEAD are answered."""
from __future__ import annotations

import contextlib
import threading
from importlib import resources
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Route

from agent.store.keys import StoreError
from coordinator.site import compare, pages
from coordinator.site.view import SiteView, load, log_text, refreshed, settle

FRESH_S = 2.0
TYPES = {"css": "text/css", "js": "text/javascript"}
# scripts only from the site itself: even a record that got past escaping could not run one
SAFE = {"X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"}


class LiveView:
    """The store's SiteView. The first get() (the app's startup) reads it all; then a background thread
    re-reads, every ``fresh_s`` seconds, only the runs whose listing changed, and swaps the
    view in: a request never waits for the store."""

    def __init__(self, store, fresh_s: float = FRESH_S, warm=lambda view: None):
        self.store, self.fresh_s, self.warm = store, fresh_s, warm      # warm(view): pre-render before use
        self._view: SiteView | None = None
        self._listings: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def get(self) -> SiteView:
        with self._lock:
            if self._view is None:
                view = load(self.store, write=False)
                refreshed(self.store, view, self._listings)     # the listings it was read at
                self.warm(view)
                settle()
                self._view = view
                threading.Thread(target=self._watch, daemon=True, name="hwmatrix-serve-refresh").start()
            return self._view

    def _watch(self) -> None:
        while not self._stop.wait(self.fresh_s):
            try:
                view = refreshed(self.store, self._view, self._listings)
            except (StoreError, OSError):
                continue                    # the store is down: keep showing what was read
            if view is not None:
                self.warm(view)
                settle()
                self._view = view

    def close(self) -> None:
        self._stop.set()


def make_app(store, fresh_s: float = FRESH_S) -> Starlette:
    def warm(view: SiteView) -> None:
        """The pages that read every record (front page, hardware, history index), rendered
        before a view is served, so their first GET does not pay for it (1 s at 100,000 records)."""
        for path, render in (("/", pages.runs_page), ("/index.html", pages.runs_page),
                             ("/hardware.html", pages.hardware_page),
                             ("/history.html", lambda v: pages.history_index(v.histories())),
                             ("/data/compare/axes.js", axes_script)):
            view.pages[path] = render(view)

    def axes_script(view: SiteView) -> str:
        return compare.script("hwmatrixAxes", compare.axes_listing(view.axes()))

    live = LiveView(store, fresh_s, warm)
    plotly_js: list[str] = []

    def cached(request, render, media_type: str = "text/html") -> Response:
        """A page rendered once per view of the store (a new view when the store changed)."""
        view = live.get()
        path = request.url.path
        if path not in view.pages:
            view.pages[path] = render(view)
        return Response(view.pages[path], media_type=media_type, headers=SAFE)

    def index(request):
        return cached(request, pages.runs_page)

    def hardware(request):
        return cached(request, pages.hardware_page)

    def history_index(request):
        return cached(request, lambda view: pages.history_index(view.histories()))

    def history_page(request):
        found = [h for key, h in live.get().histories() if key.slug() == request.path_params["slug"]]
        if not found:
            raise HTTPException(404, "no such series")
        return cached(request, lambda view: pages.history_page(found[0]))

    def compare_page(request):
        return cached(request, lambda view: pages.compare_page())

    def compare_axes(request):
        return cached(request, axes_script, TYPES["js"])

    def compare_grid(request):
        """Any pair, computed on demand (a static site holds only compare.static_pairs)."""
        p = request.path_params

        def render(view: SiteView) -> str:
            indexes = view.axes()
            if not (p["axis"] < len(indexes) and max(p["base"], p["cand"]) < len(indexes[p["axis"]].values)
                    and p["base"] != p["cand"]):
                raise HTTPException(404, "no such axis or value")
            index = indexes[p["axis"]]
            return compare.script("hwmatrixCompare",
                                  compare.grid(index, index.values[p["base"]], index.values[p["cand"]]))
        return cached(request, render, TYPES["js"])

    def run_view(request) -> tuple[SiteView, str]:
        view, run_id = live.get(), request.path_params["run"]
        if run_id not in view.records:
            raise HTTPException(404, f"no run {run_id!r} in the store")
        return view, run_id

    def run(request):
        _, run_id = run_view(request)
        return cached(request, lambda view: pages.run_page(view, run_id))

    def records(request):
        _, run_id = run_view(request)
        return cached(request, lambda view: pages.records_page(view, run_id, lambda key: f"../../store/{key}.txt"))

    def asset(request):
        name = request.path_params["name"]
        if name == "plotly.min.js":
            if not plotly_js:
                import plotly.offline
                plotly_js.append(plotly.offline.get_plotlyjs())
            return Response(plotly_js[0], media_type="text/javascript", headers=SAFE)
        if name not in ("site.css", "site.js", "compare.js"):
            raise HTTPException(404)
        data = resources.files("coordinator.site").joinpath("assets", name).read_bytes()
        return Response(data, media_type=TYPES[name.rsplit(".", 1)[1]], headers=SAFE)

    def log(request):
        key = unquote(request.path_params["key"]).removesuffix(".txt")
        parts = key.split("/")
        if len(parts) < 4 or parts[0] != "runs" or parts[2] != "logs" or ".." in parts:
            raise HTTPException(404)
        data = log_text(store, key)
        if data is None:
            raise HTTPException(404)
        return Response(data, media_type="text/plain; charset=utf-8", headers=SAFE)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        """The store is read before uvicorn accepts a connection, so no request waits for it
        (40 s at 100,000 records: the server starts slowly, every page answers fast)."""
        live.get()
        yield
        live.close()

    get = ["GET", "HEAD"]
    app = Starlette(lifespan=lifespan, routes=[
        Route("/", index, methods=get), Route("/index.html", index, methods=get),
        Route("/hardware.html", hardware, methods=get), Route("/history.html", history_index, methods=get),
        Route("/history/{slug}.html", history_page, methods=get),
        Route("/compare.html", compare_page, methods=get), Route("/data/compare/axes.js", compare_axes, methods=get),
        Route("/data/compare/{axis:int}/{base:int}-{cand:int}.js", compare_grid, methods=get),
        Route("/runs/{run}.html", run, methods=get), Route("/runs/{run}/records.html", records, methods=get),
        Route("/assets/{name}", asset, methods=get), Route("/store/{key:path}", log, methods=get),
    ])
    app.state.live = live
    return app


def serve(store, host: str = "127.0.0.1", port: int = 8765) -> None:
    import uvicorn
    uvicorn.run(make_app(store), host=host, port=port, log_level="warning")
