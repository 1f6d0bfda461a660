"""`per` (run each cell once per hardware class, or on every matching machine) lives under
`hardware:`, the only place placement reads it. A top-level `per:` used to validate and
then do nothing, so `per: machine` there silently ran per class; now it is refused."""
from __future__ import annotations

from coordinator.matrix.loading import load_matrix
from coordinator.planning.plan import load_plan
from tests.conftest import REPO, hwmatrix

MATRIX = """\
name: per
engines:
  main: {kind: llama.cpp, repo: https://github.com/ggml-org/llama.cpp}
models:
  tiny: {generate: tiny-llama}
hardware:
  ram_gb: ">=4"
{per}
matrix:
  ref: [{name: a, tag: v1}]
"""


def test_a_top_level_per_is_refused_with_exit_2_naming_file_line_key_and_where_it_goes(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MATRIX.replace("{per}", "per: machine"))
    result = hwmatrix("plan", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"hwmatrix: {path}:8: per: a top-level 'per' is never read: placement reads hardware.per; move it under hardware:"]


def test_per_under_hardware_is_what_placement_reads(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MATRIX.replace("{per}", "  per: machine"))
    (cell,) = load_plan(str(path)).cells
    assert cell.matrix.hardware.per == "machine"


def test_the_shipped_reproduction_matrix_sets_per_where_it_is_read():
    hardware = load_matrix(REPO / "matrices" / "ik-518-reproduction.yaml").hardware
    assert "per" in hardware.model_fields_set and hardware.per == "class"
