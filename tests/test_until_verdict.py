"""Sequential decisions (issue #13 item 4): `repetitions: {min, max, until: verdict}` keeps an
A/B group's interleaved pairs going until each comparison is settled by the anytime-valid
rule (agent.spec.sequential) or max is reached; the plan tells each cell its baselines, the
record keeps where each comparison stood, and the coordinator judges those cells by the
same rule."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.engine import pipeline
from agent.parsers.types import BenchRow, ParsedOutput
from agent.spec.cellspec import CellSpec, EngineSpec, ModelSpec, RefSpec, Repetitions
from agent.spec.record import Metric, ResultRecord
from coordinator.errors import UserError
from coordinator.planning.plan import load_plan
from coordinator.results.compare import judge
from tests.conftest import hwmatrix

MATRIX = """name: {name}
engines:
  mainline: {{kind: llama.cpp, sdist: {{package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}}}
models:
  tiny: {{generate: tiny-llama}}
args: {{n_prompt: 32, n_gen: 8, threads: 1}}
repetitions: {repetitions}
hygiene: {{drop_caches: off, quiet_wait_s: 0}}
matrix:
  ref: [{{name: A, engine: mainline, tag: v0.3.36}}, {{name: B, engine: mainline, tag: v0.3.36}}]
  quant: [Q8_0]
  threads: [1, 2]
{compare}"""
COMPARE = "compare:\n  - baseline: {ref: A}\n  - baseline: {threads: 1}\n    candidate: {threads: 2}\n"


def _write(tmp_path: Path, repetitions: str, compare: str = COMPARE, name: str = "until") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(MATRIX.format(name=name, repetitions=repetitions, compare=compare))
    return path


# ---------------------------------------------------------------- fast: schema and plan

def test_until_verdict_is_passed_to_the_agent_with_each_cells_baselines(tmp_path):
    plan = load_plan(str(_write(tmp_path, "{min: 3, max: 20, until: verdict}")))
    ids = {(c.params["ref"], c.params["threads"]): c.cell_id for c in plan.cells}
    specs = {key: plan.cells[[c.cell_id for c in plan.cells].index(cid)].to_spec("r", "file:///s")
             for key, cid in ids.items()}
    assert specs[("A", 1)].repetitions.until == "verdict"
    assert specs[("A", 1)].baselines == []
    assert specs[("B", 1)].baselines == [ids[("A", 1)]]
    assert specs[("A", 2)].baselines == [ids[("A", 1)]]                   # threads 2 vs 1
    assert specs[("B", 2)].baselines == [ids[("A", 2)], ids[("B", 1)]]     # both comparisons, in order
    assert CellSpec.model_validate_json(specs[("B", 2)].model_dump_json()) == specs[("B", 2)]


@pytest.mark.parametrize("repetitions, compare, fragment", [
    ("{min: 3, max: 9, until: verdict}", "", "the matrix has no compare"),
    ("{min: 3, max: 9, until: ci}", COMPARE, "until: ci needs target_ci_pct"),
    ("{min: 3, max: 9, until: verdict, target_ci_pct: 2}", COMPARE, "target_ci_pct belongs to until: ci"),
    ("{min: 3, max: 9, until: always}", COMPARE, "until"),
])
def test_a_stopping_rule_that_cannot_work_is_refused(tmp_path, repetitions, compare, fragment):
    with pytest.raises(UserError) as err:
        load_plan(str(_write(tmp_path, repetitions, compare)))
    assert fragment in str(err.value)


# ---------------------------------------------------------------- fast: the group's stopping rule

def _cell(cell_id: str, baselines: list[str], tg: list[float], reps: Repetitions) -> pipeline._Cell:
    spec = CellSpec(run_id="r", matrix_name="m", matrix_hash="0" * 12, cell_id=cell_id, params={},
                    engine=EngineSpec(name="e", kind="llama.cpp", repo="https://example.com/x.git"),
                    ref=RefSpec(name="a", kind="tag", value="v1"), model=ModelSpec(name="t", generate="tiny-llama"),
                    repetitions=reps, store_url="file:///s", baselines=baselines)
    record = ResultRecord(run_id="r", matrix={"name": "m", "hash": "0" * 12}, cell_id=cell_id, agent_id="x",
                          params={}, status="ok", engine={}, model={}, tool={}, hardware={}, hardware_class="c")
    cell = pipeline._Cell(spec=spec, record=record, work=Path("/nonexistent"), argv=["b", "m"], measuring=True)
    for value in tg:
        cell.outputs.append(ParsedOutput("json", None, bench_rows=[
            BenchRow("pp32", 32, 0, 0, 1000.0, 0.0, [1000.0], [32_000_000], {}),
            BenchRow("tg8", 0, 8, 0, value, 0.0, [value], [int(8e9 / value)], {})], sweep_rows=[]))
        cell.processes += 1
    return cell


def test_a_group_stops_at_min_once_every_pair_is_settled_and_records_why():
    reps = Repetitions(min=4, max=30, until="verdict", min_process_s=0)
    a = _cell("a", [], [100.0] * 4, reps)
    b = _cell("b", ["a"], [80.0] * 4, reps)            # 20% slower every pair: settled at once
    assert pipeline._group_finished([a, b]) and not a.measuring and not b.measuring
    pipeline._keep_stopping_facts([a, b])
    tg = b.sequential["baselines"]["a"]["tg_tps"]
    assert b.sequential["stopped"] == "settled" and tg["verdict"] == "slower" and tg["pairs"] == 4
    assert tg["ratio"] == pytest.approx(0.8) and b.sequential["baselines"]["a"]["pp_tps"]["verdict"] == "same"
    assert "confidence sequence" in b.sequential["rule"] and a.sequential["baselines"] == {}


def test_a_group_below_min_or_unsettled_measures_on():
    reps = Repetitions(min=4, max=30, until="verdict", min_process_s=0)
    assert not pipeline._group_finished([_cell("a", [], [100.0] * 3, reps), _cell("b", ["a"], [80.0] * 3, reps)])
    noisy = [100.0, 90.0, 110.0, 95.0, 105.0]
    assert not pipeline._group_finished([_cell("a", [], noisy, reps), _cell("b", ["a"], noisy[::-1], reps)])


def test_until_verdict_records_are_judged_by_the_sequential_rule():
    def record(ref: str, values: list[float]) -> dict:
        metric = Metric.from_samples("tg8", values, process_sizes=[1] * len(values)).model_dump()
        return {"params": {"ref": ref}, "status": "ok", "engine": {"binary_hash": ref}, "metrics": {"tg_tps": metric},
                "repetitions": {"min": 4, "max": 30, "until": "verdict"}}
    base, cand = record("A", [100.0, 101.0, 99.0, 100.0]), record("B", [80.0, 81.0, 79.0, 80.0])
    (result,) = judge([(base, cand, "tg_tps")])
    assert result.test == "sequential" and result.verdict == "slower" and result.n_base == 4
    del cand["repetitions"]["until"]                        # measured to a fixed n: the fixed-n test
    assert judge([(base, cand, "tg_tps")])[0].test != "sequential"


def test_until_verdict_records_of_two_runs_get_a_fresh_test_not_the_sequential_rule():
    """Two runs' processes were never interleaved pairs: the rule that stopped each run does
    not hold for a pair across them (the compare page and report --baseline make such pairs)."""
    def record(run_id: str, ref: str, values: list[float]) -> dict:
        metric = Metric.from_samples("tg8", values, process_sizes=[1] * len(values)).model_dump()
        return {"run_id": run_id, "params": {"ref": ref}, "status": "ok", "engine": {"binary_hash": ref},
                "metrics": {"tg_tps": metric}, "repetitions": {"min": 4, "max": 30, "until": "verdict"}}
    values = ([100.0, 101.0, 99.0, 100.0], [80.0, 81.0, 79.0, 80.0])
    assert judge([(record("r1", "A", values[0]), record("r1", "B", values[1]), "tg_tps")])[0].test == "sequential"
    across = judge([(record("r1", "A", values[0]), record("r2", "B", values[1]), "tg_tps")])[0]
    assert across.test != "sequential" and across.verdict == "slower"


# ---------------------------------------------------------------- real llama-bench

@pytest.mark.engines
def test_an_aa_of_one_binary_never_calls_a_change_and_its_pairs_interleave(tmp_path):
    path = tmp_path / "aa.yaml"
    path.write_text(MATRIX.format(name="aa", repetitions="{min: 3, max: 8, until: verdict, min_process_s: 0.2}",
                                  compare="compare: {baseline: {ref: A}}\n").replace("  threads: [1, 2]\n", ""))
    store = tmp_path / "store"
    result = hwmatrix("run", str(path), "--store", store.as_uri(), env={"HWMATRIX_SPOOL": str(tmp_path / "sp")})
    assert result.returncode == 0, result.stderr[-2000:]
    stored = [json.loads(p.read_text()) for p in store.glob("runs/*/results/*/*.json")]
    records = {r["params"]["ref"]: r for r in stored}
    a, b = records["A"], records["B"]
    assert a["engine"]["binary_hash"] == b["engine"]["binary_hash"]
    assert a["hygiene"]["order"] == b["hygiene"]["order"] == "random"     # the default interleave order
    seq = b["repetitions"]["sequential"]
    verdicts = {m: v["verdict"] for m, v in seq["baselines"][a["cell_id"]].items()}
    assert set(verdicts) == {"pp_tps", "tg_tps"}
    assert not {"slower", "faster"} & set(verdicts.values()), seq
    n = b["repetitions"]["processes"]
    assert n == a["repetitions"]["processes"] and 3 <= n <= 8
    assert seq["stopped"] == ("settled" if set(verdicts.values()) == {"same"} else "max"), seq
    assert (n == 8) == (seq["stopped"] == "max")
    # one process of each side per round: the i-th processes of A and B are a pair
    starts = sorted((t, r["params"]["ref"]) for r in (a, b) for t in r["tool"]["started"])
    assert all({starts[i][1], starts[i + 1][1]} == {"A", "B"} for i in range(0, 2 * n, 2)), starts


# ---------------------------------------------------------------- issue #14: one metric, a wider "same"

def test_a_comparison_on_tg_only_makes_the_group_wait_on_tg_only(tmp_path):
    """compare[].metrics reaches the agent: a bisect's tg-only comparison must not wait for pp
    to settle "same" (before: every cell waited on pp and tg)."""
    compare = "compare:\n  - baseline: {ref: A}\n    metrics: [tg_tps]\n"
    plan = load_plan(str(_write(tmp_path, "{min: 3, max: 20, until: verdict, equivalence_pct: 8}", compare)))
    specs = {(c.params["ref"], c.params["threads"]): c.to_spec("r", "file:///s") for c in plan.cells}
    assert specs[("B", 1)].verdict_metrics == ["tg_tps"] and specs[("B", 1)].repetitions.equivalence_pct == 8
    reps = Repetitions(min=4, max=30, until="verdict", min_process_s=0)
    a = _cell("a", [], [100.0] * 4, reps)
    b = _cell("b", ["a"], [80.0] * 4, reps)
    b.spec = b.spec.model_copy(update={"verdict_metrics": ["tg_tps"]})
    # pp is identical here, so it would settle too; what matters is that only tg is asked
    assert set(pipeline._verdicts(b, {"a": a, "b": b})["a"]) == {"tg_tps"}


def test_equivalence_pct_widens_same_for_the_agent_and_for_the_coordinator():
    """A 4% difference with a loose interval: not "same" within the default 2%, "same" within 10%."""
    noisy_a = [100.0, 102.0, 99.0, 101.0, 100.0, 98.0, 101.0, 100.0]
    noisy_b = [v * 0.99 for v in noisy_a[::-1]]
    narrow = Repetitions(min=4, max=30, until="verdict", min_process_s=0)
    wide = Repetitions(min=4, max=30, until="verdict", min_process_s=0, equivalence_pct=10)
    for reps, settled in ((narrow, False), (wide, True)):
        a, b = _cell("a", [], noisy_a, reps), _cell("b", ["a"], noisy_b, reps)
        b.spec = b.spec.model_copy(update={"verdict_metrics": ["tg_tps"]})
        assert (pipeline._verdicts(b, {"a": a, "b": b})["a"]["tg_tps"].verdict == "same") is settled

    def record(ref: str, values: list[float], pct: float) -> dict:
        metric = Metric.from_samples("tg8", values, process_sizes=[1] * len(values)).model_dump()
        return {"params": {"ref": ref}, "status": "ok", "engine": {"binary_hash": ref}, "metrics": {"tg_tps": metric},
                "repetitions": {"min": 4, "max": 30, "until": "verdict", "equivalence_pct": pct}}
    assert judge([(record("A", noisy_a, 2), record("B", noisy_b, 2), "tg_tps")])[0].verdict != "same"
    assert judge([(record("A", noisy_a, 10), record("B", noisy_b, 10), "tg_tps")])[0].verdict == "same"
