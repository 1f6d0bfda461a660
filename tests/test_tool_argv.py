"""Engine command lines are pinned: records compare argv, so every cell's argv stays byte
for byte what it was, whatever builds it. Representative specs of both engines and both
tools are spelled out; every cell of the shipped matrices (and of one wide matrix that sets
every arg on both engines) is pinned by a digest of its argv."""
from __future__ import annotations

import hashlib
import json

import pytest

from agent.engine import tools
from agent.spec.cellspec import CellSpec, EngineSpec, Hygiene, ModelSpec, RefSpec, Repetitions, ToolArgs
from coordinator.planning.plan import load_plan
from tests.conftest import REPO

MAIN, IK, BENCH, SWEEP = "llama.cpp", "ik_llama.cpp", "llama-bench", "llama-sweep-bench"


def spec(kind: str, tool: str, warmup: int = 1, per_process: int | str = 1, most: int = 10,
         min_process_s: float = 1.0, **args) -> CellSpec:
    return CellSpec(
        run_id="r", matrix_name="m", matrix_hash="0" * 12, cell_id="c", params={},
        engine=EngineSpec(name="e", kind=kind, repo="https://example.com/x.git"),
        ref=RefSpec(name="a", kind="tag", value="v1"), model=ModelSpec(name="tiny", generate="tiny-llama"),
        tool=tool, args=ToolArgs(**args), repetitions=Repetitions(min=1, max=most, per_process=per_process,
                                                                  min_process_s=min_process_s),
        hygiene=Hygiene(warmup=warmup), store_url="file:///tmp/s")


HEAD = {BENCH: ["/b/llama-bench", "-m", "/m.gguf", "-o", "json", "-r", "5"],
        SWEEP: ["/b/llama-sweep-bench", "-m", "/m.gguf"]}
CASES = [
    pytest.param(MAIN, BENCH, 1, dict(n_prompt=512, n_gen=128, depth=256, batch=2048, ubatch=512, threads=8, ngl=99,
                                      fa=True, ctk="q8_0", ctv="f16", sm="layer", ts="3/1", ot="exps=CPU", mmap=False,
                                      ctx=4096, nrep=3),
                 ["-p", "512", "-n", "128", "-t", "8", "-b", "2048", "-ub", "512", "-ngl", "99", "-ctk", "q8_0",
                  "-ctv", "f16", "-sm", "layer", "-ts", "3/1", "-ot", "exps=CPU", "-d", "256", "-fa", "1", "-mmp", "0"],
                 id="mainline-bench-every-arg"),
    pytest.param(MAIN, BENCH, 0, dict(n_gen=16, fa=False, mmap=True, depth=0),
                 ["-n", "16", "-d", "0", "-fa", "0", "-mmp", "1", "--no-warmup"], id="mainline-bench-no-warmup"),
    pytest.param(MAIN, BENCH, 3, {}, [], id="mainline-bench-bare"),
    pytest.param(IK, BENCH, 0, dict(n_prompt=512, n_gen=128, batch=2048, ubatch=512, threads=8, ngl=99, fa=False,
                                    ctk="q8_KV", ctv="q6_0", mla=3, amb=256, rtr=True, fmoe=False, sm="graph", ts="3/1",
                                    ot="exps=CPU", mmap=True, ctx=4096, nrep=3),
                 ["-p", "512", "-n", "128", "-t", "8", "-b", "2048", "-ub", "512", "-ngl", "99", "-ctk", "q8_KV",
                  "-ctv", "q6_0", "-sm", "graph", "-ts", "3/1", "-ot", "exps=CPU", "-mla", "3", "-amb", "256",
                  "-fa", "0", "-mmp", "1", "-rtr", "1", "-fmoe", "0", "-w", "0"], id="ik-bench-every-arg"),
    pytest.param(IK, BENCH, 2, dict(fa=True, rtr=False, fmoe=True, mmap=False, mla=0, amb=0),
                 ["-mla", "0", "-amb", "0", "-fa", "1", "-mmp", "0", "-rtr", "0", "-fmoe", "1"], id="ik-bench-switches"),
    pytest.param(IK, SWEEP, 0, dict(n_prompt=512, n_gen=128, ctx=71680, batch=7168, ubatch=7168, threads=16, ngl=63,
                                    fa=True, ctk="q8_0", ctv="q8_0", mla=3, amb=256, rtr=True, fmoe=False, nrep=4,
                                    sm="layer", ts="3/1", ot="exps=CPU", mmap=False),
                 ["-c", "71680", "-t", "16", "-b", "7168", "-ub", "7168", "-ngl", "63", "-ctk", "q8_0", "-ctv", "q8_0",
                  "-mla", "3", "-amb", "256", "-n", "128", "-nrep", "4", "-sm", "layer", "-ts", "3/1", "-ot",
                  "exps=CPU", "-fa", "on", "-rtr", "-no-fmoe", "--no-mmap", "--no-warmup"], id="ik-sweep-every-arg"),
    pytest.param(IK, SWEEP, 1, dict(fa=False, rtr=False, fmoe=True, mmap=True), ["-c", "512", "-fa", "off"],
                 id="ik-sweep-switches-default-ctx"),
    pytest.param(IK, SWEEP, 3, {}, ["-c", "512"], id="ik-sweep-bare"),
]


@pytest.mark.parametrize("kind, tool, warmup, args, tail", CASES)
def test_the_argv_of_a_spec_is_pinned(kind, tool, warmup, args, tail):
    cell = spec(kind, tool, warmup, **args)
    assert tools.invocation(cell, f"/b/{tool}", "/m.gguf", 5) == HEAD[tool] + tail
    warm = tools.warmup_invocations(cell, f"/b/{tool}", "/m.gguf")
    once = (HEAD[tool][:-1] + ["1"] if tool == BENCH else HEAD[tool]) + tail
    assert warm == [once] * max(0, warmup - 1)


@pytest.mark.parametrize("kind, tool, args, message", [
    (MAIN, BENCH, dict(mla=0), "mla: ik_llama.cpp options, not available in llama.cpp"),
    (MAIN, BENCH, dict(rtr=False, fmoe=True, amb=0), "amb, fmoe, rtr: ik_llama.cpp options, not available in llama.cpp"),
    (MAIN, SWEEP, {}, "llama-sweep-bench exists only in ik_llama.cpp"),
    (MAIN, SWEEP, dict(mla=1), "mla: ik_llama.cpp options, not available in llama.cpp"),
    (IK, BENCH, dict(depth=0), "depth: llama.cpp options, not available in ik_llama.cpp"),
    (IK, SWEEP, dict(depth=5), "depth: llama.cpp options, not available in ik_llama.cpp"),
])
def test_an_arg_the_engine_lacks_is_refused_by_the_agent(kind, tool, args, message):
    with pytest.raises(tools.ArgError) as err:
        tools.invocation(spec(kind, tool, **args), "/b", "/m", 1)
    assert str(err.value) == message


@pytest.mark.parametrize("tool, per_process, min_process_s, reps", [
    (BENCH, 1, 1.0, 1), (BENCH, 4, 1.0, 4), (BENCH, "auto", 0, 1), (BENCH, "auto", 1.0, None),
    (SWEEP, 4, 1.0, 1), (SWEEP, "auto", 1.0, 1)])
def test_repetitions_per_process_are_given_or_left_to_calibration(tool, per_process, min_process_s, reps):
    # min/max count processes, so every process does the same number whatever the cap
    cell = spec(IK, tool, per_process=per_process, most=10, min_process_s=min_process_s)
    assert tools.fixed_reps(cell) == reps


WIDE = """\
name: pin
engines:
  main: {kind: llama.cpp, repo: https://github.com/ggml-org/llama.cpp}
  ik: {kind: ik_llama.cpp, repo: https://github.com/ikawrakow/ik_llama.cpp}
models:
  tiny: {generate: tiny-llama}
args: {n_prompt: 64, n_gen: 16, ngl: 0, ctk: Q8_0, ts: "1", ot: "x=CPU", sm: layer, threads: 2}
hygiene: {warmup: 0}
matrix:
  ref:
    - {name: a, engine: main, tag: b1}
    - {name: b, engine: ik, tag: v1}
  tool: [llama-bench, llama-sweep-bench]
  fa: [false, true]
  rtr: [false, true]
  fmoe: [false, true]
  mmap: [true, false]
  batch: [64, {b: 128, ub: 32}]
  exclude:
    - {ref: a, rtr: true}
    - {ref: a, fmoe: true}
    - {ref: a, tool: llama-sweep-bench}
  include:
    - {ref: a, depth: 128}
    - {ref: b, mla: 2, amb: 64, ctv: q6_0, ctx: 1024, nrep: 2}
"""

# sha256 of every cell's (id, argv, warmup argvs), as the builders gave them before the registry
PINNED = {
    "matrices/demo-full.yaml": "a525d7fe9d376c0745a60f0534bdf22586b69de35fe886095d7257be0784316d",
    "matrices/ik-518-reproduction.yaml": "d67518423978b8c974e245526a2490dab76afbd5e7f5361db85076b41f9b000c",
    "wide": "9ac5120a6e45e5fe759a0c0711848338e54f9935f12ac53d4054b1e8cfdce609",
}


def _argvs(path) -> str:
    plan = load_plan(str(path))
    out = []
    for cell in plan.cells:
        s = cell.to_spec("r", "file:///tmp/s")
        out.append([cell.cell_id, tools.invocation(s, f"/b/{s.tool}", "/m.gguf", 3),
                    tools.warmup_invocations(s, f"/b/{s.tool}", "/m.gguf")])
    return hashlib.sha256(json.dumps(out).encode()).hexdigest()


@pytest.mark.parametrize("name", list(PINNED))
def test_every_cell_of_the_pinned_matrices_keeps_its_argv(name, tmp_path):
    path = REPO / name
    if name == "wide":
        path = tmp_path / "wide.yaml"
        path.write_text(WIDE)
    assert _argvs(path) == PINNED[name]
