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


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    """A real S3 server (SeaweedFS) per test module, with a fresh bucket; fails if `weed` is missing."""
    from tests.seaweed import SeaweedS3
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    try:
        server.start()
        error = None
    except RuntimeError as e:
        error = str(e)
    if error:                       # outside the except block, so the message is not shown twice
        server.close()
        pytest.fail(error, pytrace=False)
    yield server
    server.close()


@pytest.fixture
def s3_store_url(seaweed, monkeypatch):
    """A fresh s3://BUCKET/t-<random> store on the module's SeaweedFS, its credentials in the env."""
    import secrets
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):   # a named profile beats env keys
        monkeypatch.delenv(name, raising=False)
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    yield f"s3://{seaweed.bucket}/t-{secrets.token_hex(6)}"
