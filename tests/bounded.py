"""Run the real CLI under a wall-clock and an address-space limit, and say what it used.

Tests of hostile inputs (alias bombs, huge axes, huge files) must prove the refusal comes
in bounded time and memory, and must themselves stay bounded when the code under test is
not: the child is killed at ``seconds`` and cannot grow past ``mem_mb``.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from tests.conftest import REPO

# The peak is VmHWM, this process image's own high-water mark: ru_maxrss would carry over the
# size of the (large) pytest process it was forked from.
_CHILD = """\
import os, sys
from coordinator.cli.main import main
try:
    rc = main(sys.argv[1:])
finally:
    peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    with open(os.environ["HWMATRIX_TEST_PEAK"], "w") as f:
        f.write(peak)
sys.exit(rc)
"""


@dataclass
class Bounded:
    returncode: int | None      # None: killed at the time limit
    stdout: str
    stderr: str
    wall_s: float
    peak_mb: float | None       # the child's peak RSS (VmHWM); None when it did not finish


def run_cli_bounded(*args: str, seconds: float = 30, mem_mb: int = 2048, env: dict | None = None) -> Bounded:
    """``hwmatrix ARGS`` in a child limited to ``seconds`` and ``mem_mb`` MiB of address space."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))

    with tempfile.NamedTemporaryFile("r", suffix=".peak") as peak:
        start = time.monotonic()
        try:
            p = subprocess.run([sys.executable, "-c", _CHILD, *args], cwd=REPO, capture_output=True, text=True,
                               timeout=seconds, preexec_fn=limit,
                               env={**os.environ, **(env or {}), "HWMATRIX_TEST_PEAK": peak.name})
        except subprocess.TimeoutExpired as exc:
            return Bounded(None, _text(exc.stdout), _text(exc.stderr), time.monotonic() - start, None)
        wall = time.monotonic() - start
        text = peak.read().strip()
        return Bounded(p.returncode, p.stdout, p.stderr, wall, int(text) / 1024 if text else None)


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")
