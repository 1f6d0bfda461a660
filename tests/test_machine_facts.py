"""Each environment fact is read once, in agent.machine.readers, and every user reads it
there: the profile and the hygiene facts of a record (governor, boost, THP), the profile
and the build key (the toolchain)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import agent.machine.readers as readers
from agent.engine.build import make_key
from agent.engine.sources import ResolvedSource
from agent.machine.hygiene import machine_state
from agent.machine.probe import probe_os, probe_toolchain

RESOLVED = ResolvedSource(repo_id="https://github.com/ggml-org/llama.cpp", mirror=Path("/nonexistent"),
                          commit="a" * 40)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_governor_boost_and_thp_are_one_reading_for_the_profile_and_the_record(tmp_path, monkeypatch):
    cpu = tmp_path / "devices/system/cpu"
    write(cpu / "cpu0/cpufreq/scaling_governor", "powersave\n")
    write(cpu / "cpu0/cpufreq/boost", "0\n")        # only the per-policy switch, as on some AMD boxes
    write(tmp_path / "kernel/mm/transparent_hugepage/enabled", "always madvise [never]\n")
    monkeypatch.setattr(readers, "SYS", tmp_path)
    facts, os_info = machine_state(), probe_os()
    assert (facts["governor"], facts["boost"], facts["thp"]) == ("powersave", False, "never")
    assert (os_info.governor, os_info.boost, os_info.thp) == ("powersave", False, "never")


def test_the_toolchain_is_one_reader_for_the_profile_and_the_build_key(monkeypatch):
    asked = []

    def version(argv):
        asked.append(argv[0])
        return f"{argv[0]} version 9.9 (fake)"

    monkeypatch.setattr(readers, "tool_version", version)
    key = make_key(RESOLVED, ["-DGGML_NATIVE=OFF"])
    tools = probe_toolchain()
    assert (key.compiler, key.cmake) == ("c++ version 9.9 (fake)", "cmake version 9.9 (fake)")
    assert (tools.gcc, tools.cmake, tools.ccache) == ("gcc version 9.9 (fake)", "cmake version 9.9 (fake)",
                                                      "ccache version 9.9 (fake)")
    assert sorted(asked) == ["c++", "ccache", "cmake", "cmake", "gcc"]


@pytest.mark.skipif(not (shutil.which("c++") and shutil.which("cmake")), reason="needs c++ and cmake")
def test_the_build_key_names_the_toolchain_as_it_always_did():
    """The first stdout line of `c++ --version` and `cmake --version`: cached builds stay valid."""
    def first_line(tool):
        return subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.splitlines()[0].strip()

    key = make_key(RESOLVED, ["-DGGML_NATIVE=OFF"])
    assert (key.compiler, key.cmake) == (first_line("c++"), first_line("cmake"))


def test_the_cpu_flags_are_one_reading_for_the_profile_and_the_native_build_key(tmp_path, monkeypatch):
    """-march=native's digest and the profile's CPU come from one read of /proc/cpuinfo, and the
    digest is the one cached native builds were made under (values joined as written there)."""
    import hashlib

    from agent.engine.build import native_isa

    block = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\nflags\t\t: fpu avx2\n"
    write(tmp_path / "cpuinfo", block + "\nprocessor\t: 1\nflags\t\t: other\n")
    monkeypatch.setattr(readers, "PROC", tmp_path)
    assert native_isa() == hashlib.sha256(b"GenuineIntel|6|143|fpu avx2").hexdigest()[:16]
    assert readers.proc_cpuinfo()["flags"] == ["fpu", "avx2"]
    (tmp_path / "cpuinfo").unlink()
    assert native_isa() == "unknown"
