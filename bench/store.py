"""bench/store: the s3:// store against a real S3 server (SeaweedFS `weed mini`, started here
through tests.seaweed.SeaweedS3 on loopback, its data in a temp dir).

1. Upload: N records (bench/report.py's synthetic records) with two logs each (stdout.txt
   2 KB, build.log 20 KB), spooled and delivered as an agent does (agent.store.spool.spool_record,
   then deliver), 8 deliveries at once, straight to the store with the coordinator's
   credentials; then a smaller batch through presigned grants (coordinator.cluster.uploads.Granter).
   Prints records/s and objects/s.
2. Report over those N records: load_records cold (builds each run's index and the catalog
   from the records) and warm (catalog + index), then the markdown render.
3. Report over 10,000 records put straight into the store (16 PUTs at once, no logs), spread
   over 5 runs and 20 hardware classes (each class in a few runs, so the catalog can skip
   runs): cold index build, the warm report (load_records + markdown; target under 10 s),
   and a warm query for one class.

    python -m bench.store [--upload N] [--granted N] [--report-records N] [--runs N] [--profile] [--keep]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import secrets
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.store import spool
from agent.store.backends import open_store
from agent.store.keys import result_key
from bench.report import make_records
from coordinator.results.records import load_records
from coordinator.reports import render
from coordinator.cluster.uploads import Granter  # imports ray, as the coordinator does
from tests.seaweed import SeaweedS3

TARGET_S = 10.0
DELIVER_THREADS, PUT_THREADS = 8, 16


def records_for_store(n: int, runs: int, seed: int = 1) -> list[dict]:
    """bench/report.py's records, given store keys that do not collide: one agent per class,
    sweep cells named apart, and a class's k-th record of a cell in run (class + k) % runs."""
    records, used, classes = make_records(n, seed)[0], set(), {}
    for rec in records:
        ci = classes.setdefault(rec["hardware_class"], len(classes))
        rec["agent_id"] = f"agent-{ci:02d}"
        base = rec["cell_id"] + ("-sweep" if rec["params"]["tool"] == "llama-sweep-bench" else "")
        occ = 0
        while True:
            run_id = f"bench-{(ci + occ) % runs}"
            cell_id = base + (f"-r{occ // runs}" if occ >= runs else "")
            if (run_id, cell_id, rec["agent_id"]) not in used:
                break
            occ += 1
        used.add((run_id, cell_id, rec["agent_id"]))
        rec.update(run_id=run_id, cell_id=cell_id)
        rec["timestamps"]["finished"] = f"2026-03-0{1 + (ci + occ) % runs}T13:00:00Z"
    return records


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def upload(store_url: str, records: list[dict], logs: dict[str, Path], granter: Granter | None = None) -> float:
    """Spool and deliver every record, DELIVER_THREADS at once; returns the wall time."""
    def one(rec: dict) -> str:
        entry = spool.spool_record(store_url, rec, logs)
        grant = (lambda items: granter.grant(rec["agent_id"], items)) if granter else None
        return spool.deliver(entry, grant=grant, delays=())

    with ThreadPoolExecutor(DELIVER_THREADS) as pool:
        _, dt = timed(lambda: list(pool.map(one, records)))
    return dt


def report(store, **filters) -> tuple[int, float, float]:
    """(records, load_records seconds, markdown render seconds)."""
    records, t_load = timed(load_records, store, **filters)
    _, t_render = timed(render, "md", records, [], None)
    return len(records), t_load, t_render


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upload", type=int, default=1000, metavar="N", help="records uploaded with logs (1000)")
    ap.add_argument("--granted", type=int, default=200, metavar="N", help="records uploaded through grants (200)")
    ap.add_argument("--report-records", type=int, default=10_000, metavar="N", help="records in the report (10000)")
    ap.add_argument("--runs", type=int, default=5, help="runs the records are spread over (5)")
    ap.add_argument("--profile", action="store_true", help="cProfile the warm report, print the top 25")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (server data, weed.log, spool)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="hwmatrix-store-bench-"))
    os.environ["HWMATRIX_SPOOL"] = str(tmp / "spool")
    logs = {"stdout.txt": tmp / "stdout.txt", "build.log": tmp / "build.log"}
    logs["stdout.txt"].write_text("| model | size | params | backend | threads | test | t/s |\n" * 34)   # ~2 KB
    logs["build.log"].write_text("[ 42%] Building CXX object ggml/src/CMakeFiles/ggml-cpu.dir/ops.cpp.o\n" * 290)
    server, t_start = timed(lambda: SeaweedS3(tmp / "seaweed").start())
    os.environ.update(server.env())
    print(f"SeaweedFS at {server.endpoint} (bucket {server.bucket}) up in {t_start:.1f} s; temp dir {tmp}")
    try:
        base = f"s3://{server.bucket}/bench-{secrets.token_hex(4)}"

        # 1. upload with logs, as agents deliver
        url = f"{base}-upload"
        records = records_for_store(args.upload, args.runs)
        dt = upload(url, records, logs)
        print(f"upload direct:  {len(records)} records + {2 * len(records)} logs in {dt:.1f} s: "
              f"{len(records) / dt:.0f} records/s, {3 * len(records) / dt:.0f} objects/s ({DELIVER_THREADS} threads)")
        granted = records_for_store(args.granted, 1, seed=2)
        for rec in granted:
            rec["run_id"] = "bench-granted"
        gstore = open_store(f"{base}-granted")
        granter = Granter(gstore, "bench-granted", {r["cell_id"] for r in granted})
        dt = upload(gstore.url, granted, logs, granter)
        print(f"upload granted: {len(granted)} records + {2 * len(granted)} logs in {dt:.1f} s: "
              f"{len(granted) / dt:.0f} records/s, {3 * len(granted) / dt:.0f} objects/s (presigned PUTs)")
        left = spool.pending()
        if left:
            print(f"  WARNING: {len(left)} spool entries left undelivered")

        # 2. the report over the uploaded records
        store = open_store(url)
        for label in ("cold", "warm"):
            n, t_load, t_render = report(store)
            print(f"report over {n} uploaded records, {label}: load_records {t_load:.2f} s + markdown "
                  f"{t_render:.2f} s = {t_load + t_render:.2f} s")

        # 3. the report over report-records records, put straight into the store
        store = open_store(f"{base}-report")
        records = records_for_store(args.report_records, args.runs)
        with ThreadPoolExecutor(PUT_THREADS) as pool:
            _, dt = timed(lambda: list(pool.map(lambda r: store.put(
                result_key(r["run_id"], r["cell_id"], r["agent_id"]),
                json.dumps(r, indent=1, sort_keys=True).encode()), records)))
        print(f"put {len(records)} records in {dt:.1f} s: {len(records) / dt:.0f} records/s ({PUT_THREADS} threads)")
        n, t_load, t_render = report(store)
        print(f"cold: load_records (index + catalog built from {n} records) {t_load:.2f} s, markdown {t_render:.2f} s")
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        n, t_load, t_render = report(store)
        if profiler:
            profiler.disable()
        total = t_load + t_render
        print(f"warm: load_records {t_load:.2f} s, markdown {t_render:.2f} s")
        print(f"report over {n} records from the endpoint: {total:.2f} s (target {TARGET_S:g} s: "
              f"{'ok' if total < TARGET_S else 'MISSED'})")
        in_runs = {}                    # class -> runs holding it, from the catalog
        for summary in json.loads(store.get("catalog.json"))["runs"].values():
            for c in summary["classes"]:
                in_runs[c] = in_runs.get(c, 0) + 1
        hw_class = min(in_runs, key=in_runs.get)
        n_cls, t_load, t_render = report(store, hw_class=hw_class)
        print(f"warm, --class {hw_class} (in {in_runs[hw_class]} of {args.runs} runs): {n_cls} "
              f"records, load_records {t_load:.2f} s, markdown {t_render:.2f} s")
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        return 0 if total < TARGET_S else 1
    finally:
        server.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
