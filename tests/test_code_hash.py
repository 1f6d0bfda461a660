"""agent.engine.build.code_hash on real builds: commits that change nothing the compiler makes
(docs, a comment reworded in place) build to their parent's code hash, so a bisect calls them
the same without measuring, while a real code change does not; and a cached build from before
code hashes gets one."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.engine.build import build
from agent.engine.sources import prepare_sdist_repo, resolve_git
from tests.planted import ENV, MUL_MAT, SOURCE, git

pytestmark = pytest.mark.engines

TARGETS = ["llama-bench"]
COMMENT = "// Note: once we move threading into a separate C++ file\n"
STATEMENT = "    { volatile int hwm_code_change = 1; (void) hwm_code_change; }\n"


def _commit(repo: Path, message: str, n: int) -> str:
    date = f"2026-02-01T00:0{n}:00Z"
    subprocess.run(["git", "commit", "--quiet", "-am", message], cwd=repo, check=True, capture_output=True,
                   env={**ENV, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """v0.3.36, then docs-only, then a comment reworded in ggml-cpu.c (no line moved), then a
    statement added to the CPU matmul: {name: (resolved source, BuildResult)}. Its mirror and
    build trees are removed afterwards; ccache keeps the objects warm for the next run."""
    root = tmp_path_factory.mktemp("codehash")
    repo = root / "llama.cpp"
    git(root, "clone", "--quiet", str(prepare_sdist_repo("llama-cpp-python", ["0.3.35", "0.3.36"])), str(repo))
    git(repo, "checkout", "--quiet", "-b", "codehash", "v0.3.36")
    shas = {"base": git(repo, "rev-parse", "HEAD")}
    readme = repo / "README.md"
    readme.write_text(readme.read_text() + "\nhwmatrix: a docs-only change.\n")
    shas["docs"] = _commit(repo, "docs only", 1)
    source = repo / SOURCE
    text = source.read_text()
    assert text.count(COMMENT) == 1
    reworded = text.replace(COMMENT, "// Note: when threading moves into a C++ file of its own\n")
    assert reworded.count("\n") == text.count("\n")
    source.write_text(reworded)
    shas["comment"] = _commit(repo, "reword a comment", 2)
    assert reworded.count(MUL_MAT) == 1
    source.write_text(reworded.replace(MUL_MAT, MUL_MAT + STATEMENT))
    shas["code"] = _commit(repo, "a statement in the matmul", 3)
    results = {}
    try:
        for name, sha in shas.items():
            resolved = resolve_git(str(repo), "commit", sha)
            results[name] = (resolved, build(resolved, [], TARGETS))
        yield results
    finally:          # this clone's mirror and build trees serve no later run (its path is new each time)
        dirs = {resolved.mirror for resolved, _ in results.values()} | {r.build_dir.parent for _, r in results.values()}
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
            path.with_suffix(".lock").unlink(missing_ok=True)


def test_docs_only_commit_has_its_parents_code_hash(builds):
    """A README edit changes the binary (it prints its commit) but not the code."""
    base, docs = builds["base"][1], builds["docs"][1]
    assert base.code_hash and len(base.code_hash) == 64
    assert docs.code_hash == base.code_hash
    assert docs.binary_hash != base.binary_hash       # what the code hash looks past


def test_comment_reworded_in_place_has_its_parents_code_hash(builds):
    """A comment edit in a compiled file that moves no line (no __LINE__ shifts) is the same code."""
    assert builds["comment"][1].code_hash == builds["docs"][1].code_hash


def test_real_code_change_has_another_code_hash(builds):
    """A statement added to a compiled function is other code: the bisect must measure it."""
    code, comment = builds["code"][1], builds["comment"][1]
    assert code.code_hash and code.code_hash != comment.code_hash
    assert code.binary_hash != comment.binary_hash


def test_cached_build_without_a_code_hash_gets_one(builds):
    """A build from before code hashes (build.json without the key) is served from the cache
    with its code hash computed then, and written back."""
    resolved, docs = builds["docs"]
    state_file = docs.build_dir.parent / "build.json"
    state = json.loads(state_file.read_text())
    del state["code_hash"]
    state_file.write_text(json.dumps(state, indent=2))
    again = build(resolved, [], TARGETS)
    assert again.cached is True
    assert again.build_dir == docs.build_dir
    assert again.code_hash == docs.code_hash
    assert json.loads(state_file.read_text())["code_hash"] == docs.code_hash
