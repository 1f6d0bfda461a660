"""The argument this tool exists to settle, on real builds: a commit that really slows the
CPU matmul path is called "slower"; the unmodified commit against itself is not."""
from __future__ import annotations

import subprocess

import pytest

from agent.sources import prepare_sdist_repo
from tests.conftest import hwmatrix

pytestmark = pytest.mark.engines

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
       "PATH": "/usr/bin:/bin"}
ANCHOR = "    const struct ggml_tensor * src1 = dst->src[1];\n"
# about 10 microseconds of busy work per matmul call: tiny-model tg drops by roughly a quarter
SLOWDOWN = ANCHOR + "    { volatile double hwm_slow = 0; for (int hwm_i = 0; hwm_i < 600; ++hwm_i) hwm_slow += hwm_i; }\n"


def _git(repo, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True, env=ENV).stdout.strip()


@pytest.fixture(scope="module")
def ab_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ab")
    repo = root / "llama.cpp"
    _git(root, "clone", "--quiet", str(prepare_sdist_repo("llama-cpp-python", ["0.3.35", "0.3.36"])), str(repo))
    _git(repo, "checkout", "--quiet", "-b", "slow", "v0.3.36")
    source = repo / "ggml" / "src" / "ggml-cpu" / "ggml-cpu.c"
    text = source.read_text()
    assert text.count(ANCHOR) >= 1
    source.write_text(text.replace(ANCHOR, SLOWDOWN, 1))
    _git(repo, "commit", "--quiet", "-am", "planted: slow down every CPU matmul")
    base_commit = _git(repo, "rev-parse", "v0.3.36^{commit}")
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
