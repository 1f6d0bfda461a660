"""Thin argv-only wrapper around git: every call is a list, never a shell string."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


class GitError(RuntimeError):
    pass


def git(*args: str, cwd: Path | None = None, check: bool = True, env: dict | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", **(env or {})}
    env.setdefault("GIT_AUTHOR_NAME", "hwmatrix")
    env.setdefault("GIT_AUTHOR_EMAIL", "hwmatrix@localhost")
    env.setdefault("GIT_COMMITTER_NAME", "hwmatrix")
    env.setdefault("GIT_COMMITTER_EMAIL", "hwmatrix@localhost")
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def git_ok(*args: str, cwd: Path | None = None) -> bool:
    """Whether a git query answers yes (exit 0), e.g. ``merge-base --is-ancestor A B``."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True).returncode == 0
