"""Shared fixtures. Engine builds, sdists, models and ccache live in the shared cache
($HWMATRIX_CACHE, default ~/.cache/hwmatrix) so that only the first test run compiles;
stores and spools are per test."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser import browser  # noqa: F401  (the headless-chromium session fixture)

REPO = Path(__file__).resolve().parents[1]


def hwmatrix(*args: str, env: dict | None = None, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run the real CLI as a user would."""
    return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def wait_for(predicate, seconds: float, interval: float = 1.0):
    """The predicate's first truthy value within ``seconds``, else None."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def two_ref_matrix(tmp_path, name: str, quants=("Q8_0",), reps: int = 3, timeout_s: int = 300,
                   uarch: str | None = None, refs=("A", "B")) -> str:
    """A matrix file comparing llama.cpp v0.3.35 (A) with v0.3.36 (B) from the registry
    sdists on the tiny model; ``uarch`` limits it to agents of that CPU; ``refs`` picks
    which of A and B it holds."""
    tags = {"A": "v0.3.35", "B": "v0.3.36"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""name: {name}
engines:
  mainline: {{kind: llama.cpp, sdist: {{package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}}}
models:
  tiny: {{generate: tiny-llama}}
args: {{n_prompt: 16, n_gen: 4, threads: 1}}
repetitions: {{min: {reps}, max: {reps}, min_process_s: 0}}
hygiene: {{drop_caches: off, busy: mark}}   # look and record, never wait: tests share busy boxes
timeout_s: {timeout_s}
hardware: {{{f"cpu: {{uarch: {uarch}}}" if uarch else ""}}}
matrix:
  ref: [{", ".join(f"{{name: {r}, engine: mainline, tag: {tags[r]}}}" for r in refs)}]
  quant: [{", ".join(quants)}]
""")
    return str(path)


@pytest.fixture(scope="session", autouse=True)
def forget_temp_sources(tmp_path_factory):
    """At the end of the run, drop the shared cache's builds and mirrors of this run's temp repos."""
    yield
    from agent.paths import cache_root
    from tests.cache_hygiene import forget_sources_under
    forget_sources_under(cache_root(), tmp_path_factory.getbasetemp())


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
