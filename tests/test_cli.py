"""The CLI as a user meets it: one-line errors with exit 2, plans, refusals, faulty cells."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import REPO, hwmatrix
from tests.fake_engine import make_fake_engine_repo

GOOD = """name: t
engines:
  mainline: {kind: llama.cpp, sdist: {package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}
models:
  tiny: {generate: tiny-llama}
matrix:
  ref: [{name: a, tag: v0.3.35}]
  quant: [Q8_0]
"""


@pytest.mark.parametrize("broken, key", [
    (GOOD.replace("quant: [Q8_0]", "quant: [IQ3_XX]"), "quant"),
    (GOOD.replace("quant: [Q8_0]", "quant: [Q8_0]\n  colour: [red]"), "colour"),
    (GOOD.replace("tag: v0.3.35", "tag: 'v0..35'"), "tag"),
    (GOOD.replace("kind: llama.cpp,", "kind: llama.cpp, build: {cmake: [-DCMAKE_C_COMPILER_LAUNCHER=sh]},"), "cmake"),
    (GOOD.replace("matrix:", "hardware: {gpu: {count: '>=4,<2'}}\nmatrix:"), "count"),
    (GOOD.replace("quant: [Q8_0]", "quant: [Q8_0"), None),
])
def test_plan_of_a_malformed_matrix_exits_2_with_one_line_naming_file_line_and_key(tmp_path, broken, key):
    path = tmp_path / "bad.yaml"
    path.write_text(broken)
    result = hwmatrix("plan", str(path))
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert re.search(re.escape(str(path)) + r":\d+: ", message), message
    if key:
        assert key in message


def test_plan_of_a_missing_file_is_a_one_line_error(tmp_path):
    result = hwmatrix("plan", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_plan_exits_0_and_explains_why_this_machine_does_not_match_the_518_reproduction():
    result = hwmatrix("plan", str(REPO / "matrices" / "ik-518-reproduction.yaml"))
    assert result.returncode == 0, result.stderr
    assert "matches 0 of 24 cells" in result.stdout
    assert "no: needs" in result.stdout


def test_run_refuses_cells_no_agent_matches_with_exit_2_and_the_listing(tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text(GOOD.replace("matrix:", "hardware: {gpu: {count: '>=2'}}\nmatrix:"))
    result = hwmatrix("run", str(path), "--store", (tmp_path / "store").as_uri(),
                      env={"HWMATRIX_PROFILE": ""})
    assert result.returncode == 2
    assert "needs gpu count" in result.stderr and "--skip-unmatched" in result.stderr
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.json"))


@pytest.mark.parametrize("fmt, load", [("json", json.loads), ("yaml", yaml.safe_load)])
def test_probe_prints_the_profile_in_each_format(fmt, load):
    result = hwmatrix("probe", "--format", fmt)
    assert result.returncode == 0
    profile = load(result.stdout)
    assert profile["cpu"]["threads"] >= 1 and profile["hardware_class"]
    assert profile["gpus"]["count"] == 0 or profile["gpus"]["devices"]


def test_probe_with_a_broken_override_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "profile.yaml"
    bad.write_text("cpu: [not, a, mapping")
    result = hwmatrix("probe", env={"HWMATRIX_PROFILE": str(bad)})
    assert result.returncode == 2 and "Traceback" not in result.stderr and str(bad) in result.stderr


@pytest.mark.engines
def test_failing_cells_become_records_and_the_rest_of_the_sweep_goes_on(tmp_path):
    fake = make_fake_engine_repo(tmp_path / "fake")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    matrix = tmp_path / "faults.yaml"
    matrix.write_text(f"""name: faults
engines:
  fake: {{kind: llama.cpp, repo: {fake}}}
  mainline: {{kind: llama.cpp, sdist: {{package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}}}
models:
  tiny: {{generate: tiny-llama}}
  junk: {{path: {model}}}
args: {{n_prompt: 16, n_gen: 4}}
repetitions: {{min: 2, max: 2, min_process_s: 0}}
hygiene: {{drop_caches: off}}
timeout_s: 5
matrix:
  ref:
    - {{name: hang, engine: fake, branch: hang}}
    - {{name: crash, engine: fake, branch: crash}}
    - {{name: garbage, engine: fake, branch: garbage}}
    - {{name: broken, engine: fake, branch: broken}}
    - {{name: real, engine: mainline, tag: v0.3.36}}
  model: [junk, tiny]
  exclude: [{{ref: real, model: junk}}, {{ref: hang, model: tiny}}, {{ref: crash, model: tiny}},
            {{ref: garbage, model: tiny}}, {{ref: broken, model: tiny}}]
""")
    store = tmp_path / "store"
    result = hwmatrix("run", str(matrix), "--store", store.as_uri(), env={"HWMATRIX_SPOOL": str(tmp_path / "sp")})
    assert result.returncode == 1, result.stderr[-2000:]
    statuses = {}
    for path in store.glob("runs/*/results/*/*.json"):
        rec = json.loads(path.read_text())
        statuses[rec["params"]["ref"]] = rec["status"]
        assert rec["logs"], rec["params"]
    assert statuses == {"hang": "timeout", "crash": "run_failed", "garbage": "parse_error",
                        "broken": "build_failed", "real": "ok"}
    for status in ("timeout", "run_failed", "parse_error", "build_failed"):
        assert status in result.stdout


def test_skip_unmatched_runs_nothing_it_cannot_place_and_says_so_in_the_table(tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text(GOOD.replace("matrix:", "hardware: {gpu: {count: '>=2'}}\nmatrix:"))
    result = hwmatrix("run", str(path), "--store", (tmp_path / "store").as_uri(), "--skip-unmatched")
    assert "skipped: no agent matches" in result.stdout
    assert result.returncode == 1          # nothing was measured
    assert not list((tmp_path / "store").rglob("results/*/*.json"))


# ---------------------------------------------------------------- bounds (issue 11)

@pytest.mark.parametrize("command", ["plan", "run"])
def test_max_cells_refuses_a_matrix_with_more_cells_and_says_how_many(tmp_path, command):
    path = tmp_path / "two.yaml"
    path.write_text(GOOD.replace("quant: [Q8_0]", "quant: [Q8_0, Q4_0]"))
    store = ["--store", (tmp_path / "store").as_uri()] if command == "run" else []
    result = hwmatrix(command, str(path), "--max-cells", "1", *store)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"hwmatrix: {path}:6: matrix: the matrix expands to 2 cells (1 x 2), more than "
                                     "the 1 --max-cells allows; exclude some, or raise --max-cells")
    assert not (tmp_path / "store").exists()
    if command == "plan":
        assert hwmatrix("plan", str(path), "--max-cells", "2").returncode == 0


def test_volunteers_queue_takes_max_cells_like_plan_and_run(tmp_path):
    # Before: `volunteers queue` planned with the default cap and had no --max-cells.
    path = tmp_path / "two.yaml"
    path.write_text(GOOD.replace("quant: [Q8_0]", "quant: [Q8_0, Q4_0]"))
    result = hwmatrix("volunteers", "queue", str(path), "--store", "s3://bucket/hwm", "--state",
                      str(tmp_path / "ledger"), "--max-cells", "1", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"hwmatrix: {path}:6: matrix: the matrix expands to 2 cells (1 x 2), more than "
                                     "the 1 --max-cells allows; exclude some, or raise --max-cells")
    assert not (tmp_path / "ledger").exists()        # refused before the ledger is opened


def test_the_import_cli_prints_its_skip_notes_with_line_numbers_on_stderr(tmp_path):
    # Before: the notes went into the records only; the user saw "imported 1 records".
    path = tmp_path / "posted.md"
    path.write_text("| model | test | t/s |\n|---|---|---|\n| m | pp512 | 10.00 ± 0.10 |\n"
                    "| m | pp512 | 10.00 ± 0.10 |\n| m | tg128 | fast |\nm | tg64 | 5.00 ± 0.10 |\n")
    result = hwmatrix("import", str(path), "--as", "box", "--store", (tmp_path / "s").as_uri())
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"hwmatrix: note: {path}: line 5: skipped row, unreadable test 'tg128' or t/s 'fast'"]
    assert re.fullmatch(rf"imported 2 records from {re.escape(str(path))} as 'box' into run import-box-\w+; "
                        r"1 duplicate row\(s\) dropped\n", result.stdout)


def test_import_notes_reach_the_terminal_with_control_characters_escaped(tmp_path):
    path = tmp_path / "sweep.md"
    path.write_text("|    PP |     TG |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |\n"
                    "|-------|--------|--------|----------|----------|----------|----------|\n"
                    "|   512 |    128 |      0 |    1.100 |   465.51 |    2.311 |    55.38 |\n"
                    "==== tg_start \x1b]0;pwned\x07\x1b[2J\u202e\n"
                    "|   512 |    128 |    512 |    1.183 |   432.97 |    1.895 |    67.55 |\n")
    result = hwmatrix("import", str(path), "--as", "box", "--store", (tmp_path / "s").as_uri())
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"hwmatrix: note: {path}: line 4: ==== tg_start \\x1b]0;pwned\\x07\\x1b[2J\\u202e\n"
