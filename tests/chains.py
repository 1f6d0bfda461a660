"""Commit chains for the bisect tests and bench/bisect.py: mainline llama.cpp 0.3.36 (the
llama-cpp-python sdist tree) plus one commit per kind, so where the change is, which commits
build to the same code and which one does not build are known before anything runs.

Kinds: docs (README only: same code), comment (a comment reworded in ggml-cpu.c, no line
moved: same code), neutral (a new unused global in ggml-cpu.c: other code, same speed),
broken (an #error: does not compile), fix (removes it again), slow and slow2 (busy work in
every one-token matmul, i.e. token generation only, at two different places of the chain).
"""
from __future__ import annotations

import random
import subprocess
from pathlib import Path

from agent.engine.sources import prepare_sdist_repo
from tests.planted import ENV, MUL_MAT, SOURCE, git

# Busy work per one-token matmul; test_ab_verdict's 600 steps on every matmul cost tg about a
# quarter, SMALL_TG_SLOWDOWN's 2,200 on one-token ones 5-10%.
SLOW_STEPS = {"slow": 9000, "slow2": 9000}
BROKEN = "#error hwmatrix: a planted build failure\n"

# The chain of 8: harmless commits (one of them same code), one that does not compile
# (and its fix), the planted tg slowdown at 6, and more harmless commits after it.
CHAIN_8 = ["docs", "neutral", "comment", "broken", "fix", "slow", "docs", "neutral"]
CULPRIT_8 = 6
# Two slowdowns at different places: 2 and 7.
CHAIN_TWO = ["docs", "slow", "neutral", "docs", "comment", "neutral", "slow2", "docs"]
CULPRITS_TWO = [2, 7]


def chain_32(seed: int = 14) -> tuple[list[str], int]:
    """A chain of 32: harmless commits of every kind in a seeded order, a broken commit and its
    fix, and the slowdown at a seeded place in the second half; (kinds, culprit index)."""
    rng = random.Random(seed)
    kinds = [rng.choice(["docs", "neutral", "comment", "neutral"]) for _ in range(32)]
    culprit = rng.randrange(17, 30)
    broken = rng.randrange(3, 14)
    kinds[broken - 1], kinds[broken] = "broken", "fix"
    kinds[culprit - 1] = "slow"
    return kinds, culprit


def _apply(repo: Path, kind: str, n: int) -> None:
    source = repo / SOURCE
    text = source.read_text()
    if kind == "docs":
        readme = repo / "README.md"
        readme.write_text(readme.read_text() + f"\nhwmatrix chain note {n}.\n")
        return
    if kind == "comment":
        lines = text.splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if line.startswith("// ") and "hwmatrix" not in line)
        lines[at] = lines[at].rstrip("\n") + f" (hwmatrix reword {n})\n"
        text = "".join(lines)
    elif kind == "neutral":
        text += f"const char * hwm_neutral_{n} = \"{n}\";\n"
    elif kind == "broken":
        text += BROKEN
    elif kind == "fix":
        text = text.replace(BROKEN, "")
    elif kind in SLOW_STEPS:
        assert text.count(MUL_MAT) == 1
        text = text.replace(MUL_MAT, MUL_MAT + (
            f"    if (src1->ne[1] == 1) {{ volatile double hwm_{kind} = 0; "
            f"for (int hwm_i = 0; hwm_i < {SLOW_STEPS[kind]}; ++hwm_i) hwm_{kind} += hwm_i; }}\n"))
    else:
        raise ValueError(f"unknown kind {kind!r}")
    source.write_text(text)


def chain_repo(root: Path, kinds: list[str], branch: str = "chain") -> tuple[Path, list[str]]:
    """A clone of the mainline sdist repo with ``branch``: v0.3.36 and then one commit per kind;
    (repo, shas) with shas[0] = v0.3.36 (good) and shas[-1] = the branch head (bad)."""
    repo = root / "llama.cpp"
    if not repo.exists():
        git(root, "clone", "--quiet", str(prepare_sdist_repo("llama-cpp-python", ["0.3.35", "0.3.36"])), str(repo))
    git(repo, "checkout", "--quiet", "-B", branch, "v0.3.36")
    shas = [git(repo, "rev-parse", "HEAD")]
    for n, kind in enumerate(kinds, 1):
        _apply(repo, kind, n)
        # fixed dates: the same chain has the same shas on every run, so its builds are cached
        date = f"2026-01-01T{n // 60:02d}:{n % 60:02d}:00Z"
        subprocess.run(["git", "commit", "--quiet", "--allow-empty", "-am", f"{n}: {kind}"], cwd=repo, check=True,
                       capture_output=True, env={**ENV, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
        shas.append(git(repo, "rev-parse", "HEAD"))
    return repo, shas
