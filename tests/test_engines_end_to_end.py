"""End to end on real parts: registry sdists -> real builds -> real llama-bench and
llama-sweep-bench on the generated tiny model -> records in a file:// store -> table.

The first run compiles three engine trees (minutes); later runs hit the build cache.
"""
from __future__ import annotations

import json

import pytest

from agent.engine.gitutil import git
from agent.engine.sources import prepare_sdist_repo
from tests.conftest import hwmatrix

pytestmark = pytest.mark.engines

REPS = 3
MATRIX = f"""
name: e2e
engines:
  mainline: {{kind: llama.cpp, sdist: {{package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}}}
  ik: {{kind: ik_llama.cpp, sdist: {{package: ik-llama-cpp-python, versions: ["0.1.5"]}},
        build: {{cmake: [-DGGML_IQK_FA_ALL_QUANTS=OFF]}}}}
models:
  tiny: {{generate: tiny-llama}}
args: {{n_prompt: 32, n_gen: 8, ctx: 192, batch: 64, ubatch: 64, threads: 2}}
repetitions: {{min: {REPS}, max: {REPS}, min_process_s: 0}}
hygiene: {{drop_caches: prefer, warmup: 2}}
timeout_s: 300
matrix:
  ref:
    - {{name: m35, engine: mainline, tag: v0.3.35}}
    - {{name: m36, engine: mainline, tag: v0.3.36}}
    - {{name: ik, engine: ik, tag: v0.1.5}}
  quant: [Q8_0]
  rtr: [false, true]
  tool: [llama-bench]
  exclude: [{{ref: m35, rtr: true}}, {{ref: m36, rtr: true}}]
  include:
    - {{ref: ik, quant: Q8_0, rtr: false, tool: llama-sweep-bench}}
compare: {{baseline: {{ref: m35}}}}
"""


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    matrix = root / "e2e.yaml"
    matrix.write_text(MATRIX)
    store = root / "store"
    env = {"HWMATRIX_SPOOL": str(root / "spool")}
    first = hwmatrix("run", str(matrix), "--store", store.as_uri(), env=env)
    assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-2000:]
    records = {}
    for path in store.glob("runs/*/results/*/*.json"):
        rec = json.loads(path.read_text())
        records[(rec["params"]["ref"], rec["params"].get("rtr"), rec["params"]["tool"])] = rec
    return {"matrix": matrix, "store": store, "env": env, "first": first, "records": records}


def test_every_cell_is_measured_with_per_repetition_samples(e2e):
    assert len(e2e["records"]) == 5
    for rec in e2e["records"].values():
        assert rec["status"] == "ok", rec["error"]
        for name in ("pp_tps", "tg_tps"):
            metric = rec["metrics"][name]
            assert metric["n"] == REPS and len(metric["samples"]) == REPS
            assert all(s > 0 for s in metric["samples"])


def test_records_carry_the_resolved_commit_and_the_vendored_upstream_commit(e2e):
    repo = prepare_sdist_repo("llama-cpp-python", ["0.3.35", "0.3.36"])
    for ref, tag, upstream in (("m35", "v0.3.35", "4df29be4f"), ("m36", "v0.3.36", "0c1e57098")):
        rec = e2e["records"][(ref, False, "llama-bench")]
        assert rec["engine"]["commit"] == git("rev-parse", f"{tag}^{{commit}}", cwd=repo)
        assert rec["engine"]["upstream_commit"] == upstream
        # the binary itself reports the vendored upstream commit, not the local repo's
        assert rec["bench_rows"][0]["fields"]["build_commit"] == upstream
    ik = e2e["records"][("ik", False, "llama-bench")]
    assert ik["engine"]["upstream_commit"] == "55d3c05bf"
    assert ik["engine"]["build"]["key"]["compiler"] and ik["engine"]["build"]["key"]["cmake"]
    assert len(ik["engine"]["binary_hash"]) == 64


def test_hygiene_facts_are_recorded(e2e):
    for rec in e2e["records"].values():
        assert rec["hygiene"]["extra_warmup_runs"] == 1          # warmup: 2 = tool pass + 1 run
        assert rec["hygiene"]["drop_caches"] == "prefer" and "caches_dropped" in rec["hygiene"]
        assert "thp" in rec["hygiene"] and "governor" in rec["hygiene"]


def test_mainline_json_schema_fields_are_parsed(e2e):
    rows = e2e["records"][("m36", False, "llama-bench")]["bench_rows"]
    row = rows[0]
    assert row["fields"]["backends"] == "CPU"
    assert row["n_depth"] == 0 and row["n_prompt"] == 32
    # one engine process per repetition: each row holds its process's one sample
    pp_rows = [r for r in rows if r["n_gen"] == 0]
    assert [r["process"] for r in pp_rows] == list(range(REPS))
    assert all(len(r["samples_ns"]) == 1 for r in pp_rows)


def test_ik_schema_and_rtr_become_separate_invocations(e2e):
    off = e2e["records"][("ik", False, "llama-bench")]
    on = e2e["records"][("ik", True, "llama-bench")]
    assert off["bench_rows"][0]["fields"]["repack"] is False
    assert on["bench_rows"][0]["fields"]["repack"] is True
    assert "cuda" in on["bench_rows"][0]["fields"]        # ik's per-backend booleans
    assert ["-rtr", "1"] == on["tool"]["argv"][0][on["tool"]["argv"][0].index("-rtr"):][:2]
    assert "-rtr" not in off["tool"]["argv"][0] or "0" in off["tool"]["argv"][0]


def test_sweep_bench_gives_a_row_per_n_kv_for_each_repetition(e2e):
    rec = e2e["records"][("ik", False, "llama-sweep-bench")]
    assert len(rec["tool"]["argv"]) == REPS                  # one process per repetition
    series = sorted({r["n_kv"] for r in rec["sweep_rows"]})
    n_kv_max = rec["sweep_rows"][0]["n_kv_max"]              # the context the engine allocated
    assert n_kv_max >= 192                                   # asked for ctx 192 (ik rounds up)
    assert series == list(range(0, n_kv_max, 64))            # one row per ubatch of 64
    assert len(rec["sweep_rows"]) == REPS * len(series)
    assert rec["metrics"]["pp_tps"]["n"] == REPS


def test_engines_write_nothing_into_the_users_directory(e2e):
    from tests.conftest import REPO

    assert not (REPO / "llama.log").exists()
    sweep = e2e["records"][("ik", False, "llama-sweep-bench")]
    assert (e2e["store"] / sweep["logs"]["llama.log"]).is_file()     # kept as a log instead


def test_logs_and_manifest_are_stored_beside_the_records(e2e):
    store = e2e["store"]
    rec = e2e["records"][("m35", False, "llama-bench")]
    for name in ("build.log", "stdout.txt", "stderr.txt"):
        assert (store / rec["logs"][name]).is_file()
    manifest = json.loads(next(store.glob("runs/*/manifest.json")).read_text())
    assert manifest["state"] == "complete" and len(manifest["cells"]) == 5


def test_table_shows_mean_sd_and_change_against_the_baseline(e2e):
    table = e2e["first"].stdout
    assert table.count("\n| ") >= 5 and "pp t/s" in table
    lines = [l for l in table.splitlines() if l.startswith("| m35")]
    assert "baseline" in lines[0]
    m36 = next(l for l in table.splitlines() if l.startswith("| m36"))
    assert "%" in m36 and "±" in m36


def test_rerun_resumes_without_rebuilding_or_remeasuring_and_prints_the_same_table(e2e):
    before = {p: p.stat().st_mtime_ns for p in e2e["store"].glob("runs/*/results/*/*.json")}
    again = hwmatrix("run", str(e2e["matrix"]), "--store", e2e["store"].as_uri(), env=e2e["env"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 to run" in again.stderr
    assert again.stdout == e2e["first"].stdout
    after = {p: p.stat().st_mtime_ns for p in e2e["store"].glob("runs/*/results/*/*.json")}
    assert after == before


def test_measuring_processes_on_the_machine_never_overlap(e2e):
    """Each group holds the node's single benchmark slot and runs one engine process at a
    time, so no two measurements share the machine, even between interleaved cells."""
    from datetime import datetime, timedelta

    spans = sorted((start, start + timedelta(seconds=wall))
                   for r in e2e["records"].values()
                   for start, wall in zip(map(datetime.fromisoformat, r["tool"]["started"]), r["tool"]["wall_s"]))
    assert len(spans) == sum(len(r["tool"]["argv"]) for r in e2e["records"].values()) >= 5 * REPS
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start


def test_records_carry_this_machines_profile_and_class(e2e):
    from agent.machine.probe import probe

    for rec in e2e["records"].values():
        assert rec["hardware_class"] == probe().hardware_class
        assert rec["hardware"]["cpu"]["threads"] >= 1


def test_refs_of_the_same_cell_were_measured_back_to_back(e2e):
    recs = e2e["records"]
    started = {k: recs[k]["timestamps"]["bench_started"] for k in recs}
    group = [("m35", False, "llama-bench"), ("m36", False, "llama-bench"), ("ik", False, "llama-bench")]
    assert [started[k] for k in group] == sorted(started[k] for k in group)
    others = [v for k, v in started.items() if k not in group]
    assert not any(started[group[0]] < v < started[group[-1]] for v in others)
