"""On a CPU with AMX, native builds leave AMX out: ggml's AMX kernels die with SIGILL on
such machines (measured on this kind of Xeon VM), so without this every Q8_0/Q4_0 cell of a
mainline build fails. A matrix that turns AMX on gets it; other CPUs' builds are unchanged."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.engine import build
from agent.engine.build import BuildKey, amx_left_out, isa_off_flags


@pytest.fixture
def amx_cpu(monkeypatch):
    monkeypatch.setattr(build, "cpu_has_amx", lambda: True)


def test_a_native_build_on_an_amx_cpu_leaves_amx_out(amx_cpu):
    assert amx_left_out([]) == ("amx-tile", "amx-int8", "amx-bf16")
    assert isa_off_flags(amx_left_out([])) == ["-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
                                               "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"]


def test_a_matrix_that_asks_for_amx_or_a_portable_build_gets_no_workaround(amx_cpu):
    assert amx_left_out(["-DGGML_AMX_INT8=ON"]) is None
    assert amx_left_out(["-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON"]) is None


def test_a_cpu_without_amx_keeps_its_flags_and_build_digests(monkeypatch):
    monkeypatch.setattr(build, "cpu_has_amx", lambda: False)
    assert amx_left_out([]) is None and isa_off_flags(None) == []
    key = BuildKey("repo", "c0ffee", (), "gcc 12", "cmake 3.25", "isa", None, None)
    old_fields = {"repo_id": "repo", "commit": "c0ffee", "cmake_flags": [], "compiler": "gcc 12",
                  "cmake": "cmake 3.25", "isa": "isa"}
    assert key.digest() == hashlib.sha256(json.dumps(old_fields, sort_keys=True).encode()).hexdigest()[:20]


def test_the_amx_workaround_is_part_of_the_build_key():
    plain = BuildKey("repo", "c0ffee", (), "gcc 12", "cmake 3.25", "isa", None, None)
    left_out = BuildKey("repo", "c0ffee", (), "gcc 12", "cmake 3.25", "isa", None, ("amx-tile",))
    assert plain.digest() != left_out.digest()


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")
def test_mno_amx_wins_over_an_march_that_turns_amx_on_wherever_it_stands(tmp_path: Path):
    """What isa_off_flags relies on: ggml puts -march=native after CMAKE_C_FLAGS. Sapphire
    Rapids turns AMX on like -march=native does on an AMX machine (only compiled, not run)."""
    source = tmp_path / "amx.c"
    source.write_text("int main(void){\n#ifdef __AMX_TILE__\nreturn 1;\n#else\nreturn 0;\n#endif\n}\n")

    def amx_compiled_in(*flags: str) -> bool:
        binary = tmp_path / "amx"
        subprocess.run(["gcc", *flags, str(source), "-o", str(binary)], check=True)
        return subprocess.run([str(binary)]).returncode == 1

    assert amx_compiled_in("-march=sapphirerapids")
    assert not amx_compiled_in(*"-mno-amx-tile -mno-amx-int8 -mno-amx-bf16".split(), "-march=sapphirerapids")
