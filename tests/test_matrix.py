"""Matrix files: GitHub-Actions expansion, one-line located errors, hardware matching."""
from __future__ import annotations

import re

import pytest

from coordinator.planning.hardware_match import matches
from agent.spec.registry import QUANTS_COMMON, QUANTS_IK_ONLY, QUANTS_MAINLINE_ONLY
from agent.spec.yaml_lines import MatrixError
from coordinator.matrix.expansion import expand_axes
from coordinator.matrix.loading import load_matrix
from agent.spec.yaml_lines import load_with_lines

VALID = """\
name: demo
description: two engines, one tiny model
engines:
  mainline:
    kind: llama.cpp
    repo: https://github.com/ggml-org/llama.cpp
    build:
      cmake:
        - -DGGML_NATIVE=ON
  ik:
    kind: ik_llama.cpp
    sdist: {package: ik-llama-cpp-python, versions: ["0.1.5"]}
models:
  tiny: {generate: tiny-llama, params: {n_layer: 2}}
tool: llama-bench
args: {n_prompt: 64, n_gen: 16}
repetitions: 3
hygiene: {drop_caches: prefer, warmup: 1, cooldown_s: 0, max_load: null}
timeout_s: 600
hardware:
  cpu:
    vendor: AMD
    uarch: [zen3, zen4]
    cores: ">=4"
  gpu:
    count: ">=0"
  ram_gb: ">=4"
  per: class
matrix:
  ref:
    - {name: main, engine: mainline, tag: b6000}
    - {name: ikb, engine: ik, ref: v0.1.5}
  quant: [Q8_0, Q4_0]
  threads: [1, 2]
  rtr: [false, true]
  exclude:
    - {ref: main, rtr: true}
compare:
  baseline: {ref: main}
  metrics: [pp_tps, tg_tps]
"""


def write(tmp_path, text: str, name: str = "m.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def edit(old: str, new: str, text: str = VALID) -> str:
    assert text.count(old) == 1, f"{old!r} must occur once in the base text"
    return text.replace(old, new)


def line_of(text: str, needle: str) -> int:
    """1-based line of the only line that contains ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, f"{needle!r} must be on exactly one line, found {hits}"
    return hits[0]


def load_error(tmp_path, text: str) -> tuple[str, MatrixError]:
    path = write(tmp_path, text)
    with pytest.raises(MatrixError) as info:
        load_matrix(path)
    return str(path), info.value


# ---------------------------------------------------------------- expansion semantics

def test_product_puts_the_first_axis_outermost():
    axes = {"a": [1, 2], "b": ["x", "y", "z"]}
    cells = expand_axes(axes, [], [])
    assert [(c["a"], c["b"]) for c in cells] == [(a, b) for a in axes["a"] for b in axes["b"]]


def test_exclude_matches_partially_and_drops_every_match():
    axes = {"a": [1, 2], "b": ["x", "y"], "c": [True, False]}
    cells = expand_axes(axes, [], [{"a": 1, "c": True}])
    assert all(not (c["a"] == 1 and c["c"] is True) for c in cells)
    assert len(cells) == 2 * 2 * 2 - 2


def test_exclude_key_that_is_not_an_axis_is_an_error():
    with pytest.raises(ValueError, match="'d'"):
        expand_axes({"a": [1]}, [], [{"d": 1}])


def test_include_extends_matching_cells_without_touching_original_values():
    cells = expand_axes({"a": [1, 2], "b": ["x", "y"]}, [{"a": 1, "extra": "e"}], [])
    assert len(cells) == 4
    for c in cells:
        if c["a"] == 1:
            assert c["extra"] == "e"
        else:
            assert "extra" not in c
    assert [(c["a"], c["b"]) for c in cells] == [(1, "x"), (1, "y"), (2, "x"), (2, "y")]


def test_include_conflicting_on_an_original_axis_becomes_a_new_cell():
    entry = {"a": 3, "b": "x"}
    cells = expand_axes({"a": [1, 2], "b": ["x"]}, [entry], [])
    assert cells[-1] == entry
    assert len(cells) == 3
    assert [c["a"] for c in cells[:2]] == [1, 2]


def test_later_include_may_overwrite_a_key_added_by_an_earlier_include():
    cells = expand_axes({"a": [1, 2]}, [{"colour": "green"}, {"a": 2, "colour": "pink"}], [])
    assert [c["colour"] for c in cells] == ["green", "pink"]
    assert len(cells) == 2


def test_include_never_merges_into_a_cell_that_an_include_appended():
    first, second = {"fruit": "banana"}, {"fruit": "banana", "animal": "cat"}
    cells = expand_axes({"fruit": ["apple"], "animal": ["dog"]}, [first, second], [])
    assert cells[1:] == [first, second]


def test_github_documented_example_expands_as_github_does():
    # The example from GitHub's "Expanding or adding matrix configurations" documentation.
    axes = {"fruit": ["apple", "pear"], "animal": ["cat", "dog"]}
    include = [{"color": "green"}, {"color": "pink", "animal": "cat"},
               {"fruit": "apple", "shape": "circle"}, {"fruit": "banana"},
               {"fruit": "banana", "animal": "cat"}]
    assert expand_axes(axes, include, []) == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_mapping_values_are_compared_whole():
    pair, other = {"b": 2048, "ub": 512}, {"b": 2048, "ub": 256}
    cells = expand_axes({"batch": [pair, other]}, [{"batch": dict(pair), "tag": "big"}], [{"batch": dict(other)}])
    assert cells == [{"batch": pair, "tag": "big"}]


def test_true_and_one_are_different_values():
    cells = expand_axes({"x": [1, True]}, [], [{"x": True}])
    assert cells == [{"x": 1}]


def test_only_includes_without_axes_each_become_a_cell():
    include = [{"a": 1}, {"b": 2}]
    assert expand_axes({}, include, []) == include


# ---------------------------------------------------------------- valid files

def test_valid_file_loads_and_expands_in_file_axis_order(tmp_path):
    m = load_matrix(write(tmp_path, VALID))
    cells = m.cells()
    refs, quants, threads = ["main", "ikb"], ["Q8_0", "Q4_0"], [1, 2]
    expected = [(r, q, t, x) for r in refs for q in quants for t in threads for x in (False, True)
                if not (r == "main" and x)]
    assert [(c["ref"], c["quant"], c["threads"], c["rtr"]) for c in cells] == expected
    assert {c["model"] for c in cells} == {"tiny"}  # the only model fills the absent axis


def test_axis_order_follows_the_file_not_the_schema(tmp_path):
    text = edit("  quant: [Q8_0, Q4_0]\n  threads: [1, 2]\n", "  threads: [1, 2]\n  quant: [Q8_0, Q4_0]\n")
    assert list(load_matrix(write(tmp_path, text)).matrix.axes())[:3] == ["ref", "threads", "quant"]


def test_refs_engines_and_sources_are_resolved(tmp_path):
    m = load_matrix(write(tmp_path, VALID))
    ikb = m.refs()["ikb"]
    assert (ikb.kind, ikb.value) == ("ref", "v0.1.5")
    name, engine = m.engine_of("ikb")
    assert name == "ik" and engine.source() == {"sdist": {"package": "ik-llama-cpp-python", "versions": ["0.1.5"]}}
    assert m.engines["mainline"].build.cmake == ["-DGGML_NATIVE=ON"]
    assert m.repetitions.min == m.repetitions.max == 3


@pytest.mark.parametrize("flags", [
    ["-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=86;89"],
    ["-DGGML_CUDA=OFF"],
    ["-DGGML_CUDA:BOOL=on", "-DCMAKE_CUDA_ARCHITECTURES=90"],
    ["-DCMAKE_CUDA_ARCHITECTURES=90a-real;120f"],
    ["-DCMAKE_CUDA_ARCHITECTURES=native"],
], ids=["on+two-archs", "off", "typed-bool", "suffixed-archs", "native"])
def test_cuda_build_flags_are_allowed(tmp_path, flags):
    listed = "".join(f"        - {flag}\n" for flag in flags)
    m = load_matrix(write(tmp_path, edit("        - -DGGML_NATIVE=ON\n", listed)))
    assert m.engines["mainline"].build.cmake == flags


def test_plain_string_ref_and_short_arg_names_are_accepted(tmp_path):
    text = """\
name: one
engines:
  e: {kind: llama.cpp, repo: /src/llama.cpp}
models:
  r1: {path: /models/x.gguf}
args: {b: 256, ub: 128}
matrix:
  ref: [v0.3.35, b6000]
  b: [{b: 2048, ub: 512}, 1024]
  quant: [q4_k_m]
"""
    m = load_matrix(write(tmp_path, text))
    assert m.refs()["v0.3.35"].ref == "v0.3.35"
    assert m.args.given() == {"batch": 256, "ubatch": 128}
    cells = m.cells()
    assert cells[0] == {"ref": "v0.3.35", "batch": {"b": 2048, "ub": 512}, "quant": "Q4_K_M", "model": "r1"}
    assert len(cells) == 4


def test_include_adds_ik_only_flags_to_ik_cells_only(tmp_path):
    text = edit("    - {ref: main, rtr: true}\n", "    - {ref: main, rtr: true}\n  include:\n    - {ref: ikb, fmoe: true}\n")
    cells = load_matrix(write(tmp_path, text)).cells()
    assert all(c.get("fmoe") is (True if c["ref"] == "ikb" else None) for c in cells)


@pytest.mark.parametrize("kind, only", [("llama.cpp", QUANTS_MAINLINE_ONLY), ("ik_llama.cpp", QUANTS_IK_ONLY)])
def test_every_listed_quant_type_loads_case_insensitively_on_its_engine(tmp_path, kind, only):
    quants = QUANTS_COMMON + only
    text = f"""\
name: q
engines:
  e: {{kind: {kind}, repo: /src/engine}}
models:
  m: {{path: /models/m.gguf}}
matrix:
  ref: [main]
  quant: [{", ".join(q.lower() for q in quants)}]
"""
    assert load_matrix(write(tmp_path, text)).matrix.axes()["quant"] == list(quants)


# ---------------------------------------------------------------- malformed files

# (id, old text, new text, needle on the offending line, key, message fragment)
BAD = [
    ("yaml_syntax", "  threads: [1, 2]\n", "  threads: [1, 2]]\n", "threads: [1, 2]]", None, "YAML syntax error"),
    ("duplicate_key", "timeout_s: 600\n", "timeout_s: 600\ntimeout_s: 900\n", "timeout_s: 900", "timeout_s",
     "duplicate key 'timeout_s'"),
    ("unknown_axis", "  threads: [1, 2]\n", "  threds: [1, 2]\n", "threds", "matrix.threds",
     "unknown axis 'threds'; did you mean 'threads'?"),
    ("unknown_arg", "args: {n_prompt: 64,", "args: {n_promt: 64,", "n_promt", "args.n_promt",
     "unknown arg 'n_promt'; did you mean 'n_prompt'?"),
    ("unknown_quant", "  quant: [Q8_0, Q4_0]\n", "  quant: [Q8_0, IQ3_XX]\n", "IQ3_XX", "matrix.quant[1]",
     "'IQ3_XX' is not a known quant type; did you mean 'IQ3_XXS'?"),
    ("bad_ref", "ref: v0.1.5}", "ref: v0..1}", "v0..1", "matrix.ref[1].ref", "not a valid git ref name"),
    ("bad_ref_leading_dash", "ref: v0.1.5}", "ref: -v1}", "-v1", "matrix.ref[1].ref", "starts with '-'"),
    ("bad_commit", "tag: b6000}", "commit: 12345zz}", "12345zz", "matrix.ref[0].commit", "not a commit id"),
    ("cmake_launcher", "        - -DGGML_NATIVE=ON\n", "        - -DCMAKE_C_COMPILER_LAUNCHER=x\n",
     "LAUNCHER", "engines.mainline.build.cmake[0]", "bad cmake flag"),
    ("cmake_shell_value", "        - -DGGML_NATIVE=ON\n", "        - \"-DGGML_CUDA=ON;rm -rf /\"\n",
     "rm -rf", "engines.mainline.build.cmake[0]", "bad cmake flag"),
    ("cmake_script_mode", "        - -DGGML_NATIVE=ON\n", "        - -P\n", "- -P", "engines.mainline.build.cmake[0]",
     "bad cmake flag"),
    ("cuda_arch_with_a_dot", "        - -DGGML_NATIVE=ON\n", "        - -DCMAKE_CUDA_ARCHITECTURES=8.6;90\n",
     "8.6;90", "engines.mainline.build.cmake[0]", "write compute capability 8.6 as 86"),
    ("cuda_arch_empty_entry", "        - -DGGML_NATIVE=ON\n", "        - -DCMAKE_CUDA_ARCHITECTURES=86;;90\n",
     "86;;90", "engines.mainline.build.cmake[0]", "'' is not a CUDA architecture"),
    ("cuda_not_a_bool", "        - -DGGML_NATIVE=ON\n", "        - -DGGML_CUDA=sm90\n",
     "sm90", "engines.mainline.build.cmake[0]", "GGML_CUDA is ON or OFF"),
    ("hardware_empty_range", 'cores: ">=4"', 'cores: ">=4,<2"', ">=4,<2", "hardware.cpu.cores", "admits no"),
    ("hardware_vendor_uarch_clash", "vendor: AMD", "vendor: Intel", "uarch: [zen3, zen4]", "hardware.cpu.uarch",
     "vendor is Intel"),
    ("hardware_gpu_name_without_gpus", '    count: ">=0"\n', '    count: 0\n    name: "*H100*"\n', "H100",
     "hardware.gpu.name", "admits none"),
    ("hardware_line_uarch_clash", "    uarch: [zen3, zen4]\n", "    uarch: [zen3, zen4]\n    line: xeon\n", "xeon",
     "hardware.cpu.line", "is Intel"),
    ("unknown_engine", "engine: ik,", "engine: ikk,", "ikk", "matrix.ref[1].engine",
     "engine 'ikk' is not defined under engines; did you mean 'ik'?"),
    ("baseline_ref_missing", "baseline: {ref: main}", "baseline: {ref: nosuch}", "nosuch", "compare.baseline.ref",
     "ref 'nosuch' is not defined"),
    ("exclude_key_not_axis", "    - {ref: main, rtr: true}\n", "    - {ref: main, fmoe: true}\n", "fmoe",
     "matrix.exclude[0].fmoe", "not an axis"),
    ("ik_only_flag_on_mainline", "    - {ref: main, rtr: true}\n", "    - {ref: main, threads: 1}\n", "rtr: [false, true]",
     "matrix.rtr[1]", "needs ik_llama.cpp"),
    ("ik_only_quant_on_mainline", "  quant: [Q8_0, Q4_0]\n", "  quant: [Q8_0, IQ4_K_R4]\n", "IQ4_K_R4",
     "matrix.quant[1]", "quant=IQ4_K_R4 needs ik_llama.cpp"),
    ("engine_with_two_sources", "    repo: https://github.com/ggml-org/llama.cpp\n",
     "    repo: https://github.com/ggml-org/llama.cpp\n    sdist: {package: llama-cpp-python, versions: ['0.3.35']}\n",
     "  mainline:", "engines.mainline", "exactly one of 'repo' or 'sdist'"),
    ("missing_required_key", "name: demo\n", "", None, None, "missing required key 'name'"),
    ("type_error_names_input", "  threads: [1, 2]\n", "  threads: [1, \"2\"]\n", "threads", "matrix.threads[1]",
     "got '2'"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_malformed_file_gives_one_line_error_naming_file_line_and_key(tmp_path, case):
    _, old, new, needle, key, fragment = case
    text = edit(old, new)
    path, err = load_error(tmp_path, text)
    message = str(err)
    assert "\n" not in message
    line = line_of(text, needle) if needle else 1
    prefix = f"{path}:{line}: " + (f"{key}: " if key else "")
    assert message.startswith(prefix), message
    assert fragment in message
    assert (err.file, err.line, err.key) == (path, line, key)


def test_duplicate_key_inside_a_nested_mapping_is_located(tmp_path):
    text = edit("    vendor: AMD\n", "    vendor: AMD\n    vendor: Intel\n")
    path, err = load_error(tmp_path, text)
    assert str(err).startswith(f"{path}:{line_of(text, 'vendor: Intel')}: hardware.cpu.vendor: duplicate key")


def test_file_that_is_not_a_mapping_or_not_utf8_gives_a_matrix_error(tmp_path):
    _, err = load_error(tmp_path, "- just\n- a list\n")
    assert "must be a mapping" in str(err)
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(MatrixError, match="not UTF-8"):
        load_matrix(bad)
    with pytest.raises(MatrixError, match="cannot read"):
        load_matrix(tmp_path / "missing.yaml")


def test_line_map_records_keys_and_list_items(tmp_path):
    data, lines = load_with_lines(write(tmp_path, VALID))
    assert data["matrix"]["quant"] == ["Q8_0", "Q4_0"]
    assert lines[("matrix", "quant", 1)] == line_of(VALID, "quant: [Q8_0, Q4_0]")
    assert lines[("engines", "mainline", "build", "cmake", 0)] == line_of(VALID, "-DGGML_NATIVE=ON")
    assert lines[("matrix", "ref", 1)] == line_of(VALID, "name: ikb")


# ---------------------------------------------------------------- hardware matching

def profile(uarch="zen4", vendor="AMD", cores=16, threads=32, gpus=(), ram_gb=128.0, flags=("avx2", "avx512f")):
    return {
        "hostname": "box",
        "cpu": {"brand": f"{vendor} Test CPU {cores}-Core", "vendor": vendor, "family": 25, "model": 97,
                "stepping": 2, "uarch": uarch, "line": "ryzen" if vendor == "AMD" else "core",
                "cores": cores, "threads": threads, "sockets": 1, "numa_nodes": 1, "caches": {},
                "flags": list(flags)},
        "memory": {"ram_gb": ram_gb},
        "gpus": {"count": len(gpus), "devices": [{"name": n, "vram_mb": mb} for n, mb in gpus], "error": None},
        "os": {}, "toolchain": {}, "hardware_class": "x",
    }


def test_empty_spec_matches_any_machine():
    assert matches({}, profile()) == (True, None)
    assert matches(None, profile()) == (True, None)


def test_uarch_mismatch_names_the_wanted_list_and_what_the_machine_has():
    ok, reason = matches({"cpu": {"uarch": ["zen2", "zen3", "zen4"]}}, profile(uarch="zen5"))
    assert not ok and reason == "needs cpu uarch in [zen2, zen3, zen4], has zen5"


def test_gpu_count_mismatch_says_how_many_the_machine_has():
    ok, reason = matches({"gpu": {"count": ">=2"}}, profile())
    assert not ok and reason == "needs gpu count >=2, has 0"
    assert matches({"gpu": {"count": ">=2,<=4"}}, profile(gpus=[("RTX 3090", 24576)] * 3)) == (True, None)


def test_gpu_name_and_vram_filter_which_gpus_count():
    box = profile(gpus=[("NVIDIA H100 80GB HBM3", 81559), ("NVIDIA GeForce RTX 3090", 24576)])
    assert matches({"gpu": {"name": "*h100*", "vram_gb": ">=80"}}, box) == (True, None)
    ok, reason = matches({"gpu": {"name": "*H100*", "count": 2}}, box)
    assert not ok and reason.startswith("needs gpu count 2 with name matching '*H100*', has 1")


def test_cpu_counts_flags_and_ram_are_checked():
    assert matches({"cpu": {"cores": ">=8", "threads": ">=16", "flags": ["AVX512F"]}, "ram_gb": ">=64"},
                   profile()) == (True, None)
    assert matches({"cpu": {"cores": ">=32"}}, profile(cores=16)) == (False, "needs cpu cores >=32, has 16")
    assert matches({"cpu": {"flags": ["avx512f", "amx"]}}, profile()) == (
        False, "needs cpu flags [avx512f, amx], lacks amx")
    assert matches({"ram_gb": ">=200"}, profile(ram_gb=128)) == (False, "needs ram_gb >=200, has 128")


def test_first_unmet_requirement_is_the_reason():
    spec = {"cpu": {"vendor": "Intel"}, "gpu": {"count": ">=1"}}
    assert matches(spec, profile()) == (False, "needs cpu vendor Intel, has AMD")


def test_unknown_profile_values_never_match():
    p = profile()
    p["cpu"]["uarch"] = None
    assert matches({"cpu": {"uarch": "zen4"}}, p) == (False, "needs cpu uarch zen4, has unknown")


def test_spec_loaded_from_a_matrix_file_matches_a_profile(tmp_path):
    spec = load_matrix(write(tmp_path, VALID)).hardware
    assert matches(spec, profile(uarch="zen4")) == (True, None)
    assert matches(spec, profile(cores=2)) == (False, "needs cpu cores >=4, has 2")


# ---------------------------------------------------------------- bounded cost (issue 11)

SMALL = """\
name: bounded
engines:
  mainline: {kind: llama.cpp, repo: https://github.com/ggml-org/llama.cpp}
models:
  tiny: {generate: tiny-llama}
matrix:
  ref: [{name: a, tag: v0.3.35}]
"""


def laughs(levels: int = 9, fan: int = 9) -> str:
    """A "billion laughs" description: each level lists the one before it ``fan`` times."""
    rows = [f'  l0: &l0 [{", ".join(["lol"] * fan)}]']
    rows += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]" for i in range(1, levels)]
    return SMALL + "description:\n" + "\n".join(rows) + "\n"


def merge_bomb(levels: int = 28) -> str:
    """Merge keys (<<) that each copy the level before twice: 2**levels keys once written out."""
    rows = ["  m0: &m0 {x0: 1, y0: 2}"]
    rows += [f"  m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], x{i}: 1}}" for i in range(1, levels + 1)]
    return SMALL + "description:\n" + "\n".join(rows) + "\n"


def axes(n_axes: int, size: int = 10) -> str:
    names = ["n_prompt", "n_gen", "depth", "threads", "batch", "ubatch", "ctx", "amb", "ngl"][:n_axes]
    return SMALL + "".join(f"  {n}: [{', '.join(str(v) for v in range(1, size + 1))}]\n" for n in names)


def refused_in_bounds(tmp_path, text: str, *extra: str, seconds: float = 30, peak_mb: float = 120) -> str:
    """`hwmatrix plan` of ``text``: exit 2 with one line naming this file, within time and memory."""
    from tests.bounded import run_cli_bounded

    path = write(tmp_path, text)
    result = run_cli_bounded("plan", str(path), *extra, seconds=seconds, mem_mb=2048)
    assert result.returncode == 2, (result.returncode, result.stderr[-500:])
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message and len(message) < 500, message[:1000]
    assert message.startswith(f"hwmatrix: {path}"), message
    assert result.peak_mb is not None and result.peak_mb < peak_mb, result.peak_mb
    return message


def test_a_billion_laughs_description_is_refused_at_its_alias_in_seconds_and_little_memory(tmp_path):
    # Before: 1 KB ran 110 s, then an allocation failure (rc 134); here it passed 670 MB in 25 s.
    assert len(laughs()) < 1100
    message = refused_in_bounds(tmp_path, laughs())
    assert re.search(r"m\.yaml:\d+: description\.l\d+\[\d+\]: alias \*l\d+ copies [\d,]+ nodes", message), message
    assert "billion laughs" in message


def test_a_merge_key_bomb_of_28_levels_is_refused_at_its_alias_in_seconds_and_little_memory(tmp_path):
    # Before: past 150 s and 3.2 GB.
    message = refused_in_bounds(tmp_path, merge_bomb(28))
    assert re.search(r"m\.yaml:\d+: description\.m\d+\.<<\[\d\]: alias \*m\d+ copies", message), message


def test_a_recursive_alias_is_refused_at_its_line():
    from agent.spec.yaml_lines import parse_with_lines

    with pytest.raises(MatrixError) as exc:
        parse_with_lines(SMALL + "description: &r [1, *r]\n", "m.yaml")
    assert str(exc.value).startswith("m.yaml:8: description[1]: alias *r is used inside the node it names")


def test_aliases_that_stay_small_still_load(tmp_path):
    text = SMALL.replace("matrix:", "args: &defaults {threads: 2}\nhygiene: {warmup: 1}\nmatrix:") + \
        "  include:\n    - {<<: *defaults, ref: a}\n"
    matrix = load_matrix(write(tmp_path, text))
    assert matrix.cells() == [{"ref": "a", "threads": 2, "model": "tiny"}]


@pytest.mark.parametrize("n_axes, count", [(6, "1,000,000"), (9, "1,000,000,000")])
def test_a_huge_matrix_is_counted_not_built_and_refused_with_its_cell_count(tmp_path, n_axes, count):
    # Before: 10^6 cells took 80 s and 2.1 GB; 10^9 ended in a MemoryError traceback.
    message = refused_in_bounds(tmp_path, axes(n_axes))
    assert f"m.yaml:6: matrix: the matrix expands to {count} cells (1 x 10 x" in message, message
    assert "--max-cells" in message


def test_max_cells_raises_the_cap_and_excluded_cells_do_not_count(tmp_path):
    from coordinator.matrix.vocabulary import MAX_CELLS

    text = axes(4, 10) + "  exclude:\n    - {n_prompt: 1}\n"                 # 10,000 less 1,000
    assert len(load_matrix(write(tmp_path, text)).cells()) == 9_000 <= MAX_CELLS
    with pytest.raises(MatrixError, match=r"m\.yaml:6: matrix: the matrix expands to 9,000 cells "
                                          r"\(1 x 10 x 10 x 10 x 10 less excluded\), more than the 8,999"):
        load_matrix(write(tmp_path, text), max_cells=8_999)
    assert len(load_matrix(write(tmp_path, axes(5)), max_cells=100_000).cells()) == 100_000


def test_cells_added_by_includes_count_too(tmp_path):
    text = axes(1, 3) + "  include:\n    - {ref: a, n_prompt: 7}\n    - {ref: a, n_prompt: 8}\n"
    assert len(load_matrix(write(tmp_path, text)).cells()) == 5
    with pytest.raises(MatrixError, match=r"matrix\.include: with its include entries the matrix expands to 5 cells"):
        load_matrix(write(tmp_path, text), max_cells=4)


def test_include_and_exclude_hold_at_most_a_thousand_entries_each(tmp_path):
    entries = "".join(f"    - {{n_prompt: {v}}}\n" for v in range(1, 1002))
    with pytest.raises(MatrixError, match=r"matrix\.include: holds 1,001 entries, at most 1,000 are allowed"):
        load_matrix(write(tmp_path, axes(1) + "  include:\n" + entries))


@pytest.mark.timeout(20)
def test_a_20000_value_axis_is_checked_for_duplicates_in_well_under_a_second(tmp_path):
    import time

    from coordinator.matrix.loading import validate_matrix
    from agent.spec.yaml_lines import load_with_lines

    # Before: 66 s, the duplicate checks being quadratic.
    values = list(range(1, 20_001)) + [1]
    data, lines = load_with_lines(write(tmp_path, SMALL + f"  n_prompt: {values}\n"))
    start = time.process_time()
    with pytest.raises(MatrixError, match=r"m\.yaml:8: matrix\.n_prompt\[20000\]: duplicate value 1 in axis"):
        validate_matrix(data, lines, "m.yaml", max_cells=100_000)
    data["matrix"]["n_prompt"].pop()
    assert len(validate_matrix(data, lines, "m.yaml", max_cells=100_000).cells()) == 20_000
    assert time.process_time() - start < 1.0


@pytest.mark.timeout(30)
def test_a_plan_of_5000_refs_looks_each_ref_up_once(tmp_path):
    import time

    from coordinator.planning.plan import load_plan

    # Before: 13 s of CPU (every cell rebuilt the name -> ref map); 0.8 s here, most of it YAML.
    refs = ", ".join(f"{{name: r{i}, tag: v{i}}}" for i in range(5000))
    path = write(tmp_path, SMALL.replace("ref: [{name: a, tag: v0.3.35}]", f"ref: [{refs}]"))
    start = time.process_time()
    assert len(load_plan(str(path)).cells) == 5000
    assert time.process_time() - start < 4.0


def test_a_matrix_file_over_256_KiB_is_refused_before_it_is_read(tmp_path):
    # Before: a 56 MB matrix ran past 500 s (58 MB of block text: 24 s, then accepted).
    text = SMALL.replace("matrix:", "description: |\n" + ("  " + "x" * 78 + "\n") * (56 << 14) + "matrix:")
    assert len(text) > 56 << 20
    message = refused_in_bounds(tmp_path, text, seconds=30, peak_mb=100)
    assert message.endswith("m.yaml: larger than 262,144 bytes, the most a matrix file may hold"), message


def test_a_huge_value_is_quoted_in_a_bounded_message(tmp_path):
    # Before: a 500 KB quant gave a 500 KB message.
    message = refused_in_bounds(tmp_path, SMALL + "  quant: [" + "Q" * 200_000 + "]\n")
    assert "m.yaml:8: matrix.quant[0]: 'QQQQ" in message and "...QQQ" in message and "quant type" in message


@pytest.mark.parametrize("where, text, key", [
    ("a tag", 'ref: [{name: a, tag: "v0.3.35\\u202e"}]', "matrix.ref[0].tag"),
    ("a branch", 'ref: [{name: a, branch: "\\u2066main\\u2069"}]', "matrix.ref[0].branch"),
    ("an escape in a cpu glob", 'ref: [{name: a, tag: v1}]\nhardware: {cpu: {model: "Ryzen\\e]0;pwned\\a"}}',
     "hardware.cpu.model"),
    ("an 8-bit CSI in a gpu name", 'ref: [{name: a, tag: v1}]\nhardware: {gpu: {name: "RTX\\x9b2J"}}',
     "hardware.gpu.name"),
    ("a key", 'ref: [{name: a, tag: v1}]\n"\\u202eq": 1', "['\\u202eq']"),
])
def test_a_control_or_bidi_character_is_refused_at_load_with_file_line_and_key(tmp_path, where, text, key):
    # Before: the bidi tag reached `plan` output raw; C0/C1 escapes passed the one-line checks.
    path = write(tmp_path, SMALL.replace("ref: [{name: a, tag: v0.3.35}]", text))
    with pytest.raises(MatrixError) as exc:
        load_matrix(path)
    message = str(exc.value)
    assert message.startswith(f"{path}:") and f": {key}: holds the control character U+" in message, message
    assert not any(ch in message for ch in "\u202e\u2066\u2069\x1b\x9b\x07")


def _random_excludes(n: int, seed: int) -> str:
    import random

    rnd = random.Random(seed)
    names = ["n_prompt", "n_gen", "depth", "threads", "batch", "ubatch", "ctx", "amb", "ngl"]
    entries = [dict(zip(rnd.sample(names, 2), (rnd.randint(1, 10), rnd.randint(1, 10)))) for _ in range(n)]
    return "  exclude:\n" + "".join(f"    - {{{', '.join(f'{k}: {v}' for k, v in e.items())}}}\n" for e in entries)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("n_excludes, message", [
    (300, r"matrix: the matrix expands to more than 10,000 cells \(1 x 10 x 10 x 10 x 10 x 10 x 10 x 10 x 10 x 10 "
          r"less excluded\)"),
    (1000, r"matrix\.exclude: the 1000 exclude entries overlap too much to count the cells they leave"),
])
def test_excludes_too_intricate_to_count_exactly_are_refused_in_bounded_time(tmp_path, n_excludes, message):
    import time

    start = time.process_time()
    with pytest.raises(MatrixError, match=message):
        load_matrix(write(tmp_path, axes(9) + _random_excludes(n_excludes, seed=1)))
    assert time.process_time() - start < 15
