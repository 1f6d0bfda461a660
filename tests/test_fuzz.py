"""Fuzzing what hwmatrix reads from others: matrix files, specs, posted results, tool output.

Properties: bad input raises only the documented error (MatrixError, ValidationError,
ParseError, ImportFailed; the posted-text scanner raises nothing at all), never another
exception; whatever a check accepts fits its grammar; and no shell or process is ever
reached (an autouse fixture makes every way to start one record and raise).
Derandomized, so CI sees the same inputs every time.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import pty
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.spec import flags
from agent.spec.cellspec import CellSpec
from agent.parsers import (ParseError, parse_llama_bench_csv, parse_llama_bench_json, parse_llama_bench_jsonl,
                           parse_llama_bench_markdown, parse_llama_bench_sql, parse_posted_text, parse_sweep_bench)
from coordinator.errors import UserError
from coordinator.results.importers import ImportFailed, import_text
from agent.spec.yaml_lines import MatrixError
from coordinator.matrix.loading import validate_matrix
from coordinator.matrix.vocabulary import ENGINE_KINDS, KNOWN_QUANTS
from agent.spec.yaml_lines import parse_with_lines
from tests.conftest import REPO
from tests.test_parsers import SAMPLES
from tests.test_untrusted_matrix import BASE

FUZZ = dict(derandomize=True, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                   HealthCheck.data_too_large, HealthCheck.filter_too_much])


# ---------------------------------------------------------------- no process, ever

_SPAWNERS = [(subprocess, "Popen"), (os, "system"), (os, "popen"), (os, "fork"), (os, "forkpty"),
             (os, "posix_spawn"), (os, "posix_spawnp"), (pty, "spawn"), (pty, "fork")]
_SPAWNERS += [(os, n) for n in dir(os) if n.startswith(("exec", "spawn"))]


@pytest.fixture(autouse=True)
def no_process(monkeypatch):
    """Every way to start a process records the attempt and raises; the test fails if any was tried."""
    calls = []

    def refuse(name):
        def spawn(*args, **kwargs):
            calls.append((name, args[:2]))
            raise AssertionError(f"{name} was called: {args[:2]}")
        return spawn

    for module, name in _SPAWNERS:
        if hasattr(module, name):
            monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}"))
    yield calls
    assert calls == [], f"a process was started: {calls}"


def test_the_guard_catches_a_process_start(no_process):
    with pytest.raises(AssertionError):
        subprocess.run(["true"])
    with pytest.raises(AssertionError):
        os.system("true")
    assert [name for name, _ in no_process] == ["subprocess.Popen", "os.system"]
    no_process.clear()


# ---------------------------------------------------------------- adversarial material

SHELL_META = set("$`|&<>(){}[]*?!~'\"\\ \t\n\r\0#")
NASTY = [
    "", " ", "-", "--", "..", ".", "/", "../../etc/passwd", "a/../b", "-rf", "--upload-pack=touch /tmp/pwned",
    "$(touch /tmp/pwned)", "`id`", "; rm -rf /", "a\nb", "a\rb", "a\0b", "\x7f", "ext::sh -c id", "-oProxyCommand=id",
    "x" * 5000, "é", "٨٦", "Q4_0; rm -rf /", "v1..v2", "@{u}", "HEAD", "refs/heads/../x", "nan", "1e999",
    "-DCMAKE_C_COMPILER_LAUNCHER=sh", "-C/tmp/x", "%s%n", "{{x}}", "*", "~root", "C:\\x", "file:///etc/passwd",
]
NASTY_VALUES = st.one_of(
    st.sampled_from(NASTY), st.text(max_size=30), st.integers(), st.integers(min_value=-2, max_value=5),
    st.sampled_from([10 ** 30, -10 ** 30, 2 ** 63]), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.none(), st.sampled_from(list(KNOWN_QUANTS[:5]) + list(ENGINE_KINDS)),
    st.lists(st.sampled_from(NASTY), max_size=3), st.dictionaries(st.sampled_from(NASTY), st.integers(), max_size=2),
)


def _sample_texts() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(SAMPLES.glob("[0-9]*"))]


def _matrix_texts() -> list[str]:
    return [BASE] + [p.read_text(encoding="utf-8") for p in sorted((REPO / "matrices").glob("*.yaml"))]


SAMPLE_TEXTS = _sample_texts()
MATRIX_TEXTS = _matrix_texts()
PIECES = st.one_of(st.sampled_from(NASTY), st.text(max_size=20),
                   st.sampled_from(["|", "| --- |", "\n", "[", "]", "{", "}", ",", ":", "\"", "INSERT INTO", ";",
                                    "CREATE TABLE", "t/s", "| PP | TG | N_KV |", "build_commit,", "-1", "1e308",
                                    "NaN", "null", "  - ", "&a", "*a", "<<: *a", "!!python/object:os.system", "\t"]))


@st.composite
def mutated(draw, texts: list[str]) -> str:
    """A real text with a few random cuts, insertions, swaps and duplications."""
    text = draw(st.sampled_from(texts))
    for _ in range(draw(st.integers(1, 6))):
        n = len(text)
        i = draw(st.integers(0, n))
        op = draw(st.sampled_from(["cut", "insert", "replace", "truncate", "dup_line", "swap_number"]))
        if op == "cut":
            text = text[:i] + text[i + draw(st.integers(1, 200)):]
        elif op == "insert":
            text = text[:i] + draw(PIECES) + text[i:]
        elif op == "replace" and n:
            text = text[:i] + draw(PIECES) + text[i + 1:]
        elif op == "truncate":
            text = text[:i]
        elif op == "dup_line":
            lines = text.split("\n")
            j = draw(st.integers(0, len(lines) - 1))
            lines.insert(j, lines[j])
            text = "\n".join(lines)
        elif op == "swap_number":
            numbers = list(re.finditer(r"\d+(\.\d+)?", text))
            if numbers:
                m = numbers[draw(st.integers(0, len(numbers) - 1))]
                new = draw(st.sampled_from(["-1", "0", "1e999", "nan", "99999999999999999999999", "x", "", "1.5.6"]))
                text = text[:m.start()] + new + text[m.end():]
    return text


# ---------------------------------------------------------------- agent.spec.flags checks

def _problem_or_none(result) -> None:
    assert result is None or (isinstance(result, str) and result.strip())


CMAKE_ACCEPTED = re.compile(
    r"-D(CMAKE_BUILD_TYPE|CMAKE_CUDA_ARCHITECTURES|BUILD_SHARED_LIBS|GGML_[A-Za-z0-9_]*|LLAMA_[A-Za-z0-9_]*)"
    r"(:(?i:BOOL|STRING|PATH|FILEPATH|INTERNAL|UNINITIALIZED))?=[A-Za-z0-9_.,;=+-]*")
CMAKE_FLAGS = st.one_of(
    st.text(max_size=40),
    st.builds(lambda name, typ, value: f"-D{name}{typ}={value}",
              st.one_of(st.sampled_from(["GGML_CUDA", "GGML_NATIVE", "LLAMA_CURL", "CMAKE_BUILD_TYPE",
                                         "CMAKE_CUDA_ARCHITECTURES", "BUILD_SHARED_LIBS", "CMAKE_C_COMPILER_LAUNCHER",
                                         "CMAKE_TOOLCHAIN_FILE", "CMAKE_PROJECT_INCLUDE", "GGML_", "ggml_x"]),
                        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)),
              st.sampled_from(["", ":BOOL", ":string", ":FILEPATH", ":EVIL", ":"]),
              st.one_of(st.sampled_from(NASTY + ["ON", "86;90a", "86-real;120f", "native", "all-major", "8.6", "-1",
                                                 "ON;-DCMAKE_C_COMPILER_LAUNCHER=ccache", "a..b", "1;;2"]),
                        st.text(alphabet="ON0123456789;.-_=+,af$()/ \n", max_size=16))),
)


@settings(max_examples=1500, **FUZZ)
@given(CMAKE_FLAGS)
def test_an_accepted_cmake_flag_fits_the_allowlist_and_holds_nothing_a_shell_or_cmake_would_act_on(flag):
    problem = flags.cmake_flag_problem(flag)
    _problem_or_none(problem)
    if problem is None:
        assert CMAKE_ACCEPTED.fullmatch(flag), flag
        value = flag.split("=", 1)[1]
        assert not (set(flag) & SHELL_META) and ".." not in value
        assert all(not item.startswith("-") or re.fullmatch(r"-[0-9.]+", item) for item in value.split(";"))
    else:
        assert flag[:30].strip() == "" or repr(flag)[:20] in problem or "bad cmake flag" in problem


@settings(max_examples=1000, **FUZZ)
@given(st.one_of(st.text(max_size=40), st.sampled_from(NASTY),
                 st.lists(st.sampled_from(["a", "b", "..", ".", "", "-x", "x.lock", "@{", "~", ":", " ", "é"]),
                          min_size=1, max_size=4).map("/".join)))
def test_accepted_names_paths_and_refs_hold_no_way_up_no_option_and_no_control_character(text):
    control = any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
    for check in (flags.name_problem, flags.path_problem, flags.git_ref_problem, flags.repo_problem,
                  flags.version_problem, flags.ref_name_problem, flags.commit_problem, flags.pr_problem):
        _problem_or_none(check(text))
    if flags.name_problem(text) is None:
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", text) and text not in (".", "..")
    if flags.path_problem(text) is None:
        assert text and not control and not text.startswith("-") and ".." not in re.split(r"[/\\]", text)
    if flags.git_ref_problem(text) is None:
        assert text and not control and not text.startswith("-") and ".." not in text
        assert not set(text) & set(" ~^:?*[\\")
    if flags.repo_problem(text) is None:
        assert text and not control and not text.startswith("-")
        # git reads '<transport>::<address>' (ext::, fd::) when '::' follows the leading scheme-like run
        lead = re.match(r"[A-Za-z0-9+.-]*", text).group(0)
        assert not text[len(lead):].startswith("::")
        if "://" in text:
            assert text.split("://", 1)[0].lower() in flags.REPO_SCHEMES
    if flags.commit_problem(text) is None:
        assert re.fullmatch(r"[0-9a-fA-F]{7,40}", text)
    if flags.pr_problem(text) is None:
        assert re.fullmatch(r"[0-9]{1,9}", text) and int(text) >= 1
    if flags.version_problem(text) is None:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+!_-]*", text) and ".." not in text


# ---------------------------------------------------------------- the matrix loader

def _validate_text(text: str):
    data, lines = parse_with_lines(text, "fuzz.yaml")
    return validate_matrix(data, lines, "fuzz.yaml")


def _only_matrix_errors(load):
    try:
        return load()
    except MatrixError as exc:
        assert str(exc).startswith("fuzz.yaml") and "\n" not in str(exc)
        return None


@settings(max_examples=1500, **FUZZ)
@given(st.one_of(mutated(MATRIX_TEXTS), st.text(max_size=200),
                 st.lists(PIECES, max_size=12).map("".join)))
def test_matrix_text_loads_or_raises_one_line_matrix_error_only(text):
    _only_matrix_errors(lambda: _validate_text(text))


BASE_DATA = yaml.safe_load(BASE)
SCHEMA_KEYS = ["name", "engines", "models", "matrix", "args", "tool", "repetitions", "hygiene", "hardware", "compare",
               "kind", "repo", "sdist", "build", "cmake", "package", "versions", "generate", "path", "params", "sha256",
               "ref", "tag", "branch", "commit", "pr", "engine", "quant", "threads", "batch", "b", "ub", "ot", "ts",
               "include", "exclude", "baseline", "metrics", "cpu", "gpu", "count", "vram_gb", "uarch", "min", "max",
               "timeout_s", "per", "extra_args", "gpus", "n_layer", "n_vocab", "drop_caches", "warmup"]


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (i,))


def _mutate(draw, data, rounds: int) -> None:
    """1 to ``rounds`` times: a value at a random path replaced by a nasty one, removed, or
    given an extra key."""
    for _ in range(draw(st.integers(1, rounds))):
        path = draw(st.sampled_from([p for p in _paths(data) if p]))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        op = draw(st.sampled_from(["set", "set", "drop", "add_key"]))
        if op == "set":
            parent[path[-1]] = draw(NASTY_VALUES)
        elif op == "drop":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.sampled_from(SCHEMA_KEYS + NASTY))] = draw(NASTY_VALUES)


@st.composite
def mutated_matrix_data(draw):
    """The base matrix as data, with values at random paths replaced, removed or given extra keys."""
    data = json.loads(json.dumps(BASE_DATA))
    _mutate(draw, data, rounds=4)
    return data


SCHEMA_DATA = st.recursive(
    NASTY_VALUES, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                          st.dictionaries(st.sampled_from(SCHEMA_KEYS), inner, max_size=4)),
    max_leaves=12)


@settings(max_examples=1200, **FUZZ)
@given(st.one_of(mutated_matrix_data(), SCHEMA_DATA,
                 st.dictionaries(st.sampled_from(SCHEMA_KEYS), SCHEMA_DATA, max_size=6)))
def test_matrix_data_validates_or_raises_matrix_error_and_what_passes_the_matrix_passes_the_agent(data):
    matrix = _only_matrix_errors(lambda: validate_matrix(data, {}, "fuzz.yaml"))
    if matrix is not None:
        _specs_pass_the_agent(data)


def _specs_pass_the_agent(data) -> None:
    """A matrix the coordinator accepts gives specs every agent accepts (else a run would fail late)."""
    from coordinator.planning.plan import load_plan

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(data, f)
    try:
        try:
            plan = load_plan(f.name)
        except UserError:
            return          # YAML could not carry it back unchanged (e.g. a float key); not our question
        for cell in plan.cells[:20]:
            spec = cell.to_spec(plan.default_run_id + "-20250101T000000", "file:///tmp/store")
            CellSpec.model_validate_json(spec.model_dump_json())
    finally:
        os.unlink(f.name)


# ---------------------------------------------------------------- the agent's spec

def _real_specs() -> list[dict]:
    from coordinator.planning.plan import load_plan

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate([BASE, BASE.replace("repo: https://github.com/ggml-org/llama.cpp",
                                                     "sdist: {package: llama-cpp-python, versions: ['0.3.35']}")]):
            path = Path(tmp) / f"m{i}.yaml"
            path.write_text(text)
            plan = load_plan(str(path))
            out += [json.loads(c.to_spec(plan.default_run_id, "file:///tmp/store").model_dump_json())
                    for c in plan.cells]
    return out


REAL_SPECS = _real_specs()


@st.composite
def mutated_spec_json(draw) -> str:
    spec = json.loads(json.dumps(draw(st.sampled_from(REAL_SPECS))))
    _mutate(draw, spec, rounds=3)
    text = json.dumps(spec, allow_nan=True)
    if draw(st.booleans()):
        text = draw(mutated([text]))
    return text


@settings(max_examples=1500, **FUZZ)
@given(mutated_spec_json())
def test_a_mutated_spec_is_refused_with_validation_error_or_accepted_only_with_safe_values(text):
    from agent.engine.tools import ArgError, invocation

    try:
        spec = CellSpec.model_validate_json(text)
    except ValidationError:
        return
    for flag in spec.engine.cmake:
        assert flags.cmake_flag_problem(flag) is None
    assert spec.engine.repo is None or flags.repo_problem(spec.engine.repo) is None
    assert spec.model.path is None or flags.path_problem(spec.model.path) is None
    assert flags.ref_value_problem(spec.ref.kind, spec.ref.value) is None
    for name in (spec.run_id, spec.cell_id, spec.matrix_name, spec.model.name, spec.engine.name):
        assert flags.name_problem(name) is None
    try:
        argv = invocation(spec, "/bin/llama-bench", "/m.gguf", 1)
    except ArgError:
        return
    assert all(isinstance(a, str) and "\n" not in a and "\0" not in a for a in argv)
    assert all(not math.isnan(x) for x in [spec.timeout_s])


# ---------------------------------------------------------------- parsers and importers

PARSERS = [parse_llama_bench_csv, parse_llama_bench_json, parse_llama_bench_jsonl, parse_llama_bench_markdown,
           parse_llama_bench_sql, parse_sweep_bench]
TOOL_TEXT = st.one_of(mutated(SAMPLE_TEXTS), mutated(SAMPLE_TEXTS), st.text(max_size=300),
                      st.lists(PIECES, max_size=20).map("".join))


@settings(max_examples=1500, **FUZZ)
@given(TOOL_TEXT)
def test_each_parser_returns_or_raises_parse_error_only_and_the_posted_text_scanner_never_raises(text):
    for parse in PARSERS:
        try:
            parse(text)
        except ParseError:
            pass
    outputs = parse_posted_text(text)
    assert all(out.bench_rows or out.sweep_rows for out in outputs)


@settings(max_examples=1500, **FUZZ)
@given(TOOL_TEXT, st.sampled_from(["Ryzen 9 + 4090", " ", "x" * 300, "a/../b", "$(id)"]))
def test_import_returns_records_or_raises_import_failed_only(text, label):
    try:
        records = import_text(text, label, source="fuzz.md")
    except ImportFailed as exc:
        assert "\n" not in str(exc)
        return
    assert records and all(json.dumps(r, allow_nan=True) for r in records)


# ---------------------------------------------------------------- bounds: alias bombs, huge axes, huge imports

@st.composite
def alias_bomb(draw) -> tuple[str, int]:
    """(a matrix whose extra section is an alias bomb, how many nodes it holds written out)."""
    levels, fan = draw(st.integers(1, 30)), draw(st.integers(2, 9))
    kind = draw(st.sampled_from(["list", "map", "merge"]))
    if kind == "list":
        rows, size = [f"l0: &l0 [{', '.join(['lol'] * fan)}]"], 1 + fan
        for i in range(1, levels):
            rows.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]")
            size = 1 + fan * size
    elif kind == "map":
        rows, size = ["l0: &l0 {a: lol}"], 3
        for i in range(1, levels):
            rows.append(f"l{i}: &l{i} {{{', '.join(f'k{j}: *l{i - 1}' for j in range(fan))}}}")
            size = 1 + fan * (1 + size)
    else:
        rows, size = ["l0: &l0 {x0: 1}"], 3
        for i in range(1, levels):
            rows.append(f"l{i}: &l{i} {{<<: [{', '.join([f'*l{i - 1}'] * fan)}], x{i}: 1}}")
            size = 1 + (1 + (1 + fan * size)) + 2
    where = draw(st.sampled_from(["description", "args", "hardware", "bomb"]))
    block = "".join(f"  {r}\n" for r in rows)
    text = BASE + f"{where}:\n{block}" if where not in BASE else BASE.replace(f"{where}:\n", f"{where}:\n{block}", 1)
    return text, size


@settings(max_examples=80, **FUZZ)
@given(alias_bomb())
def test_an_alias_bomb_is_refused_at_an_alias_in_bounded_time_or_is_small_enough_to_load(bomb):
    from agent.spec.yaml_lines import NODES_MAX

    text, written_out = bomb
    start = time.process_time()
    try:
        _validate_text(text)
        message = None
    except MatrixError as exc:
        message = str(exc)
        assert message.startswith("fuzz.yaml:") and "\n" not in message and len(message) <= 300
    assert time.process_time() - start < 3
    if written_out > NODES_MAX + 100:
        assert message and re.search(r"^fuzz\.yaml:\d+: [^ ]+: alias \*l\d+ copies [\d,]+ nodes", message), message


def _brute_force(axes: dict, include: list[dict], exclude: list[dict]) -> list[dict]:
    """GitHub's expansion done the obvious way (the product, built whole), to check the real one."""
    from coordinator.matrix.expansion import same as _same

    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())] if axes else []
    combos = [c for c in combos if not any(all(_same(c[k], v) for k, v in e.items()) for e in exclude)]
    originals = len(combos)
    for entry in include:
        hits = [c for c in combos[:originals] if all(_same(c[k], v) for k, v in entry.items() if k in axes)]
        for c in hits:
            c.update(entry)
        if not hits:
            combos.append(dict(entry))
    return combos


AXES = ["n_prompt", "n_gen", "depth", "threads", "ubatch", "ctx", "batch", "nrep", "ngl"]


@st.composite
def huge_axes(draw) -> tuple[dict, int]:
    """(matrix data with up to 9 more axes of up to 60 values, excludes and includes; a --max-cells)."""
    data = json.loads(json.dumps(BASE_DATA))
    names = draw(st.lists(st.sampled_from(AXES), min_size=1, max_size=9, unique=True))
    for name in names:
        data["matrix"][name] = list(range(1, draw(st.integers(1, 60)) + 1))

    def entry():
        keys = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        return {k: draw(st.sampled_from(data["matrix"][k] + [999])) for k in keys}

    data["matrix"]["exclude"] = [entry() for _ in range(draw(st.integers(0, 12)))]
    data["matrix"]["include"] = [{"ref": "a", **entry(), "mmap": True} for _ in range(draw(st.integers(0, 3)))]
    return data, draw(st.sampled_from([1, 10, 1_000, 10_000]))


@settings(max_examples=80, **FUZZ)
@given(huge_axes())
def test_huge_axes_are_counted_before_expansion_refused_with_the_count_or_expanded_as_github_does(case):
    from coordinator.matrix.expansion import count_cells

    data, max_cells = case
    m = data["matrix"]
    axes = {k: ([r["name"] for r in v] if k == "ref" else v) for k, v in m.items() if k not in ("exclude", "include")}
    start = time.process_time()
    survivors = count_cells(axes, m["exclude"])
    try:
        matrix = validate_matrix(data, {}, "fuzz.yaml", max_cells=max_cells)
    except MatrixError as exc:
        message = str(exc)
        assert message.startswith("fuzz.yaml") and "\n" not in message
        if survivors > max_cells:
            assert f"expands to {survivors:,} cells" in message, message
        matrix = None
    assert time.process_time() - start < 5
    if math.prod(len(v) for v in axes.values()) <= 5_000:
        expected = [{**c, "model": "tiny"} for c in _brute_force(axes, m["include"], m["exclude"])]
        assert survivors == len(_brute_force(axes, [], m["exclude"]))
        if matrix is not None:
            assert matrix.cells() == expected and len(expected) <= max_cells


@st.composite
def huge_import(draw) -> tuple[str, int, int]:
    """(a real posted text, how often it is pasted, how many distinct rows follow the copies)."""
    text = draw(st.sampled_from(SAMPLE_TEXTS))
    return text, draw(st.integers(1, max(1, (256 << 10) // len(text)))), draw(st.integers(0, 300))


@settings(max_examples=12, **FUZZ)
@given(huge_import())
def test_a_huge_paste_imports_each_distinct_row_once_in_bounded_time_and_counts_the_repeats(case):
    from coordinator.results.importers import IMPORT_MAX_BYTES, convert_text

    text, copies, extra = case
    rows = "".join(f"| m | pp{n} | {n}.00 ± 0.10 |\n" for n in range(1, extra + 1))
    paste = "\n\n".join([text] * copies) + ("\n\n| model | test | t/s |\n|---|---|---|\n" + rows if extra else "")
    one = convert_text(text, "box")
    start = time.process_time()
    converted = convert_text(paste, "box")
    assert time.process_time() - start < 5
    assert len(converted.records) == len(one.records) + extra
    assert len(converted.records) + converted.duplicates == copies * (len(one.records) + one.duplicates) + extra
    assert len({r["cell_id"] for r in converted.records}) == len(converted.records)
    with pytest.raises(ImportFailed, match="more than the 4,194,304 one import may hold"):
        convert_text(text * (IMPORT_MAX_BYTES // len(text) + 1), "box")
