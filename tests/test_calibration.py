"""Calibrated processes (issue #13 item 1): min/max count engine processes, and with
per_process auto the agent times one -r 1 process and picks llama-bench -r so each measured
process measures at least min_process_s, never touching -p/-n; timeout_s that cannot fit
that is warned about and -r lowered."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.engine import pipeline, tools
from agent.parsers.types import BenchRow, ParsedOutput, SweepRow
from agent.spec.cellspec import CellSpec, EngineSpec, ModelSpec, RefSpec
from agent.spec.cellspec import Repetitions as SpecRepetitions
from agent.spec.record import ResultRecord
from coordinator.errors import UserError
from coordinator.matrix.schema import Repetitions
from coordinator.planning.plan import load_plan
from tests.conftest import hwmatrix

MATRIX = """name: {name}
engines:
  mainline: {{kind: llama.cpp, sdist: {{package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}}}
models:
  tiny: {{generate: tiny-llama}}
args: {{n_prompt: 32, n_gen: 8, threads: 1}}
repetitions: {repetitions}
hygiene: {{drop_caches: off, quiet_wait_s: 0}}
timeout_s: {timeout_s}
matrix:
  ref: [{{name: m36, engine: mainline, tag: v0.3.36}}]
  quant: [Q8_0]
"""


def _plan(tmp_path, repetitions: str, timeout_s: int = 300):
    path = tmp_path / "m.yaml"
    path.write_text(MATRIX.format(name="calib", repetitions=repetitions, timeout_s=timeout_s))
    return load_plan(str(path))


# ---------------------------------------------------------------- fast: schema, plan, arithmetic

def test_per_process_defaults_to_auto_with_one_second_processes():
    rep = Repetitions.model_validate(5)
    assert (rep.min, rep.max, rep.per_process, rep.min_process_s, rep.until) == (5, 5, "auto", 1.0, None)


def test_the_plan_passes_calibration_settings_to_the_agent(tmp_path):
    plan = _plan(tmp_path, "{min: 3, max: 6, per_process: auto, min_process_s: 0.2}")
    rep = plan.cells[0].to_spec("r", "file:///tmp/s").repetitions
    assert (rep.min, rep.max, rep.per_process, rep.min_process_s) == (3, 6, "auto", 0.2)
    fixed = _plan(tmp_path, "{min: 3, max: 3, per_process: 4}").cells[0].to_spec("r", "file:///tmp/s")
    assert fixed.repetitions.per_process == 4 and tools.fixed_reps(fixed) == 4


@pytest.mark.parametrize("bad", ["{min: 1, max: 2, per_process: 0}", "{min: 1, max: 2, per_process: 1001}",
                                 "{min: 1, max: 2, per_process: some}", "{min: 1, max: 2, min_process_s: -1}"])
def test_per_process_and_min_process_s_are_bounded(tmp_path, bad):
    with pytest.raises(UserError):
        _plan(tmp_path, bad)


def test_calibrated_repetitions_cover_min_process_s_within_bounds():
    assert tools.calibrated_reps(0.02, 0.2) == 10         # 10 x 20 ms = 0.2 s, not 11 by rounding
    assert tools.calibrated_reps(0.03, 0.2) == 7
    assert tools.calibrated_reps(5.0, 1.0) == 1
    assert tools.calibrated_reps(1e-7, 1.0) == 1000 and tools.calibrated_reps(0.0, 1.0) == 1000


def test_a_repetition_is_timed_by_the_tool_not_the_process_and_the_fastest_counts():
    row = BenchRow(test="pp32", n_prompt=32, n_gen=0, n_depth=0, avg_ts=1000.0, stddev_ts=0.0,
                   samples_ts=[900.0, 1000.0], samples_ns=[35_000_000, 32_000_000], fields={})
    bare = BenchRow(test="tg8", n_prompt=0, n_gen=8, n_depth=0, avg_ts=400.0, stddev_ts=None,
                    samples_ts=[], samples_ns=[], fields={})      # no samples_ns: tokens / avg_ts
    assert tools.repetition_s(ParsedOutput("json", None, bench_rows=[row, bare], sweep_rows=[])) == pytest.approx(0.052)
    sweep = SweepRow(pp=512, tg=128, n_kv=0, t_pp=1.5, speed_pp=341.3, t_tg=2.5, speed_tg=51.2, extra={})
    assert tools.repetition_s(ParsedOutput("table", None, bench_rows=[], sweep_rows=[sweep])) == pytest.approx(4.0)


# ---------------------------------------------------------------- real llama-bench

def _run(tmp_path, repetitions: str, timeout_s: int = 300) -> tuple[dict, str]:
    path = tmp_path / "m.yaml"
    path.write_text(MATRIX.format(name="calib", repetitions=repetitions, timeout_s=timeout_s))
    store = tmp_path / "store"
    result = hwmatrix("run", str(path), "--store", store.as_uri(), env={"HWMATRIX_SPOOL": str(tmp_path / "sp")})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(next(store.glob("runs/*/results/*/*.json")).read_text()), result.stderr


def _measured_s_per_process(rec: dict) -> list[float]:
    per: dict[int, float] = {}
    for row in rec["bench_rows"]:
        per[row["process"]] = per.get(row["process"], 0.0) + sum(row["samples_ns"]) / 1e9
    return [per[i] for i in sorted(per)]


@pytest.mark.engines
def test_calibration_makes_every_process_measure_min_process_s_and_is_recorded(tmp_path):
    rec, _ = _run(tmp_path, "{min: 3, max: 3, min_process_s: 0.2}")
    assert rec["status"] == "ok", rec.get("error")
    cal = rec["repetitions"]["calibration"]
    assert cal["how"] == "llama-bench -r" and cal["min_process_s"] == 0.2 and cal["warning"] is None
    assert cal["ms_per_repetition"] > 0 and cal["chosen"] > 1          # one pp32+tg8 is far under 0.2 s
    assert cal["processes"][0] == 1 and len(cal["processes"]) == 2     # -r 1, then one of about 0.2 s
    argvs = rec["tool"]["argv"]
    assert len(argvs) == rec["repetitions"]["processes"] == 3            # min/max count processes
    assert {a[a.index("-r") + 1] for a in argvs} == {str(cal["chosen"])}
    assert all(a[a.index("-p") + 1] == "32" and a[a.index("-n") + 1] == "8" for a in argvs)
    assert rec["metrics"]["tg_tps"]["process_sizes"] == [cal["chosen"]] * 3
    measured = _measured_s_per_process(rec)
    assert len(measured) == 3 and min(measured) >= 0.2, measured


@pytest.mark.engines
def test_a_timeout_too_short_for_min_processes_lowers_r_and_says_why(tmp_path):
    rec, stderr = _run(tmp_path, "{min: 2, max: 2, min_process_s: 5}", timeout_s=6)
    cal = rec["repetitions"]["calibration"]
    assert cal["warning"] and "timeout_s 6" in cal["warning"] and "-r lowered" in cal["warning"]
    assert f"warning: {cal['warning']}" in " ".join(stderr.split())     # the run's progress says it too
    assert cal["chosen"] * cal["ms_per_repetition"] < 5000
    assert [a[a.index("-r") + 1] for a in rec["tool"]["argv"]] == [str(cal["chosen"])] * 2
    assert rec["status"] == "ok", rec.get("error")


# ---------------------------------------------------------------- fast: a tool without repetitions

def test_sweep_bench_is_not_calibrated_and_the_record_says_why():
    spec = CellSpec(run_id="r", matrix_name="m", matrix_hash="0" * 12, cell_id="c", params={},
                    engine=EngineSpec(name="ik", kind="ik_llama.cpp", repo="https://example.com/ik.git"),
                    ref=RefSpec(name="a", kind="tag", value="v1"), model=ModelSpec(name="t", generate="tiny-llama"),
                    tool="llama-sweep-bench", repetitions=SpecRepetitions(min=3, max=3), store_url="file:///s")
    record = ResultRecord(run_id="r", matrix={}, cell_id="c", agent_id="x", params={}, status="ok")
    cell = pipeline._Cell(spec=spec, record=record, work=Path("/nonexistent"), argv=["/b/llama-sweep-bench", "/m"])
    pipeline._calibrate(cell, lambda phase, detail: pytest.fail("no calibration process runs"))
    assert cell.reps == 1 and cell.calibration["chosen"] == 1
    assert cell.calibration["how"].startswith("none: llama-sweep-bench has no repetitions option")
