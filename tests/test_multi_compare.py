"""More than one comparison per matrix (#13 item 6): `compare` takes a list; each comparison
is a Δ column pair of the run table named by its baseline; its A and B cells are one A/B
group, interleaved on one agent. Records are built here, no engines."""
from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from agent.spec.record import Metric
from agent.spec.yaml_lines import MatrixError
from coordinator.matrix.loading import load_matrix
from coordinator.planning.placement import Agent, comparison_groups, place
from coordinator.planning.plan import load_plan
from coordinator.reports.table import comparison_table
from tests.test_matrix import VALID, edit, line_of, load_error, write

DEMO = Path(__file__).resolve().parents[1] / "matrices" / "demo-full.yaml"
SINGLE = "compare:\n  baseline: {ref: main}\n  metrics: [pp_tps, tg_tps]\n"
TWO = ("compare:\n  - baseline: {ref: main}\n  - baseline: {rtr: false}\n    candidate: {rtr: true}\n"
       "    metrics: [tg_tps]\n")


def test_a_list_of_two_comparisons_validates_and_a_mapping_is_a_list_of_one(tmp_path):
    m = load_matrix(write(tmp_path, edit(SINGLE, TWO)))
    assert [c.sides() for c in m.compare] == [({"ref": "main"}, None), ({"rtr": False}, {"rtr": True})]
    assert m.compare[1].metrics == ["tg_tps"]
    single = load_matrix(write(tmp_path, VALID, "one.yaml"))
    assert [c.sides() for c in single.compare] == [({"ref": "main"}, None)]
    # the mapping and a list of that one comparison are one matrix: one run id, the one it had
    listed = write(tmp_path, edit(SINGLE, "compare:\n  - baseline: {ref: main}\n    metrics: [pp_tps, tg_tps]\n"),
                   "listed.yaml")
    assert load_plan(str(listed)).default_run_id == load_plan(str(tmp_path / "one.yaml")).default_run_id
    assert single.model_dump(mode="json")["compare"] == {"baseline": single.compare[0].baseline.model_dump(
        mode="json"), "metrics": ["pp_tps", "tg_tps"]}


BAD = [
    # (case, compare section, text on the error's line, key, fragment)
    ("candidate_other_axis", "compare:\n  - baseline: {ref: main}\n  - baseline: {rtr: false}\n"
     "    candidate: {threads: 2}\n", "candidate: {threads: 2}", "compare[1].candidate",
     "varies the same axes on both sides"),
    ("candidate_not_a_value", "compare:\n  - baseline: {ref: main}\n  - baseline: {threads: 1}\n"
     "    candidate: {threads: 4}\n", "candidate: {threads: 4}", "compare[1].candidate.threads",
     "threads 4 is not a value of axis 'threads'"),
    ("candidate_same_as_baseline", "compare:\n  - baseline: {rtr: false}\n    candidate: {rtr: false}\n",
     "candidate: {rtr: false}", "compare[0].candidate", "the same cells"),
    ("list_item_ref_missing", "compare:\n  - baseline: {ref: main}\n  - baseline: {ref: nosuch}\n",
     "{ref: nosuch}", "compare[1].baseline.ref", "ref 'nosuch' is not defined"),
    ("single_candidate_ref_missing", "compare:\n  baseline: {ref: main}\n  candidate: {ref: nosuch}\n",
     "{ref: nosuch}", "compare.candidate.ref", "ref 'nosuch' is not defined"),
    ("empty_list", "compare: []\n", "compare: []", "compare", "at least 1"),
    ("unknown_key", "compare:\n  - baseline: {ref: main}\n    candidates: {ref: ikb}\n", "candidates:",
     "compare[0].candidates", "candidates"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_a_bad_comparison_is_a_one_line_error_naming_file_line_and_key(tmp_path, case):
    _, section, needle, key, fragment = case
    text = edit(SINGLE, section)
    path, err = load_error(tmp_path, text)
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line_of(text, needle)}: {key}: "), message
    assert fragment in message, message


# ---------------------------------------------------------------- the run table

def _record(cell, mean: float, cv: float, rng: random.Random, n: int = 10, binary: str = "b") -> dict:
    samples = {m: [round(rng.gauss(mean * k, mean * k * cv), 3) for _ in range(n)] for m, k in
               (("pp_tps", 4.0), ("tg_tps", 1.0))}
    return {"run_id": "r", "cell_id": cell.cell_id, "agent_id": "vm", "origin": "measured", "params": cell.params,
            "status": "ok", "hardware_class": "c1", "engine": {"binary_hash": f"{cell.params['ref']}-{binary}"},
            "metrics": {m: Metric.from_samples(m[:2], s, process_sizes=[1] * n).model_dump()
                        for m, s in samples.items()}}


def _demo_records(rng: random.Random, cv_036: float = 0.15) -> tuple[list[dict], dict[str, list[dict]]]:
    """The full demo's cells: mainline 0.3.36 noisy (``cv_036``) and equal to 0.3.35 (unknown),
    ik 20% faster than 0.3.35, ik rtr on 30% faster than off, quiet."""
    plan = load_plan(str(DEMO))
    records = {}
    for cell in plan.cells:
        ref, rtr = cell.params["ref"], cell.params["rtr"]
        mean, cv = {"mainline-0.3.35": (100.0, 0.01), "mainline-0.3.36": (100.0, cv_036)}.get(ref, (120.0, 0.01))
        if rtr:
            mean *= 1.3
        records[cell.cell_id] = [_record(cell, mean, cv, rng)]
    return [{"cell_id": c.cell_id, "params": c.params} for c in plan.cells], records


def _rows(table: str) -> tuple[list[str], list[dict[str, str]]]:
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    return header, [dict(zip(header, (v.strip() for v in line.strip("|").split("|")))) for line in lines[2:]]


def test_the_full_demo_table_has_one_delta_pair_per_comparison_named_by_its_baseline():
    plan = load_plan(str(DEMO))
    assert plan.comparisons == [({"ref": "mainline-0.3.35"}, None), ({"rtr": False}, {"rtr": True})]
    cells, records = _demo_records(random.Random(3))
    table = comparison_table(cells, records, plan.comparisons)
    header, rows = _rows(table)
    assert header[-7:] == ["pp t/s", "tg t/s", "Δ pp vs mainline-0.3.35", "Δ tg vs mainline-0.3.35",
                           "Δ pp vs rtr=off", "Δ tg vs rtr=off", "status"]
    ik_on = [r for r in rows if r["ref"] == "ik-0.1.5" and r["rtr"] == "on"]
    ik_off = [r for r in rows if r["ref"] == "ik-0.1.5" and r["rtr"] == "off" and r["tool"] == "llama-bench"]
    mainline = [r for r in rows if r["ref"].startswith("mainline")]
    assert len(ik_on) == len(ik_off) == 4 and len(mainline) == 8
    # rtr on against off: its own baseline, a real test (one binary, but a run-time setting differs)
    for row in ik_on:
        assert row["Δ tg vs rtr=off"].startswith("+30") or row["Δ tg vs rtr=off"].startswith("+29"), row
        assert row["Δ tg vs rtr=off"].endswith("faster") and row["Δ pp vs rtr=off"].endswith("faster")
        assert row["Δ tg vs mainline-0.3.35"] == "-"            # mainline has no rtr on
    for row in ik_off:
        assert row["Δ tg vs rtr=off"] == "baseline" and row["Δ tg vs mainline-0.3.35"].endswith("faster")
    for row in mainline:
        assert row["Δ tg vs rtr=off"] == "-"                    # nothing compares with them there
        expected = "baseline" if row["ref"] == "mainline-0.3.35" else "unknown"
        assert row["Δ tg vs mainline-0.3.35"].endswith(expected), row


def test_with_one_comparison_the_table_is_one_delta_pair_and_without_one_a_pair_of_dashes():
    cells, records = _demo_records(random.Random(4))
    header, _ = _rows(comparison_table(cells, records, [({"ref": "mainline-0.3.35"}, None)]))
    assert [h for h in header if h.startswith("Δ")] == ["Δ pp vs mainline-0.3.35", "Δ tg vs mainline-0.3.35"]
    header, rows = _rows(comparison_table(cells, records, []))
    assert [h for h in header if h.startswith("Δ")] == ["Δ pp", "Δ tg"]      # as before lists of comparisons
    assert {r["Δ pp"] for r in rows} == {r["Δ tg"] for r in rows} == {"-"}


def test_engine_against_engine_with_a_candidate_compares_only_its_cells():
    cells, records = _demo_records(random.Random(5), cv_036=0.05)    # a baseline quiet enough to call +20%
    table = comparison_table(cells, records, [({"ref": "mainline-0.3.36"}, {"ref": "ik-0.1.5"})])
    header, rows = _rows(table)
    assert "Δ tg vs mainline-0.3.36" in header
    assert all(r["Δ tg vs mainline-0.3.36"] == "-" for r in rows if r["ref"] == "mainline-0.3.35")
    assert all(r["Δ tg vs mainline-0.3.36"] == "baseline" for r in rows if r["ref"] == "mainline-0.3.36")
    assert all(r["Δ tg vs mainline-0.3.36"].endswith("faster") for r in rows
               if r["ref"] == "ik-0.1.5" and r["rtr"] == "off" and r["tool"] == "llama-bench")


def test_an_unknown_verdict_comes_with_the_class_noise_figure_and_the_processes_to_settle_it():
    from coordinator.results.stats import runs_needed

    plan = load_plan(str(DEMO))
    cells, records = _demo_records(random.Random(6))
    table = comparison_table(cells, records, plan.comparisons)
    footer = [line for line in table.splitlines() if line.startswith("noise [c1] tg:")]
    assert len(footer) == 1, table
    # expected, computed here: pooled process CV over the class's cells, the resolvable change
    # at n=10 ((z_.975 + z_.8) cv sqrt(2/10)), and stats' estimate for each unknown row
    recs = {r["cell_id"]: r for rs in records.values() for r in rs}
    tg = {cid: r["metrics"]["tg_tps"]["samples"] for cid, r in recs.items()}
    cvs = [statistics.stdev(s) / statistics.fmean(s) for s in tg.values()]
    cv = (sum(9 * c ** 2 for c in cvs) / (9 * len(cvs))) ** 0.5
    resolves = max(0.02, (1.959964 + 0.841621) * cv * (2 / 10) ** 0.5)
    assert f"this class resolves ±{resolves * 100:.1f}% at n=10 (process CV {cv * 100:.1f}%)" in footer[0]
    _, rows = _rows(table)
    by_label = {tuple(r[k] for k in ("ref", "quant", "threads", "rtr", "tool")): r for r in rows}
    need = []
    for cell in plan.cells:
        p = cell.params
        row = by_label[(p["ref"], p["quant"], str(p["threads"]), "on" if p["rtr"] else "off", p["tool"])]
        if row["Δ tg vs mainline-0.3.35"].endswith("unknown"):
            base = next(c for c in plan.cells if c.params == {**p, "ref": "mainline-0.3.35"})
            need.append(max(11, runs_needed(tg[base.cell_id], tg[cell.cell_id])))
        assert not row["Δ tg vs rtr=off"].endswith("unknown")
    assert need, "the noisy mainline pairs must stay unknown"
    need.sort()
    assert f"{len(need)} unknown: about {need[(len(need) - 1) // 2]} processes a side would settle" in footer[0]


# ---------------------------------------------------------------- A/B groups

def test_the_rtr_pair_and_the_ref_comparison_share_one_interleaved_group_per_cell():
    plan = load_plan(str(DEMO))
    groups = comparison_groups(plan.cells, plan.comparisons)
    assert sorted(c.cell_id for g in groups for c in g) == sorted(c.cell_id for c in plan.cells)
    of = {c.cell_id: n for n, g in enumerate(groups) for c in g}
    by = {(c.params["ref"], c.params["quant"], c.params["threads"], c.params["rtr"], c.params["tool"]): c
          for c in plan.cells}
    for quant in ("Q8_0", "Q4_0"):
        for threads in (1, 2):
            on = by[("ik-0.1.5", quant, threads, True, "llama-bench")]
            off = by[("ik-0.1.5", quant, threads, False, "llama-bench")]
            base = by[("mainline-0.3.35", quant, threads, False, "llama-bench")]
            assert of[on.cell_id] == of[off.cell_id] == of[base.cell_id]
            assert len(groups[of[on.cell_id]]) == 4
    first = groups[0]
    assert [(c.params["ref"], c.params["rtr"]) for c in first] == [
        ("mainline-0.3.35", False), ("mainline-0.3.36", False), ("ik-0.1.5", False), ("ik-0.1.5", True)]
    assert [(c.params["ref"], c.params["rtr"]) for c in groups[1]] == [
        ("ik-0.1.5", True), ("ik-0.1.5", False), ("mainline-0.3.36", False), ("mainline-0.3.35", False)]
    sweep = next(c for c in plan.cells if c.params["tool"] == "llama-sweep-bench")
    assert groups[of[sweep.cell_id]] == [sweep]


def test_placement_puts_each_group_in_one_task_so_the_rtr_pair_runs_interleaved_on_one_agent():
    plan = load_plan(str(DEMO))
    profile = {"hostname": "vm", "cpu": {"cores": 2, "threads": 2, "flags": []}, "memory": {"ram_gb": 8},
               "gpus": {"count": 0, "devices": []}, "hardware_class": "c1"}
    placements, unmatched = place(plan.cells, [Agent(host="vm", hw_class="c1", profile=profile)], plan.comparisons)
    assert not unmatched
    pairs = [{(c.params["ref"], c.params["rtr"]) for c in p.cells} for p in placements]
    assert sum({("ik-0.1.5", True), ("ik-0.1.5", False)} <= s for s in pairs) == 4
