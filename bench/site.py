"""bench/site: how long does `hwmatrix site` take over 100,000 records, and how big are its pages?

The records are bench/report.py's synthetic ones (stored shape: 10 samples a metric, llama-bench
rows, sweep-bench rows, 20 hardware classes, about 30 runs), written into a file:// store once.
The site is then built twice: cold (every run indexed from its records) and again over the
indexes, which is what a user re-building after a run pays. Target: the build under 60 s.

    python bench/site.py [N_RECORDS] [WORK_DIR]

Then `hwmatrix serve`'s app answers each kind of page 6 times (target: under 1 s each, first included),
the largest compare pair among them (computed on demand there; the static site holds a file per pair).
The last line is ``site_build_s=<indexed build> cold_s=<first build> live_max_s=<slowest page> records=<N>``.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from agent.store.backends import open_store  # noqa: E402
from agent.store.keys import result_key  # noqa: E402
from coordinator.site.static import write_site  # noqa: E402
from report import make_records  # noqa: E402

TARGET_S = 60.0
LIVE_TARGET_S = 1.0


def fill(store, records: list[dict]) -> None:
    for rec in records:
        store.put(result_key(rec["run_id"], rec["cell_id"], rec["agent_id"]), json.dumps(rec).encode())


def main() -> int:
    """Over a WORK_DIR it is given, the store and sites are kept; a temporary one (1.3 GB at
    100,000 records) is removed at the end."""
    if len(sys.argv) > 2:
        return bench(Path(sys.argv[2]))
    work = Path(tempfile.mkdtemp(prefix="hwmatrix-site-bench-"))
    try:
        return bench(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work: Path) -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    records, _ = make_records(n)
    seen: Counter = Counter()
    for rec in records:      # one agent per class (imported ones too) records each cell once per run
        rec["cell_id"] = f"{rec['cell_id']}-{rec['params']['tool'][6:]}"
        rec["agent_id"] = f"agent-{rec['hardware_class'][-12:]}"
        group = (rec["cell_id"], rec["agent_id"])
        rec["run_id"] = f"run-{seen[group]}"
        seen[group] += 1
    store = open_store((work / "store").as_uri())
    t = time.perf_counter()
    fill(store, records)
    print(f"stored {len(records)} records in {len(Counter(r['run_id'] for r in records))} runs "
          f"in {time.perf_counter() - t:.1f} s")
    times = []
    for label in ("cold", "indexed"):
        out = work / f"site-{label}"
        shutil.rmtree(out, ignore_errors=True)
        written = write_site(store, out)
        times.append(written.seconds)
        sizes = sorted(written.pages.items(), key=lambda kv: -kv[1])
        total = sum(written.pages.values())
        print(f"{label:>8}: {written.seconds:6.1f} s, {len(written.pages)} files, {total / 1e6:.1f} MB, "
              f"{written.records} records; largest: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes[:3]))
    print(f"pages: index.html {written.pages['index.html'] / 1e3:.0f} kB, hardware.html "
          f"{written.pages['hardware.html'] / 1e3:.0f} kB, a run page "
          f"{next(v for k, v in written.pages.items() if k.startswith('runs/') and k.count('/') == 1) / 1e6:.2f} MB")
    compare_files = [k for k in written.pages if k.startswith("data/compare/") and k.count("/") == 3]
    print(f"compare: {len(compare_files)} data files, {sum(written.pages[k] for k in compare_files) / 1e6:.1f} MB, "
          f"largest {max(written.pages[k] for k in compare_files) / 1e6:.2f} MB")
    one_of = [next(k for k in written.pages if k.startswith(prefix) and k.count("/") == 1)
              for prefix in ("runs/", "history/")] + ["compare.html", "data/compare/axes.js", max(compare_files, key=written.pages.get)]
    live = live_times(store, one_of)
    slowest = max(live.values())
    ok = times[1] < TARGET_S and slowest < LIVE_TARGET_S
    print(f"targets: build < {TARGET_S:g} s, live page < {LIVE_TARGET_S:g} s: {'ok' if ok else 'MISSED'}")
    print(f"site_build_s={times[1]:.1f} cold_s={times[0]:.1f} live_max_s={slowest:.2f} records={len(records)}")
    return 0 if ok else 1


def live_times(store, pages: list[str]) -> dict[str, float]:
    """`hwmatrix serve`'s app on a free port: startup loads the store (timed apart); then per
    page its first GET (renders it) and the median of 5 more (cached until the store changes);
    a page's figure is the larger of the two."""
    import socket
    import statistics
    import threading
    import urllib.request

    import uvicorn

    from coordinator.site.app import make_app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(store), host="127.0.0.1", port=port, log_level="warning"))
    t = time.perf_counter()
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    print(f"live: startup (reads the whole store before accepting a connection) {time.perf_counter() - t:.1f} s")
    base = f"http://127.0.0.1:{port}/"
    out = {}
    for page in ["index.html", "hardware.html", "history.html", *pages]:
        took = []
        for _ in range(6):
            t = time.perf_counter()
            urllib.request.urlopen(f"{base}{page}", timeout=60).read()
            took.append(time.perf_counter() - t)
        print(f"live: {page} first {took[0] * 1e3:.0f} ms, then median {statistics.median(took[1:]) * 1e3:.0f} ms")
        out[page] = max(took[0], statistics.median(took[1:]))
    server.should_exit = True
    return out


if __name__ == "__main__":
    sys.exit(main())
