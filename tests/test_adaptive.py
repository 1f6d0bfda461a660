"""Adaptive repetitions on real llama-bench: stop at the minimum once the CI is tight enough,
keep measuring up to the cap when it is not."""
from __future__ import annotations

import json

import pytest

from tests.conftest import hwmatrix

pytestmark = pytest.mark.engines


def _run(tmp_path, target: float) -> dict:
    matrix = tmp_path / f"adaptive-{target}.yaml"
    matrix.write_text(f"""name: adaptive
engines:
  mainline: {{kind: llama.cpp, sdist: {{package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}}}
models:
  tiny: {{generate: tiny-llama}}
args: {{n_prompt: 32, n_gen: 8, threads: 1}}
repetitions: {{min: 3, max: 9, target_ci_pct: {target}}}
hygiene: {{drop_caches: off}}
matrix:
  ref: [{{name: m36, engine: mainline, tag: v0.3.36}}]
  quant: [Q8_0]
""")
    store = tmp_path / f"store-{target}"
    result = hwmatrix("run", str(matrix), "--store", store.as_uri(), env={"HWMATRIX_SPOOL": str(tmp_path / "sp")})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(next(store.glob("runs/*/results/*/*.json")).read_text())


def test_an_unreachable_target_measures_up_to_the_cap_in_several_processes(tmp_path):
    rec = _run(tmp_path, 0.0001)
    assert rec["repetitions"]["done"] == 9 and rec["repetitions"]["processes"] > 1
    assert rec["metrics"]["tg_tps"]["n"] == 9 and len(rec["tool"]["argv"]) == rec["repetitions"]["processes"]


def test_a_loose_target_stops_at_the_minimum(tmp_path):
    rec = _run(tmp_path, 1000.0)
    assert rec["repetitions"]["done"] == 3 and rec["repetitions"]["processes"] == 1
    assert rec["metrics"]["pp_tps"]["n"] == 3
    assert rec["repetitions"]["ci_half_width_pct"]["pp_tps"] <= 1000.0
