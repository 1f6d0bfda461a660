"""`hwmatrix plan` warns when a cell's engine asks for every CPU of this machine (#13): the
engine then competes with hwmatrix itself and everything else for each core."""
from __future__ import annotations

import os

import pytest

from tests.conftest import hwmatrix

MATRIX = """\
name: crowded
engines:
  mainline: {{kind: llama.cpp, repo: https://github.com/ggml-org/llama.cpp}}
models:
  tiny: {{generate: tiny-llama}}
matrix:
  ref: [{{name: a, tag: v0.3.35}}]
  threads: [{threads}]
"""


def _plan(tmp_path, threads: str):
    path = tmp_path / "m.yaml"
    path.write_text(MATRIX.format(threads=threads))
    return hwmatrix("plan", str(path), timeout=120)


def test_threads_at_or_above_the_cpu_count_is_warned_about_on_stderr_and_the_plan_still_passes(tmp_path):
    result = _plan(tmp_path, "1, 4096")          # 4096: the most threads a matrix may ask for
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning.startswith("hwmatrix: warning: 1 cell(s) run with threads >= this machine's ")
    assert "competes with hwmatrix" in warning and "a-" in warning


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: every cell asks for all of it")
def test_threads_below_the_cpu_count_gets_no_warning(tmp_path):
    result = _plan(tmp_path, "1")
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
