"""bench/overhead: what does running a cell through hwmatrix cost over calling llama-bench?

The same cell runs through `hwmatrix run` (embedded Ray, agent pipeline, hygiene off) and
by calling the very same llama-bench argv directly, interleaved, ROUNDS times each. It
prints the benchmark phase's wall time of each and the ratio of medians (target <= 1.05):
for hwmatrix the phase is bench_started..bench_finished from the record (process start,
watchdog, wait, output parsing); for the direct call it is subprocess.run() of the argv.

    python bench/overhead.py [ROUNDS]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MATRIX = """name: overhead
engines:
  mainline: {kind: llama.cpp, sdist: {package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}
models:
  tiny: {generate: tiny-llama}
args: {n_prompt: 256, n_gen: 64, threads: 2}
repetitions: 10
hygiene: {drop_caches: off, warmup: 1}
matrix:
  ref: [{name: m36, engine: mainline, tag: v0.3.36}]
  quant: [Q8_0]
"""


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def main(rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="hwm-overhead-"))
    matrix = work / "overhead.yaml"
    matrix.write_text(MATRIX)
    store = work / "store"
    via, direct = [], []
    for i in range(rounds):
        proc = subprocess.run([sys.executable, "-m", "coordinator.cli", "run", str(matrix), "--store",
                               store.as_uri(), "--run-id", f"overhead-{i}"], cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"hwmatrix run failed:\n{proc.stderr[-2000:]}")
        record = json.loads(next(store.glob(f"runs/overhead-{i}/results/*/*.json")).read_text())
        via.append(_seconds(record["timestamps"]["bench_started"], record["timestamps"]["bench_finished"]))
        argv = record["tool"]["argv"][0]
        started = time.monotonic()
        subprocess.run(argv, capture_output=True, check=True, stdin=subprocess.DEVNULL,
                       env={k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ})
        direct.append(time.monotonic() - started)
        print(f"round {i + 1}: hwmatrix {via[-1]:.3f} s   direct {direct[-1]:.3f} s", flush=True)
    ratio = statistics.median(via) / statistics.median(direct)
    print(f"\nbenchmark phase, median of {rounds}: hwmatrix {statistics.median(via):.3f} s, "
          f"direct {statistics.median(direct):.3f} s")
    print(f"overhead ratio (hwmatrix / direct): {ratio:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
