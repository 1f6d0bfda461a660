"""Shared fixtures. Engine builds, sdists, models and ccache live in the shared cache
($HWMATRIX_CACHE, default ~/.cache/hwmatrix) so that only the first test run compiles;
stores and spools are per test."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def hwmatrix(*args: str, env: dict | None = None, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run the real CLI as a user would."""
    return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def isolated_spool(tmp_path, monkeypatch):
    """A private spool (and work dir) while builds stay in the shared cache."""
    monkeypatch.setenv("HWMATRIX_SPOOL", str(tmp_path / "spool"))
    return tmp_path / "spool"
