"""bench/overhead: what does running a cell through hwmatrix cost over calling llama-bench?

The same cell runs through `hwmatrix run` (embedded Ray, agent pipeline, hygiene off) and
by calling the very same llama-bench argv directly, interleaved, ROUNDS times each. It
prints the benchmark phase's wall time of each and the ratio of medians (target <= 1.05):
for hwmatrix the phase is bench_started..bench_finished from the record (process start,
watchdog, wait, output parsing); for the direct call it is subprocess.run() of the argv.
That comparison runs the 10 repetitions in one process (per_process: 10), as the direct
call does. It then prints what the default costs on top: the same 10 repetitions as 10
processes (per_process: 1), each paying process start, model load and the tool's warmup.

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
  mainline: {{kind: llama.cpp, sdist: {{package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}}}
models:
  tiny: {{generate: tiny-llama}}
args: {{n_prompt: 256, n_gen: 64, threads: 2}}
repetitions: {{min: 10, max: 10, per_process: {per_process}}}
hygiene: {{drop_caches: off, warmup: 1}}
matrix:
  ref: [{{name: m36, engine: mainline, tag: v0.3.36}}]
  quant: [Q8_0]
"""


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def _run_cell(matrix: Path, store: Path, run_id: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "coordinator.cli", "run", str(matrix), "--store",
                           store.as_uri(), "--run-id", run_id], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"hwmatrix run failed:\n{proc.stderr[-2000:]}")
    return json.loads(next(store.glob(f"runs/{run_id}/results/*/*.json")).read_text())


def main(rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="hwm-overhead-"))
    one, many = work / "one-process.yaml", work / "per-repetition.yaml"
    one.write_text(MATRIX.format(per_process=10))
    many.write_text(MATRIX.format(per_process=1))
    store = work / "store"
    via, direct, split = [], [], []
    for i in range(rounds):
        record = _run_cell(one, store, f"overhead-{i}")
        via.append(_seconds(record["timestamps"]["bench_started"], record["timestamps"]["bench_finished"]))
        argv = record["tool"]["argv"][0]
        started = time.monotonic()
        subprocess.run(argv, capture_output=True, check=True, stdin=subprocess.DEVNULL,
                       env={k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ})
        direct.append(time.monotonic() - started)
        record = _run_cell(many, store, f"per-repetition-{i}")
        split.append(_seconds(record["timestamps"]["bench_started"], record["timestamps"]["bench_finished"]))
        print(f"round {i + 1}: hwmatrix {via[-1]:.3f} s   direct {direct[-1]:.3f} s   "
              f"10 processes {split[-1]:.3f} s", flush=True)
    ratio = statistics.median(via) / statistics.median(direct)
    print(f"\nbenchmark phase, median of {rounds}: hwmatrix {statistics.median(via):.3f} s, "
          f"direct {statistics.median(direct):.3f} s")
    print(f"overhead ratio (hwmatrix / direct): {ratio:.3f}  (target <= 1.05)")
    print(f"the default, one process per repetition: {statistics.median(split):.3f} s, "
          f"{statistics.median(split) / statistics.median(via):.2f}x the one-process phase")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
