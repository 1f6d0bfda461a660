"""A and B load the same model bytes: one build quantizes each (model, quant), the plan says
which (the same on every agent), every ref and engine that can load its file takes it, and
the record names that build. `quantize_with: each` keeps one llama-quantize per build."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent.spec.cellspec import CellSpec
from agent.spec.registry import QUANTIZE
from coordinator.planning.plan import build_targets, load_plan
from tests.conftest import REPO, hwmatrix

DEMO = REPO / "matrices" / "demo-full.yaml"
MAINLINE = '{kind: llama.cpp, sdist: {package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}'
IK = '{kind: ik_llama.cpp, sdist: {package: ik-llama-cpp-python, versions: ["0.1.5"]}}'


def _plan(tmp_path, refs: str, quants: str, model: str = "{generate: tiny-llama}", extra: str = ""):
    path = tmp_path / "m.yaml"
    path.write_text(f"""name: shared
engines: {{mainline: {MAINLINE}, ik: {IK}}}
models: {{tiny: {model}}}
matrix:
  ref: {refs}
  quant: {quants}
{extra}""")
    return load_plan(str(path))


def _quantized_by(plan) -> dict[tuple, str]:
    """(ref, quant) -> the ref whose llama-quantize makes that cell's file."""
    return {(c.params["ref"], c.params["quant"]): (c.quantizer or c).ref.name for c in plan.cells}


MIXED = "[{name: ik, engine: ik, tag: v0.1.5}, {name: m35, engine: mainline, tag: v0.3.35}, " \
        "{name: m36, engine: mainline, tag: v0.3.36}]"


def test_the_full_demo_quantizes_every_quant_once_with_mainline_0_3_35():
    plan = load_plan(str(DEMO))
    assert {(c.quantizer or c).ref.name for c in plan.cells} == {"mainline-0.3.35"} and len(plan.cells) == 17
    targets = build_targets(plan.cells)
    by_ref = {order[1]: t for order, t in targets.items()}
    # only the build that quantizes compiles llama-quantize
    assert QUANTIZE in by_ref["mainline-0.3.35"]
    assert QUANTIZE not in by_ref["mainline-0.3.36"] and QUANTIZE not in by_ref["ik-0.1.5"]


def test_a_mixed_matrix_quantizes_a_common_quant_with_mainline_even_when_ik_comes_first(tmp_path):
    plan = _plan(tmp_path, MIXED, "[Q8_0, Q4_0]")
    assert set(_quantized_by(plan).values()) == {"m35"}      # ik loads mainline's files; the first mainline ref


def test_an_ik_only_quant_is_made_by_ik_and_a_common_one_by_mainline_in_the_same_matrix(tmp_path):
    plan = _plan(tmp_path, MIXED + "\n  include: [{ref: ik, quant: IQ4_K}]", "[Q8_0]")
    made = _quantized_by(plan)
    assert made[("ik", "IQ4_K")] == "ik"
    assert made[("ik", "Q8_0")] == made[("m36", "Q8_0")] == "m35"
    ik_cells = [c for c in plan.cells if c.params["ref"] == "ik"]
    assert QUANTIZE in build_targets(plan.cells)[ik_cells[0].build_order]     # ik now quantizes IQ4_K


def test_an_ik_only_quant_of_two_ik_refs_is_made_by_the_first(tmp_path):
    path = tmp_path / "ik.yaml"
    path.write_text(f"""name: ik2
engines: {{ik: {IK}, ik2: {{kind: ik_llama.cpp, repo: https://github.com/ikawrakow/ik_llama.cpp}}}}
models: {{tiny: {{generate: tiny-llama}}}}
matrix:
  ref: [{{name: a, engine: ik2, branch: main}}, {{name: b, engine: ik, tag: v0.1.5}}]
  quant: [IQ4_K, Q6_0]
""")
    assert set(_quantized_by(load_plan(str(path))).values()) == {"a"}


def test_quantize_with_each_gives_every_build_its_own_llama_quantize(tmp_path):
    plan = _plan(tmp_path, MIXED, "[Q8_0]", model="{generate: tiny-llama, quantize_with: each}")
    assert all(c.quantizer is None for c in plan.cells)
    assert all(QUANTIZE in t for t in build_targets(plan.cells).values())
    specs = [c.to_spec("r", "file:///tmp/x") for c in plan.cells]
    assert all(s.quantizer is None for s in specs)


def test_a_cpu_build_quantizes_for_the_gpu_cells_of_the_same_ref(tmp_path):
    plan = _plan(tmp_path, "[{name: m36, engine: mainline, tag: v0.3.36}]", "[Q8_0]", extra="  gpus: [1, 0]\n")
    gpu = next(c for c in plan.cells if c.params["gpus"] == 1)
    cpu = next(c for c in plan.cells if c.params["gpus"] == 0)
    assert gpu.cuda and gpu.quantizer is cpu and cpu.quantizer is None
    assert gpu.to_spec("r", "file:///tmp/x").quantizer.gpus == 0


def test_the_spec_names_the_quantizing_build_with_the_targets_it_has_on_the_agent(tmp_path):
    plan = load_plan(str(DEMO))
    targets = build_targets(plan.cells)
    ik = next(c for c in plan.cells if c.engine_name == "ik")
    spec = ik.to_spec("r", "file:///tmp/x", targets[ik.build_order])
    q = spec.quantizer
    assert (q.engine.name, q.engine.kind, q.ref.name, q.ref.value) == ("mainline", "llama.cpp", "mainline-0.3.35",
                                                                        "v0.3.35")
    base = next(c for c in plan.cells if c.params["ref"] == "mainline-0.3.35")
    assert q.build_targets == sorted(targets[base.build_order]) == ["llama-bench", "llama-quantize"]
    assert CellSpec.model_validate_json(spec.model_dump_json()) == spec        # what an agent receives
    # every cell handed the same quantizer shares one object (specs are frozen)
    others = [c.to_spec("r", "file:///tmp/x", targets[c.build_order]).quantizer for c in plan.cells if c.quantizer]
    assert all(o is q for o in others)


def test_the_agent_builds_llama_quantize_only_where_its_own_build_quantizes(tmp_path):
    from agent.engine.pipeline import _targets

    plan = load_plan(str(DEMO))
    specs = {c.params["ref"]: c.to_spec("r", "file:///tmp/x") for c in plan.cells
             if c.params["quant"] == "Q8_0" and c.params["threads"] == 1 and c.params["rtr"] is False
             and c.settings["tool"] == "llama-bench"}
    assert QUANTIZE in _targets(specs["mainline-0.3.35"])
    assert QUANTIZE not in _targets(specs["mainline-0.3.36"]) and QUANTIZE not in _targets(specs["ik-0.1.5"])


# ---------------------------------------------------------------- the record and the volunteer check

def test_a_record_written_before_quantized_by_existed_loads_and_dumps_the_same():
    from agent.spec.record import StoredRecord

    old = {"schema_version": 1, "run_id": "r", "cell_id": "c", "agent_id": "a", "status": "ok",
           "matrix": {}, "params": {},
           "model": {"name": "tiny", "quant": "Q8_0", "path": "/x.gguf", "sha256": "a" * 64, "source_sha256": "b" * 64}}
    rec = StoredRecord.model_validate(old)
    assert rec.model.quantized_by is None and rec.model.sha256 == "a" * 64
    assert rec.model_dump(mode="json")["model"] == old["model"]
    new = {**old, "model": {**old["model"], "quantized_by": {"engine": "mainline", "ref": {"name": "m35"},
                                                            "binary_hash": "c" * 64, "build_digest": "d" * 20}}}
    rec = StoredRecord.model_validate(new)
    assert rec.model.quantized_by.engine == "mainline" and rec.model.quantized_by.ref == {"name": "m35"}
    assert rec.model_dump(mode="json")["model"] == new["model"]


def _leased(spec: CellSpec, made_by: dict | None):
    """An ok record of ``spec`` as an agent writes it, and the lease it answers."""
    from agent.engine import tools
    from agent.engine.sources import sdist_repo_id
    from agent.spec.record import Metric, ResultRecord
    from coordinator.volunteers.lease_record import LeasedCell
    from tests.test_volunteers import PROFILE

    argv = tools.invocation(spec, f"/b/bin/{spec.tool}", "/m/tiny-Q8_0.gguf", 2)
    record = ResultRecord(
        run_id=spec.run_id, matrix={"name": spec.matrix_name, "hash": spec.matrix_hash}, cell_id=spec.cell_id,
        agent_id="alice", agent_key_fingerprint="f" * 16, params=spec.params, status="ok",
        engine={"name": spec.engine.name, "kind": spec.engine.kind, "source": spec.engine.source(),
                "ref": spec.ref.model_dump(), "cmake": list(spec.engine.cmake), "build_flags": list(spec.engine.cmake),
                "repo_id": sdist_repo_id(spec.engine.sdist.package, list(spec.engine.sdist.versions)),
                "commit": "1" * 40},
        model={"name": spec.model.name, "quant": spec.quant, **({"quantized_by": made_by} if made_by else {})},
        tool={"name": spec.tool, "argv": [argv], "exit_codes": [0], "wall_s": [0.5], "started": ["x"]},
        hardware=PROFILE, hardware_class=PROFILE["hardware_class"],
        metrics={"pp_tps": Metric.from_samples("pp16", [100.0, 101.0], process_sizes=[2])})
    lease = LeasedCell(spec.run_id, spec.cell_id, "alice", frozenset({"f" * 16}), PROFILE["hardware_class"],
                       spec.model_dump(mode="json"))
    return json.dumps(record.model_dump(mode="json")).encode(), lease


def _made_by(engine, ref, commit: str, repo_id: str) -> dict:
    return {"engine": engine.name, "kind": engine.kind, "source": engine.source(), "ref": ref.model_dump(),
            "cmake": list(engine.cmake), "repo_id": repo_id, "commit": commit, "build_digest": "d" * 20,
            "binary_hash": "e" * 64}


def test_a_volunteers_record_must_name_the_quantizer_its_spec_named():
    from agent.engine.sources import sdist_repo_id
    from coordinator.results.record_check import BadRecord
    from coordinator.volunteers.lease_record import checked_record

    plan = load_plan(str(DEMO))
    targets = build_targets(plan.cells)
    cells = {c.params["ref"]: c for c in plan.cells if c.params["quant"] == "Q8_0" and c.params["threads"] == 1
             and c.params["rtr"] is False and c.settings["tool"] == "llama-bench"}
    m36 = cells["mainline-0.3.36"].to_spec("r", "s3://b/p", targets[cells["mainline-0.3.36"].build_order])
    repo_id = sdist_repo_id("llama-cpp-python", ["0.3.35", "0.3.36"])
    q = m36.quantizer
    good = _made_by(q.engine, q.ref, "2" * 40, repo_id)
    checked_record(*_leased(m36, good))                                  # the honest record passes
    for name, made, why in (
            ("missing", None, "quantized_by is missing"),
            ("own build", _made_by(m36.engine, m36.ref, "1" * 40, repo_id), "quantized_by.ref"),
            ("short commit", {**good, "commit": "2" * 9}, "not a full commit id"),
            ("other repo", {**good, "repo_id": "https://example.com/fork"}, "quantized_by.repo_id"),
            ("other engine", {**good, "kind": "ik_llama.cpp"}, "quantized_by.kind")):
        with pytest.raises(BadRecord, match=why):
            checked_record(*_leased(m36, made))
    # the baseline cell quantizes with its own build: the record names that build's commit
    m35 = cells["mainline-0.3.35"].to_spec("r", "s3://b/p", targets[cells["mainline-0.3.35"].build_order])
    assert m35.quantizer is None
    checked_record(*_leased(m35, _made_by(m35.engine, m35.ref, "1" * 40, repo_id)))
    with pytest.raises(BadRecord, match="quantized_by.commit"):
        checked_record(*_leased(m35, _made_by(m35.engine, m35.ref, "3" * 40, repo_id)))


# ---------------------------------------------------------------- on real builds

E2E = f"""name: shared-model
engines:
  mainline: {MAINLINE}
  ik: {IK[:-1]}, build: {{cmake: [-DGGML_IQK_FA_ALL_QUANTS=OFF]}}}}
models:
  tiny: {{generate: tiny-llama}}
  each: {{generate: tiny-llama, quantize_with: each}}
args: {{n_prompt: 16, n_gen: 4, threads: 1}}
repetitions: {{min: 3, max: 3, min_process_s: 0}}
hygiene: {{drop_caches: off}}
timeout_s: 300
matrix:
  ref:
    - {{name: m35, engine: mainline, tag: v0.3.35}}
    - {{name: m36, engine: mainline, tag: v0.3.36}}
    - {{name: ik, engine: ik, tag: v0.1.5}}
  model: [tiny, each]
  quant: [Q8_0]
  exclude: [{{ref: ik, model: each}}]
"""


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    matrix = root / "shared.yaml"
    matrix.write_text(E2E)
    store = root / "store"
    result = hwmatrix("run", str(matrix), "--store", store.as_uri(), env={"HWMATRIX_SPOOL": str(root / "spool")})
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    records = {}
    for path in store.glob("runs/*/results/*/*.json"):
        rec = json.loads(path.read_text())
        records[(rec["params"]["ref"], rec["params"]["model"])] = rec
    return store, records


@pytest.mark.engines
def test_two_refs_and_two_engines_of_one_quant_load_the_same_file(shared_run):
    _, records = shared_run
    assert len(records) == 5 and all(r["status"] == "ok" for r in records.values()), \
        {k: r.get("error") for k, r in records.items()}
    shared = [records[(ref, "tiny")] for ref in ("m35", "m36", "ik")]
    assert len({r["model"]["sha256"] for r in shared}) == 1 and len({r["model"]["path"] for r in shared}) == 1
    # the file the engine itself says it loaded
    assert len({r["bench_rows"][0]["fields"]["model_filename"] for r in shared}) == 1
    for rec in shared:
        made = rec["model"]["quantized_by"]
        assert (made["engine"], made["ref"]["name"]) == ("mainline", "m35")
        assert made["commit"] == records[("m35", "tiny")]["engine"]["commit"] and len(made["binary_hash"]) == 64
    # quantize_with: each - every build its own llama-quantize, as before
    each = {ref: records[(ref, "each")]["model"] for ref in ("m35", "m36")}
    assert each["m36"]["quantized_by"]["ref"]["name"] == "m36"
    assert each["m36"]["quantized_by"]["binary_hash"] != each["m35"]["quantized_by"]["binary_hash"]
    assert each["m36"]["path"] != each["m35"]["path"]


@pytest.mark.engines
def test_llama_cpps_compare_script_pairs_the_refs_on_the_export(shared_run, tmp_path):
    """The real scripts/compare-llama-bench.py of the resolved sdist tree, run in that tree
    (GitPython names the tags), reads `report --export sqlite` and prints its table; before,
    each ref's own quantized file kept every row apart: "No comparable data was found"."""
    from agent.engine.sources import prepare_sdist_repo

    store, records = shared_run
    db = tmp_path / "bench.sqlite"
    result = hwmatrix("report", "--store", store.as_uri(), "--export", "sqlite", "--out", str(db))
    assert result.returncode == 0, result.stderr
    repo = prepare_sdist_repo("llama-cpp-python", ["0.3.35", "0.3.36"])
    script = tmp_path / "compare-llama-bench.py"
    script.write_text(subprocess.run(["git", "show", "v0.3.36:scripts/compare-llama-bench.py"], cwd=repo,
                                     check=True, capture_output=True, text=True).stdout)
    out = subprocess.run([sys.executable, str(script), "-i", str(db), "-b", "v0.3.35", "-c", "v0.3.36", "-o", "tsv"],
                         cwd=repo, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "No comparable data" not in out.stdout + out.stderr
    header, *lines = [[cell.strip() for cell in line.split("\t")] for line in out.stdout.strip().splitlines()]
    speedup = {row[header.index("Test")]: float(row[header.index("Speedup")]) for row in lines}
    assert {"pp16", "tg4"} <= set(speedup) and all(s > 0 for s in speedup.values()), out.stdout
    print(out.stdout)
