"""The test session's clean-up of the shared cache removes the builds and mirrors of repos
under its temp dir, and nothing else."""
from __future__ import annotations

from agent.engine.build import build
from agent.engine.sources import resolve
from agent.paths import cache_root
from tests.cache_hygiene import forget_sources_under
from tests.fake_engine import _git

CMAKE = """cmake_minimum_required(VERSION 3.14)
project(hygiene C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(llama-bench bench.c)
"""


def _built(repo):
    repo.mkdir(parents=True)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    (repo / "CMakeLists.txt").write_text(CMAKE)
    (repo / "bench.c").write_text("int main(void){return 0;}\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "--quiet", "-m", "one")
    resolved = resolve({"repo": str(repo)}, "branch", "main")
    return resolved.mirror, build(resolved, [], ["llama-bench"]).build_dir.parent


def test_builds_and_mirrors_of_repos_under_the_session_dir_go_and_others_stay(tmp_path, monkeypatch):
    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    planted_mirror, planted_build = _built(tmp_path / "session" / "t0" / "llama.cpp")
    kept_mirror, kept_build = _built(tmp_path / "sessions-elsewhere" / "llama.cpp")    # a shared prefix only
    removed = forget_sources_under(cache_root(), tmp_path / "session")
    assert set(removed) == {planted_mirror, planted_build}
    assert not planted_mirror.exists() and not planted_build.exists()
    assert not planted_build.with_name(planted_build.name + ".lock").exists()
    assert (kept_mirror / "HEAD").is_file() and (kept_build / "build.json").is_file()
