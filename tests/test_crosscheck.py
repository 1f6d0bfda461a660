"""Cross-checks of replicated cells (coordinator/results/crosscheck.py) and how reports show them.

Records are built with agent.spec.record.Metric from numpy draws shaped like real llama-bench
output: several engine processes, each with its own level (process-to-process CV 2%) and a
few repetitions around it (CV 0.5%)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from agent.spec.record import Metric
from coordinator import reports
from coordinator.results.crosscheck import Verdict, check_records, cross_check, recheck_rate
from coordinator.reports import model

CLASS_A, CLASS_B = "c1a55aaaaaaa", "c1a55bbbbbbb"
PROFILE = {"cpu": {"brand": "AMD Ryzen 9 7950X 16-Core Processor"},
           "gpus": {"count": 1, "devices": [{"name": "NVIDIA GeForce RTX 4090"}]}}


def _metric(rng, test: str, mean: float, processes: int, reps: int, cv: float = 0.02) -> dict:
    samples = []
    for _ in range(processes):
        level = rng.normal(mean, mean * cv)
        samples += [round(float(x), 3) for x in rng.normal(level, level * 0.005, reps)]
    return Metric.from_samples(test, samples, process_sizes=[reps] * processes).model_dump()


def record(agent: str, tg: float = 41.2, pp: float = 1480.0, *, seed: int, processes: int = 6, reps: int = 3,
           hw_class: str = CLASS_A, run_id: str = "vol-1", cell_id: str = "a-Q4_0", status: str = "ok",
           origin: str = "measured", fingerprint: str | None = None, quant: str = "Q4_0") -> dict:
    rng = np.random.default_rng(seed)
    rec = {"run_id": run_id, "cell_id": cell_id, "agent_id": agent, "hardware_class": hw_class,
           "matrix": {"name": "vol", "hash": "0" * 12}, "hardware": PROFILE, "origin": origin, "status": status,
           "params": {"ref": "a", "quant": quant, "threads": 8, "tool": "llama-bench"},
           "engine": {"kind": "llama.cpp", "commit": "abc1234" * 5}, "sweep_rows": [], "bench_rows": [],
           "metrics": {} if status != "ok" else {"pp_tps": _metric(rng, "pp512", pp, processes, reps),
                                                 "tg_tps": _metric(rng, "tg128", tg, processes, reps)}}
    if fingerprint:
        rec["agent_key_fingerprint"] = fingerprint
    return rec


# ---------------------------------------------------------------- cross_check

@pytest.mark.parametrize("seed", range(5))
def test_two_draws_of_one_distribution_agree(seed):
    v = cross_check(record("a", seed=2 * seed), record("b", seed=2 * seed + 1))
    assert isinstance(v, Verdict)
    assert v.verdict == "agree", v.detail
    assert {m["metric"] for m in v.metrics} == {"pp_tps", "tg_tps"}
    assert "within the 10% tolerance" in v.detail


def test_a_30_percent_shift_with_six_processes_each_disagrees():
    v = cross_check(record("a", tg=41.2, seed=1), record("b", tg=41.2 * 0.7, seed=2))
    assert v.verdict == "disagree"
    assert v.metric == "tg_tps"
    tg = next(m for m in v.metrics if m["metric"] == "tg_tps")
    pp = next(m for m in v.metrics if m["metric"] == "pp_tps")
    assert tg["verdict"] == "disagree" and tg["n_a"] == tg["n_b"] == 6      # processes, not 18 repetitions
    assert tg["ratio"] == pytest.approx(0.7, abs=0.03) and tg["p_adjusted"] < 0.05
    assert pp["verdict"] == "agree"
    assert "tg_tps:" in v.detail and "t/s" in v.detail and "beyond the 10% tolerance" in v.detail
    assert "-3" in v.detail or "-2" in v.detail                             # about -30%
    assert "regress" not in v.detail.lower()


def test_the_verdict_does_not_depend_on_which_record_comes_first():
    a, b = record("a", tg=41.2, seed=1), record("b", tg=41.2 * 0.7, seed=2)
    assert cross_check(a, b).verdict == cross_check(b, a).verdict == "disagree"
    # a 10% tolerance is symmetric: b 11.5% above a is the same as a 10.3% below b
    a, b = record("a", tg=40.0, seed=3), record("b", tg=40.0 * 1.25, seed=4)
    assert cross_check(a, b).verdict == cross_check(b, a).verdict == "disagree"


def test_a_3_percent_shift_agrees_even_when_significant():
    a, b = record("a", tg=41.2, seed=5, processes=20), record("b", tg=41.2 * 1.03, seed=6, processes=20)
    v = cross_check(a, b)
    tg = next(m for m in v.metrics if m["metric"] == "tg_tps")
    assert tg["p_adjusted"] < 0.05          # a real difference between two machines ...
    assert v.verdict == "agree", v.detail   # ... but within what one class legitimately varies by


@pytest.mark.parametrize("seed", range(5))
def test_a_3_percent_shift_with_six_processes_agrees(seed):
    v = cross_check(record("a", tg=41.2, seed=10 + 2 * seed), record("b", tg=41.2 * 1.03, seed=11 + 2 * seed))
    assert v.verdict == "agree", v.detail


def test_a_big_but_noisy_difference_is_unknown_not_disagree():
    rng = np.random.default_rng(0)
    a, b = record("a", seed=7), record("b", seed=8)
    for rec, mean in ((a, 40.0), (b, 46.0)):
        rec["metrics"]["tg_tps"] = _metric(rng, "tg128", mean, processes=3, reps=1, cv=0.25)
    v = cross_check(a, b)
    assert v.verdict == "unknown", v.detail


def test_two_samples_each_is_unknown():
    v = cross_check(record("a", seed=1, processes=2, reps=1), record("b", tg=20.0, seed=2, processes=2, reps=1))
    assert v.verdict == "unknown"
    assert "only 2 vs 2 engine processes" in v.detail


def test_many_repetitions_in_few_processes_are_still_few_units():
    v = cross_check(record("a", seed=1, processes=2, reps=10), record("b", tg=20.0, seed=2, processes=2, reps=10))
    assert v.verdict == "unknown"


def test_a_failed_record_is_unknown_and_says_why():
    v = cross_check(record("a", seed=1), record("b", seed=2, status="run_failed"))
    assert v.verdict == "unknown"
    assert "run_failed" in v.detail and "b" in v.detail
    assert cross_check(record("a", seed=1, status="timeout"), record("b", seed=2)).verdict == "unknown"


def _samples(value) -> dict:
    rec = record("a", seed=1)
    rec["metrics"]["tg_tps"]["samples"] = value
    return rec


@pytest.mark.parametrize("primary", [
    [1, 2], "x", None, {"agent_id": "a", "status": "ok"}, _samples("abc"), _samples([41.0, float("nan"), 41.2]),
    _samples([float("inf")] * 6), _samples([1e308] * 18), _samples(["41"] * 18), _samples([-41.0] * 18)],
    ids=["array", "string", "null", "missing fields", "samples text", "NaN", "inf", "1e308", "strings", "negative"])
def test_a_malformed_primary_disagrees_and_says_why_instead_of_raising(primary):
    for a, b in ((primary, record("b", seed=2)), (record("b", seed=2), primary)):
        v = cross_check(a, b)
        assert isinstance(v, Verdict) and v.verdict == "disagree"
        assert "malformed" in v.detail and "cannot be compared" in v.detail
    if isinstance(primary, dict) and "metrics" in primary:
        assert v.detail.startswith("a's record is malformed") and "metrics.tg_tps.samples" in v.detail


def test_too_few_processes_stays_unknown_while_junk_disagrees():
    few = cross_check(record("a", seed=1, processes=2, reps=1), record("b", seed=2, processes=2, reps=1))
    junk = cross_check(_samples("abc"), record("b", seed=2))
    assert (few.verdict, junk.verdict) == ("unknown", "disagree")


def test_a_replica_pair_with_a_malformed_record_is_a_disagreement_in_the_report():
    good, bad = record("a", seed=1), _samples([float("nan")] * 18)
    bad["agent_id"] = "b"
    (row,) = check_records([good, bad])
    assert row["verdict"] == "disagree" and "malformed" in row["detail"]


def test_records_without_a_common_metric_are_unknown():
    a, b = record("a", seed=1), record("b", seed=2)
    a["metrics"].pop("tg_tps")
    b["metrics"].pop("pp_tps")
    assert cross_check(a, b).verdict == "unknown"


# ---------------------------------------------------------------- check_records

def test_check_records_pairs_agents_of_one_class_and_ignores_singles_and_imports():
    recs = [
        record("a1", seed=1, fingerprint="SHA256:aaaa"), record("a2", tg=28.0, seed=2, fingerprint="SHA256:bbbb"),
        record("a3", seed=3),                                               # third agent: compared with a1
        record("b1", seed=4, hw_class=CLASS_B),                             # other class: never paired with a*
        record("b1", seed=5, hw_class=CLASS_B),                             # same agent again: not a replica
        record("a1", seed=6, cell_id="a-Q8_0"),                             # single-agent cell
        record("x", seed=7, cell_id="a-Q8_0", origin="imported"),           # imported: not measured
        record("a2", seed=8, cell_id="a-Q8_0", status="run_failed"),        # not ok: not counted
        record("a2", seed=9, run_id="vol-2"),                               # other run: not the same cell
    ]
    rows = check_records(recs)
    assert [(r["run_id"], r["cell_id"], r["hardware_class"], r["agents"]) for r in rows] == [
        ("vol-1", "a-Q4_0", CLASS_A, ["a1", "a2"]), ("vol-1", "a-Q4_0", CLASS_A, ["a1", "a3"])]
    assert rows[0]["fingerprints"] == ["SHA256:aaaa", "SHA256:bbbb"]
    assert rows[1]["fingerprints"] == ["SHA256:aaaa", None]
    assert [r["verdict"] for r in rows] == ["disagree", "agree"]
    assert rows[0]["detail"].startswith("tg_tps:")


def test_check_records_of_one_agent_is_empty():
    assert check_records([record("a", seed=s, run_id=f"r{s}") for s in range(4)]) == []
    assert check_records([]) == []


# ---------------------------------------------------------------- recheck_rate

def test_recheck_rate_new_agents_get_base_and_agreements_lower_it_to_a_floor():
    assert recheck_rate(0, 0, 0.25) == 0.25
    rates = [recheck_rate(n, 0, 0.25) for n in range(40)]
    assert all(x > y for x, y in zip(rates, rates[1:]))
    assert rates[-1] == pytest.approx(0.05, abs=1e-6) and min(rates) >= 0.05
    assert recheck_rate(100, 0, 0.05) >= 0.02                   # the floor is at least 2%
    assert recheck_rate(100, 0, 0.01) == pytest.approx(0.01)    # and never above base


def test_recheck_rate_a_disagreement_means_every_cell_until_several_agreements():
    assert recheck_rate(0, 1, 0.25) == 1.0
    assert recheck_rate(2, 1, 0.25) == 1.0                      # recent disagreement: re-check all
    assert recheck_rate(3, 1, 0.25) < 1.0                       # three agreements later, it eases
    assert recheck_rate(5, 2, 0.25) == 1.0                      # more disagreements need more agreements
    assert recheck_rate(1000, 1, 0.25) >= 0.25                  # once disagreed: never back to the floor


@pytest.mark.parametrize("base", [0.0, 0.05, 0.25, 1.0])
def test_recheck_rate_is_monotone_and_a_probability(base):
    for d in range(5):
        for a in range(30):
            r = recheck_rate(a, d, base)
            assert 0.0 <= r <= 1.0
            assert recheck_rate(a + 1, d, base) <= r            # more agreements: never more re-checks
            assert recheck_rate(a, d + 1, base) >= r            # more disagreements: never fewer


def test_recheck_rate_rejects_nonsense():
    with pytest.raises(ValueError):
        recheck_rate(0, 0, 1.5)
    with pytest.raises(ValueError):
        recheck_rate(-1, 0, 0.25)


# ---------------------------------------------------------------- reports

def _replicated_records() -> list[dict]:
    return [record("a1", seed=1, fingerprint="SHA256:aaaa"), record("a2", tg=28.0, seed=2),   # disagree
            record("a1", seed=3, cell_id="a-Q8_0", quant="Q8_0"),
            record("a2", seed=4, cell_id="a-Q8_0", quant="Q8_0")]                                # agree


def test_markdown_flags_a_disagreeing_replica_in_the_tables_and_lists_it_first():
    md = reports.render("markdown", _replicated_records(), [])
    assert "### Cross-checks" in md
    assert "1 disagree, 0 unknown, 1 agree" in md
    assert "| DISAGREE" in md and "a1 (key SHA256:aaaa) vs a2" in md
    assert "1 pair(s) agree" in md
    # the pooled tg value of the disagreeing cell carries the flag, in the class table and the pivot;
    # the agreeing cell's does not
    report = model.build(_replicated_records())
    q4 = report.summaries[(CLASS_A, model.params_key(_replicated_records()[0]["params"]))]
    q8 = report.summaries[(CLASS_A, model.params_key(_replicated_records()[2]["params"]))]
    assert q4.metrics["tg_tps"].text().endswith(" !") and not q4.metrics["pp_tps"].text().endswith("!")
    assert not q8.metrics["tg_tps"].text().endswith("!")
    assert md.count(q4.metrics["tg_tps"].text()) == 2
    assert md.index("**Cross-checks:") < md.index("### AMD")       # the headline comes before the tables


def test_html_and_json_carry_the_cross_checks():
    recs = _replicated_records()
    html = reports.render("html", recs, [])
    assert "<h2>Cross-checks</h2>" in html and 'class="DISAGREE"' in html
    data = json.loads(reports.render("json", recs, []))
    assert [c["verdict"] for c in data["checks"]] == ["disagree", "agree"]
    flagged = [c for c in data["cells"] if c["metrics"]["tg_tps"].get("replicas_disagree")]
    assert len(flagged) == 1 and flagged[0]["params"]["quant"] == "Q4_0"


def test_a_report_without_replicas_has_no_cross_check_section():
    recs = [record("a1", seed=1), record("a1", seed=2, cell_id="a-Q8_0", quant="Q8_0")]
    md = reports.render("markdown", recs, [])
    assert "Cross-check" not in md and " !" not in md
    assert "Cross-check" not in reports.render("html", recs, [])
    assert json.loads(reports.render("json", recs, []))["checks"] == []
