"""The argument this tool exists to settle, on real builds: a commit that really slows the
CPU matmul path is called "slower"; the unmodified commit against itself is not."""
from __future__ import annotations

import subprocess

import pytest

from agent.engine.sources import prepare_sdist_repo
from tests.conftest import hwmatrix
from tests.planted import git

pytestmark = pytest.mark.engines

ANCHOR = "    const struct ggml_tensor * src1 = dst->src[1];\n"
# about 10 microseconds of busy work per matmul call: tiny-model tg drops by roughly a quarter
SLOWDOWN = ANCHOR + "    { volatile double hwm_slow = 0; for (int hwm_i = 0; hwm_i < 600; ++hwm_i) hwm_slow += hwm_i; }\n"


@pytest.fixture(scope="module")
def ab_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ab")
    repo = root / "llama.cpp"
    git(root, "clone", "--quiet", str(prepare_sdist_repo("llama-cpp-python", ["0.3.35", "0.3.36"])), str(repo))
    git(repo, "checkout", "--quiet", "-b", "slow", "v0.3.36")
    source = repo / "ggml" / "src" / "ggml-cpu" / "ggml-cpu.c"
    text = source.read_text()
    assert text.count(ANCHOR) >= 1
    source.write_text(text.replace(ANCHOR, SLOWDOWN, 1))
    git(repo, "commit", "--quiet", "-am", "planted: slow down every CPU matmul")
    base_commit = git(repo, "rev-parse", "v0.3.36^{commit}")
    matrix = root / "ab.yaml"
    matrix.write_text(f"""name: ab
engines:
  local: {{kind: llama.cpp, repo: {repo}}}
models:
  tiny: {{generate: tiny-llama}}
args: {{n_prompt: 32, n_gen: 16, threads: 1}}
repetitions: 12
hygiene: {{drop_caches: off}}
matrix:
  ref:
    - {{name: base, tag: v0.3.36}}
    - {{name: again, commit: {base_commit}}}
    - {{name: slow, branch: slow}}
""")
    store = root / "store"
    result = hwmatrix("run", str(matrix), "--store", store.as_uri(), env={"HWMATRIX_SPOOL": str(root / "sp")})
    assert result.returncode == 0, result.stderr[-3000:]
    return store


def _verdicts(store, candidate: str) -> dict[str, str]:
    result = hwmatrix("compare", "--baseline", "ref=base", "--candidate", f"ref={candidate}", "--store", store.as_uri())
    assert result.returncode == 0, result.stderr
    verdicts = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 7 and cells[2] in ("pp_tps", "tg_tps"):
            verdicts[cells[2]] = cells[7].strip("*")
    return verdicts


def test_a_planted_matmul_slowdown_is_called_slower(ab_store):
    assert _verdicts(ab_store, "slow")["tg_tps"] == "slower"


def test_the_unmodified_commit_against_itself_is_never_called_different(ab_store):
    verdicts = _verdicts(ab_store, "again")
    assert set(verdicts.values()) <= {"same", "same binary"}, verdicts


def test_llama_cpps_own_compare_script_reads_the_export_and_sees_the_slowdown(ab_store, tmp_path):
    """`--export sqlite` read by the real scripts/compare-llama-bench.py of the same tree:
    the planted commit is told apart from its base (the binaries both report the vendored
    upstream commit, so the export names the commit hwmatrix built) and shows as slower."""
    import json
    import sys

    db = tmp_path / "bench.sqlite"
    result = hwmatrix("report", "--store", ab_store.as_uri(), "--export", "sqlite", "--out", str(db))
    assert result.returncode == 0, result.stderr
    records = [json.loads(p.read_text()) for p in ab_store.glob("runs/*/results/*/*.json")]
    commit = {r["params"]["ref"]: r["engine"]["commit"][:8] for r in records}
    assert len(set(commit.values())) == 2                  # base and again share one commit
    repo = prepare_sdist_repo("llama-cpp-python", ["0.3.35", "0.3.36"])
    script = tmp_path / "compare-llama-bench.py"
    script.write_text(git(repo, "show", "v0.3.36:scripts/compare-llama-bench.py"))
    out = subprocess.run([sys.executable, str(script), "-i", str(db), "-b", commit["base"], "-c", commit["slow"],
                          "-o", "tsv"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    header, *lines = [[cell.strip() for cell in line.split("\t")] for line in out.stdout.strip().splitlines()]
    speedup = {row[header.index("Test")]: float(row[header.index("Speedup")]) for row in lines}
    assert set(speedup) == {"pp32", "tg16"}, out.stdout
    assert speedup["tg16"] < 0.9
