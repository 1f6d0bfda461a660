"""Planted slowdowns for the A/B tests on real builds: a branch on top of mainline llama.cpp
0.3.36 (the llama-cpp-python sdist tree) whose CPU matmul does known extra work, so the size
and place of the change are known before anything is measured."""
from __future__ import annotations

import subprocess
from pathlib import Path

from agent.engine.sources import prepare_sdist_repo

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
       "PATH": "/usr/bin:/bin"}
SOURCE = Path("ggml") / "src" / "ggml-cpu" / "ggml-cpu.c"
MUL_MAT = """void ggml_compute_forward_mul_mat(
        const struct ggml_compute_params * params,
              struct ggml_tensor * dst) {

    const struct ggml_tensor * src0 = dst->src[0];
    const struct ggml_tensor * src1 = dst->src[1];
"""
# Busy work in each matmul whose src1 holds one token, i.e. token generation only: prompt
# processing (src1 = the prompt's tokens) runs as before. Measured on this 2-core VM (tiny
# model, threads=1, tg8, A/B interleaved, tg t/s): 2,000 steps -4.6% to -6.1% (4 runs), 2,400
# -6.3% to -11% (6 runs); the share moves with what the memory-bound tg costs at the time.
# 2,200 aims at the middle of the 5-10% the issue asks for.
SMALL_TG_SLOWDOWN = MUL_MAT + (
    "    if (src1->ne[1] == 1) { volatile double hwm_slow = 0; for (int hwm_i = 0; hwm_i < 2200; ++hwm_i) hwm_slow += hwm_i; }\n")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True, env=ENV).stdout.strip()


def planted_repo(root: Path, branch: str, anchor: str, replacement: str) -> Path:
    """A clone of the mainline sdist repo (tags v0.3.35, v0.3.36) with ``branch``: v0.3.36 plus
    one commit that replaces the one ``anchor`` in ggml-cpu.c by ``replacement``."""
    repo = root / "llama.cpp"
    git(root, "clone", "--quiet", str(prepare_sdist_repo("llama-cpp-python", ["0.3.35", "0.3.36"])), str(repo))
    git(repo, "checkout", "--quiet", "-b", branch, "v0.3.36")
    text = (repo / SOURCE).read_text()
    assert text.count(anchor) == 1, "the anchor must name one place in ggml-cpu.c"
    (repo / SOURCE).write_text(text.replace(anchor, replacement))
    git(repo, "commit", "--quiet", "-am", f"planted: {branch}")
    return repo
