"""The capability registry (agent/spec/registry.py) is the one place that knows the tool
arguments, engine kinds and tools: the matrix, the cell spec, the plan, the argv builders,
the markdown parser and the importer are built from it. Adding a flag or an engine kind is
one registry entry; an engine kind it does not have is refused, never taken for ik."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from pydantic import ValidationError

from agent.engine import tools
from agent.spec import cellspec
from agent.spec.registry import ARGS, ENGINES, TOOLS, Valued
from agent.spec.yaml_lines import MatrixError
from coordinator.matrix import schema
from coordinator.matrix.loading import validate_matrix
from coordinator.planning.plan import load_plan
from tests.conftest import REPO


def test_the_matrix_and_the_cell_spec_take_exactly_the_registry_args():
    assert list(schema.ToolArgs.model_fields) == list(cellspec.ToolArgs.model_fields) == list(ARGS)
    assert set(ARGS) <= set(schema.MatrixAxes.model_fields) and set(ARGS) <= set(schema.AxisValues.model_fields)


def test_every_tool_and_engine_kind_is_complete():
    for engine in ENGINES.values():
        assert set(engine.tools) <= set(TOOLS) and set(engine.no_warmup) == set(engine.tools)
        assert set(engine.loads_files_of) <= set(ENGINES) - {engine.name}
    for tool in TOOLS.values():
        assert tool.output in tools.READERS and set(tool.order) <= set(ARGS)
    for arg in ARGS.values():
        assert set(arg.flags) <= set(TOOLS) and set(arg.engines or ENGINES) <= set(ENGINES)


EXTENDED = r'''
import json, sys
from agent.spec import registry as r

# The only change: one entry per new flag and one per new engine kind.
r.ARGS["nkvo"] = r.ArgSpec("nkvo", r.BOOL, "KV cache kept in host memory (-nkvo)", {r.BENCH: r.numeric("-nkvo")},
                           columns=("nkvo",), json="no_kv_offload")
r.ARGS["mqkv"] = r.ArgSpec("mqkv", r.BOOL, "merged Q, K and V (-mqkv, ik only)", {r.BENCH: r.numeric("-mqkv")},
                           engines=(r.IK,), off=False, columns=("mqkv",), json="merge_qkv")
r.ENGINES["fork.cpp"] = r.EngineKind("fork.cpp", r.ENGINES[r.MAINLINE].quants, r.KV_COMMON, (r.BENCH,),
                                     {r.BENCH: ("--no-warmup",)}, r.ENGINES[r.MAINLINE].cmake)

from agent.engine.tools import invocation
from agent.parsers.llama_bench_markdown import DISPLAY_TO_FIELD, IK_COLUMNS
from agent.spec.cellspec import CellSpec
from agent.spec.yaml_lines import MatrixError
from coordinator.matrix.loading import validate_matrix
from coordinator.planning.plan import load_plan
from coordinator.results.importers import KEY_PARAMS

plan = load_plan(sys.argv[1])
out = {"cells": [], "errors": [], "columns": [DISPLAY_TO_FIELD.get("nkvo"), "mqkv" in IK_COLUMNS,
                                              "merge_qkv" in KEY_PARAMS]}
for cell in plan.cells:
    spec = CellSpec.model_validate_json(cell.to_spec("r", "file:///tmp/s").model_dump_json())   # as an agent reads it
    out["cells"].append([cell.params["ref"], spec.args.model_dump(exclude_none=True),
                         invocation(spec, "/b/llama-bench", "/m.gguf", 1)[7:]])
base = json.loads(sys.argv[2])
for change in json.loads(sys.argv[3]):
    try:
        validate_matrix({**base, **change}, {}, "x.yaml")
        out["errors"].append(None)
    except MatrixError as exc:
        out["errors"].append(str(exc))
print(json.dumps(out))
'''

EXTENDED_MATRIX = """\
name: extended
engines:
  main: {kind: llama.cpp, repo: https://github.com/ggml-org/llama.cpp}
  ik: {kind: ik_llama.cpp, repo: https://github.com/ikawrakow/ik_llama.cpp}
  fork: {kind: fork.cpp, repo: https://example.com/fork.git}
models:
  tiny: {generate: tiny-llama}
args: {nkvo: true}
matrix:
  ref:
    - {name: a, engine: main, tag: b1}
    - {name: b, engine: ik, tag: v1}
    - {name: c, engine: fork, tag: v1}
  mqkv: [false, true]
  exclude:
    - {ref: a, mqkv: true}
    - {ref: c, mqkv: true}
"""
BASE = {"name": "x", "engines": {"fork": {"kind": "fork.cpp", "repo": "https://example.com/fork.git"}},
        "models": {"tiny": {"generate": "tiny-llama"}}, "matrix": {"ref": [{"name": "c", "tag": "v1"}]}}


def test_a_flag_and_an_engine_kind_added_to_the_registry_reach_every_part(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(EXTENDED_MATRIX)
    changes = [{"args": {"mqkv": True}}, {"args": {"mla": 1}}, {"tool": "llama-sweep-bench"}, {"args": {"nkvoo": True}}]
    done = subprocess.run([sys.executable, "-c", EXTENDED, str(path), json.dumps(BASE), json.dumps(changes)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    # the matrix takes the new flag, the plan carries it into the spec (nothing drops it), argv has it;
    # the ik-only one is left out where its engine lacks it and it is off, as -rtr false is
    assert out["cells"] == [
        ["a", {"nkvo": True}, ["-nkvo", "1"]],
        ["b", {"nkvo": True, "mqkv": False}, ["-nkvo", "1", "-mqkv", "0"]],
        ["b", {"nkvo": True, "mqkv": True}, ["-nkvo", "1", "-mqkv", "1"]],
        ["c", {"nkvo": True}, ["-nkvo", "1"]],
    ]
    assert out["columns"] == ["no_kv_offload", True, True]     # the markdown column and the importer key
    assert out["errors"] == [
        "x.yaml: args.mqkv: mqkv=true needs ik_llama.cpp, but ref 'c' builds engine 'fork' (fork.cpp); "
        "set it per ref with include",
        "x.yaml: args.mla: mla=1 needs ik_llama.cpp, but ref 'c' builds engine 'fork' (fork.cpp); "
        "set it per ref with include",
        "x.yaml: tool: tool=llama-sweep-bench needs ik_llama.cpp, but ref 'c' builds engine 'fork' (fork.cpp); "
        "set it per ref with include",
        "x.yaml: args.nkvoo: unknown arg 'nkvoo'; did you mean 'nkvo'?",
    ]


def test_an_engine_kind_the_registry_lacks_is_a_one_line_error_not_ik():
    with pytest.raises(MatrixError) as err:
        validate_matrix(BASE, {("engines", "fork", "kind"): 3}, "x.yaml")
    assert str(err.value) == ("x.yaml:3: engines.fork.kind: input should be 'llama.cpp' or 'ik_llama.cpp', "
                              "got 'fork.cpp'")
    spec = {"name": "e", "kind": "fork.cpp", "repo": "https://example.com/fork.git"}
    with pytest.raises(ValidationError):
        cellspec.EngineSpec.model_validate(spec)
    with pytest.raises(tools.ArgError, match="'fork.cpp' is not a known engine kind"):
        tools.check_args("fork.cpp", "llama-sweep-bench", cellspec.ToolArgs(mla=1))


@pytest.mark.parametrize("kind, arg, flag", [("llama.cpp", "amb", "-amb"), ("ik_llama.cpp", "depth", "-d")])
def test_an_arg_the_engine_lacks_at_its_off_value_is_left_out_so_the_agent_runs_it(tmp_path, kind, arg, flag):
    """The matrix takes amb: 0 on mainline and depth: 0 on ik (off asks for nothing); the
    agent used to refuse the spec at run time."""
    path = tmp_path / "m.yaml"
    path.write_text(f"name: off-value\nengines:\n  e: {{kind: {kind}, repo: https://example.com/e.git}}\n"
                    f"models:\n  tiny: {{generate: tiny-llama}}\nargs: {{{arg}: 0, n_gen: 16}}\n"
                    "matrix:\n  ref: [{name: a, tag: v1}]\n")
    (cell,) = load_plan(str(path)).cells
    spec = cell.to_spec("r", "file:///tmp/s")
    argv = tools.invocation(spec, "/b/llama-bench", "/m.gguf", 1)
    assert getattr(spec.args, arg) is None and flag not in argv and argv[-2:] == ["-n", "16"]


# Registered names that are also another thing's word: a quoted one elsewhere is not the arg.
HOMONYMS = {
    "n_prompt": "a column of every llama-bench output row (parsers, records, reports)",
    "n_gen": "a column of every llama-bench output row (parsers, records, reports)",
    "threads": "the CPU's hardware threads (hardware specs, probes, volunteer profiles)",
}
SOURCES = [p for d in ("agent", "coordinator", "bench") for p in sorted((REPO / d).rglob("*.py"))]


def _quoted_in(word: str) -> list[str]:
    pattern = re.compile(r"""["']%s["']""" % re.escape(word))
    return [str(p.relative_to(REPO)) for p in SOURCES if pattern.search(p.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("name", [n for n in ARGS if n not in HOMONYMS])
def test_each_arg_is_named_in_at_most_two_source_files(name):
    files = _quoted_in(name)
    assert "agent/spec/registry.py" in files and len(files) <= 2, files


def _spellings() -> set[str]:
    out = set()
    for arg in ARGS.values():
        for spelling in arg.flags.values():
            out |= {spelling.flag} if isinstance(spelling, Valued) else set(spelling.on + spelling.off)
    return {s for s in out if s.startswith("-") and len(s) > 2}     # -c, -d, -t: every program's options


@pytest.mark.parametrize("flag", sorted(_spellings()))
def test_each_engine_flag_is_spelled_only_in_the_registry(flag):
    assert _quoted_in(flag) == ["agent/spec/registry.py"]

