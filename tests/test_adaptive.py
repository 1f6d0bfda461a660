"""Repetitions on real llama-bench: min/max count engine processes (the unit), adaptive
stopping once the CI over processes is tight enough, and A/B cells interleaved process by
process. Calibration is off here (min_process_s 0: -r 1) unless per_process is given."""
from __future__ import annotations

import json

import pytest

from tests.conftest import hwmatrix

pytestmark = pytest.mark.engines


def _run(tmp_path, target: float, per_process: int | str = "auto") -> dict:
    matrix = tmp_path / f"adaptive-{target}-{per_process}.yaml"
    matrix.write_text(f"""name: adaptive
engines:
  mainline: {{kind: llama.cpp, sdist: {{package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}}}
models:
  tiny: {{generate: tiny-llama}}
args: {{n_prompt: 32, n_gen: 8, threads: 1}}
repetitions: {{min: 3, max: 9, target_ci_pct: {target}, per_process: {per_process}, min_process_s: 0}}
hygiene: {{drop_caches: off}}
matrix:
  ref: [{{name: m36, engine: mainline, tag: v0.3.36}}]
  quant: [Q8_0]
""")
    store = tmp_path / f"store-{target}-{per_process}"
    result = hwmatrix("run", str(matrix), "--store", store.as_uri(), env={"HWMATRIX_SPOOL": str(tmp_path / "sp")})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(next(store.glob("runs/*/results/*/*.json")).read_text())


def test_an_unreachable_target_measures_up_to_the_cap_one_process_per_repetition(tmp_path):
    rec = _run(tmp_path, 0.0001)
    assert rec["repetitions"]["done"] == 9 and rec["repetitions"]["processes"] == 9
    assert rec["metrics"]["tg_tps"]["n"] == 9 and rec["metrics"]["tg_tps"]["process_sizes"] == [1] * 9
    assert len(rec["tool"]["argv"]) == len(rec["tool"]["started"]) == 9
    assert all(argv[argv.index("-r") + 1] == "1" for argv in rec["tool"]["argv"])


def test_a_loose_target_stops_at_the_minimum(tmp_path):
    rec = _run(tmp_path, 1000.0)
    assert rec["repetitions"]["done"] == 3 and rec["repetitions"]["processes"] == 3
    assert rec["metrics"]["pp_tps"]["n"] == 3
    assert rec["repetitions"]["ci_half_width_pct"]["pp_tps"] <= 1000.0


def test_per_process_repetitions_are_recorded_by_process_and_max_counts_processes(tmp_path):
    rec = _run(tmp_path, 0.0001, per_process=4)
    # max 9 processes of 4 repetitions each (min/max count processes, issue #13), and the
    # sizes say which sample came from which
    assert rec["repetitions"]["processes"] == 9 and rec["repetitions"]["done"] == 36
    assert rec["metrics"]["pp_tps"]["process_sizes"] == [4] * 9
    assert [argv[argv.index("-r") + 1] for argv in rec["tool"]["argv"]] == ["4"] * 9
    assert rec["repetitions"]["calibration"]["how"] == "none: llama-bench -r 4 as per_process gives"


def test_ab_cells_take_turns_process_by_process_in_the_counterbalanced_order_when_asked(tmp_path):
    matrix = tmp_path / "ab.yaml"
    matrix.write_text("""name: interleave
engines:
  mainline: {kind: llama.cpp, sdist: {package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}
models:
  tiny: {generate: tiny-llama}
args: {n_prompt: 16, n_gen: 4, threads: 1}
repetitions: {min: 4, max: 4, min_process_s: 0}
hygiene: {drop_caches: off, order: counterbalanced}
matrix:
  ref: [{name: A, engine: mainline, tag: v0.3.35}, {name: B, engine: mainline, tag: v0.3.36}]
  quant: [Q8_0]
""")
    store = tmp_path / "store"
    result = hwmatrix("run", str(matrix), "--store", store.as_uri(), env={"HWMATRIX_SPOOL": str(tmp_path / "sp")})
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in store.glob("runs/*/results/*/*.json")]
    starts = sorted((t, r["params"]["ref"]) for r in records for t in r["tool"]["started"])
    order = "".join(ref for _, ref in starts)
    assert order in ("ABBAABBA", "BAABBAAB"), order
    # both cells were built, quantized and warmed up before the first measured process
    assert max(r["timestamps"]["bench_started"] for r in records) <= starts[0][0]
