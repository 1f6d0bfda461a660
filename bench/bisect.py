"""What `hwmatrix bisect` costs against a naive per-commit scan (issue #14), on real builds.

    python bench/bisect.py [--root DIR] [--seed 14]

Chains (tests/chains.py) on mainline llama.cpp 0.3.36, the generated tiny model:
- 8 commits: harmless ones (docs and a reworded comment: same code), one that does not
  compile and its fix, the planted tg slowdown at 6, more harmless ones after it;
- 32 commits: the same kinds in a seeded order, the slowdown at a seeded place.

For each, the bisect runs for real (`hwmatrix bisect`, a fresh store, so every step is
measured; builds of commits built before come from the build cache, and the table says how
many). The scan measures every commit of the range once, interleaved in one group, at the
processes per commit the bisect used (its processes / the commits it measured, summed over
its groups): run for real for 8 commits, computed for 32 (33 commits at that count, wall
time from the 8-commit scan's seconds per build and per process). The last line is
`builds_8=B8 processes_vs_scan_32=R`: B8 the 8-commit bisect's builds (ends included), R its
processes over the scan's at 32 commits.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.chains import CHAIN_8, CULPRIT_8, chain_32, chain_repo  # noqa: E402


def hwmatrix(*args: str, env_root: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "HWMATRIX_SPOOL": str(env_root / "spool")}
    return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)


def bisect(root: Path, kinds: list[str]) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    repo, shas = chain_repo(root, kinds)
    store = root / "store"
    started = time.monotonic()
    result = hwmatrix("bisect", "--repo", str(repo), "--good", "v0.3.36", "--bad", "chain", "-m", "tiny",
                      "--store", store.as_uri(), env_root=root)
    wall = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"bisect failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    journal = json.loads(next(store.glob("**/bisects/*/journal.json")).read_text())
    measures = journal["measures"].values()
    cells = sum(len(m["commits"]) for m in measures)
    processes = sum(m["processes"] for m in measures)
    outcome = journal["result"]
    return {"repo": repo, "shas": shas, "journal": journal, "wall_s": wall, "processes": processes, "cells": cells,
            "builds": outcome["totals"]["builds"], "cached": outcome["totals"]["cached_builds"],
            "build_s": outcome["totals"]["build_s"], "culprits": [c["culprit"] for c in outcome["changes"]],
            "per_commit": processes / cells}


def scan(root: Path, repo: Path, shas: list[str], per_commit: int) -> dict:
    """Every commit measured once at ``per_commit`` processes, as a user's loop over commits."""
    matrix = {"name": "scan", "engines": {"e": {"kind": "llama.cpp", "repo": str(repo)}},
              "models": {"tiny": {"generate": "tiny-llama"}}, "tool": "llama-bench",
              "args": {"n_prompt": 32, "n_gen": 16, "threads": 1},
              "repetitions": {"min": per_commit, "max": per_commit, "min_process_s": 0.5},
              "hygiene": {"drop_caches": "prefer", "warmup": 1, "quiet_wait_s": 10}, "timeout_s": 600,
              "matrix": {"ref": [{"name": f"c{i}-{sha[:10]}", "commit": sha} for i, sha in enumerate(shas)]}}
    path = root / "scan.yaml"
    path.write_text(yaml.safe_dump(matrix, sort_keys=False))
    store = root / "scan-store"
    started = time.monotonic()
    result = hwmatrix("run", str(path), "--store", store.as_uri(), env_root=root)
    wall = time.monotonic() - started
    records = [json.loads(p.read_text()) for p in store.glob("**/results/*/*.json")]
    processes = sum((r.get("repetitions") or {}).get("processes") or 0 for r in records)
    build_s = [((r.get("engine") or {}).get("build") or {}).get("seconds") or 0 for r in records]
    process_s = sum(sum((r.get("tool") or {}).get("wall_s") or []) for r in records)
    return {"wall_s": wall, "processes": processes, "builds": len(shas), "exit": result.returncode,
            "build_s_each": sum(build_s) / max(1, len(build_s)), "process_s": process_s / max(1, processes),
            "failed": sum(r.get("status") != "ok" for r in records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=14, help="the 32-commit chain's order")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="hwm-bench-bisect-"))

    b8 = bisect(root / "c8", CHAIN_8)
    assert b8["culprits"] == [CULPRIT_8], b8["culprits"]
    s8 = scan(root / "c8", b8["repo"], b8["shas"], max(2, round(b8["per_commit"])))
    kinds32, culprit32 = chain_32(args.seed)
    b32 = bisect(root / "c32", kinds32)
    assert b32["culprits"] == [culprit32], (b32["culprits"], culprit32)
    scan32_processes = 33 * b32["per_commit"]         # the bisect's mean per commit measured, exactly
    # what the 8-commit scan took per build (its compile time, cached or not) and per process
    scan32_wall = 33 * (s8["build_s_each"] + b32["per_commit"] * s8["process_s"])

    rows = [
        ["8", "bisect", b8["builds"], b8["cached"], b8["cells"], b8["processes"], f"{b8['wall_s']:.0f}", "measured"],
        ["8", "scan", s8["builds"], "-", s8["builds"], s8["processes"], f"{s8['wall_s']:.0f}",
         f"measured at {max(2, round(b8['per_commit']))} processes per commit (bisect: {b8['per_commit']:.1f})"],
        ["32", "bisect", b32["builds"], b32["cached"], b32["cells"], b32["processes"], f"{b32['wall_s']:.0f}", "measured"],
        ["32", "scan", 33, "-", 33, f"{scan32_processes:.0f}", f"{scan32_wall:.0f}",
         f"computed at {b32['per_commit']:.1f} processes per commit"],
    ]
    print(tabulate(rows, headers=["commits", "method", "builds", "of them cached", "commits measured", "processes",
                                  "wall s", "how"], tablefmt="github"))
    print(f"\n8: culprit {CULPRIT_8} found; builds beyond the ends {b8['builds'] - 2} "
          f"(budget ceil(log2 8)+2 = {math.ceil(math.log2(8)) + 2}); processes vs the measured scan "
          f"{b8['processes'] / max(1, s8['processes']):.3f}; wall vs scan {b8['wall_s'] / max(1, s8['wall_s']):.3f}")
    print(f"32: culprit {culprit32} found; builds beyond the ends {b32['builds'] - 2} "
          f"(budget {math.ceil(math.log2(32)) + 2}); wall vs the computed scan {b32['wall_s'] / scan32_wall:.3f}")
    print(f"builds_8={b8['builds']} processes_vs_scan_32={b32['processes'] / scan32_processes:.3f}")


if __name__ == "__main__":
    main()
