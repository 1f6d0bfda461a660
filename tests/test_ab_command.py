"""`hwmatrix ab`: two refs, one model, no matrix file - on real builds of mainline 0.3.35 and
0.3.36, and one-line refusals of bad input before anything is built."""
from __future__ import annotations

import pytest

from tests.conftest import hwmatrix

REFS = ("v0.3.35", "v0.3.36")


@pytest.fixture(scope="module")
def ab_run(tmp_path_factory):
    """One real `hwmatrix ab --paste` run, shared by the engine tests."""
    root = tmp_path_factory.mktemp("abcmd")
    store, matrix = (root / "store").as_uri(), root / "ab.yaml"
    env = {"HWMATRIX_SPOOL": str(root / "sp")}
    result = hwmatrix("ab", *REFS, "--engine", "llama.cpp", "-m", "tiny", "--paste", "--max-processes", "4",
                      "--store", store, "--matrix-out", str(matrix), "--", "-p", "32", "-n", "8", "-t", "1", env=env)
    return result, store, matrix, env


def _table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]


@pytest.mark.engines
def test_ab_measures_both_refs_and_prints_a_verdict_for_pp_and_tg(ab_run):
    result, _, _, _ = ab_run
    assert result.returncode == 0, result.stderr[-3000:]
    verdicts = {r[2]: r[7].strip("*") for r in _table_rows(result.stdout) if len(r) > 7 and r[2] in ("pp_tps", "tg_tps")}
    assert set(verdicts) == {"pp_tps", "tg_tps"}, result.stdout
    assert set(verdicts.values()) <= {"slower", "faster", "same", "unknown"}, verdicts


@pytest.mark.engines
def test_ab_paste_block_has_the_bench_table_reproduce_commands_and_hardware(ab_run):
    result, store, matrix, _ = ab_run
    assert result.returncode == 0, result.stderr[-3000:]
    block = result.stdout[result.stdout.index("<details>"):]
    assert block.rstrip().endswith("</details>")
    assert "| Model" in block and "t/s v0.3.35" in block and "t/s v0.3.36" in block
    rows = _table_rows(block)
    assert any(r[1] == "pp32" for r in rows) and any(r[1] == "tg8" for r in rows), block
    assert f"hwmatrix run {matrix} --store {store}" in block
    assert "hwmatrix ab v0.3.35 v0.3.36 --engine llama.cpp -m tiny --paste" in block and "-- -p 32 -n 8 -t 1" in block
    assert "**Hardware**" in block and "hardware class `" in block
    assert "**Build v0.3.35**" in block and "**Build v0.3.36**" in block


@pytest.mark.engines
def test_the_written_matrix_reruns_with_hwmatrix_run_without_measuring_again(ab_run):
    result, store, matrix, env = ab_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote the matrix it runs to {matrix}" in result.stderr
    again = hwmatrix("run", str(matrix), "--store", store, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 results already recorded, 0 to run" in again.stderr


@pytest.mark.parametrize("extra, problem", [
    (["v0.3.35", "v0.3.35", "-m", "tiny"], "A and B are both 'v0.3.35'"),
    ([*REFS, "-m", "tiny", "--", "-zz", "3"], "'-zz' is not one hwmatrix knows"),
    ([*REFS, "-m", "tiny", "--", "-r", "5"], "-r: hwmatrix sizes repetitions itself"),
    ([*REFS, "-m", "/no/such/model.gguf"], "no such model file"),
    (["main", "v0.3.36", "-m", "tiny"], "without --repo, refs name versions"),
], ids=["same-refs", "unknown-flag", "own-flag-r", "missing-model", "not-a-version-without-repo"])
def test_ab_refuses_bad_input_with_one_line_and_exit_2_before_writing_a_matrix(tmp_path, extra, problem):
    out = tmp_path / "m.yaml"
    result = hwmatrix("ab", *extra[:2], "--matrix-out", str(out), "--store", (tmp_path / "st").as_uri(), *extra[2:],
                      timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwmatrix: ") and problem in lines[0], result.stderr
    assert not out.exists()
