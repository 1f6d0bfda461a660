"""The build cache has a size limit ($HWMATRIX_BUILD_CACHE_GB, default 20 GB) for every
agent, not only volunteers: each new build is followed by pruning the least recently used
trees, a cache hit counts as a use, and a tree in use or used within the hour stays. Before
this limit a bisect or a day of test runs grew ~/.cache/hwmatrix/builds to 67 GB and filled
the disk."""
from __future__ import annotations

import fcntl
import json
import os
import time

import pytest

from agent.engine.build import BuildError, build
from agent.engine.cache_prune import BUILD_CACHE_GB, build_cache_limit, prune_builds
from agent.engine.sources import resolve
from tests.fake_engine import _git

CMAKE = """cmake_minimum_required(VERSION 3.14)
project(limited C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(llama-bench bench.c)
"""
HOURS_AGO = time.time() - 3 * 3600


def _tree(builds, name: str, size: int, used: float):
    """A finished build tree of ``size`` bytes whose build.json says so, last used at ``used``."""
    root = builds / name
    (root / "build").mkdir(parents=True)
    (root / "build" / "blob").write_bytes(b"x" * size)
    (root / "build.json").write_text(json.dumps({"bytes": size}))
    lock = builds / f"{name}.lock"
    lock.touch()
    for path in (root / "build.json", lock):
        os.utime(path, (used, used))
    return root


def test_least_recently_used_trees_go_first_until_the_builds_fit(tmp_path):
    builds = tmp_path / "builds"
    oldest = _tree(builds, "a", 1000, HOURS_AGO - 300)
    older = _tree(builds, "b", 1000, HOURS_AGO - 200)
    old = _tree(builds, "c", 1000, HOURS_AGO - 100)
    assert prune_builds(builds, 2500) == [oldest]
    assert older.exists() and old.exists()
    assert prune_builds(builds, 5000) == []


def test_a_tree_in_use_or_used_within_the_hour_is_kept_even_over_the_limit(tmp_path):
    builds = tmp_path / "builds"
    locked = _tree(builds, "locked", 1000, HOURS_AGO - 100)
    recent = _tree(builds, "recent", 1000, time.time() - 60)
    unused = _tree(builds, "unused", 1000, HOURS_AGO)
    building = builds / "building"          # no build.json yet: a build in progress
    building.mkdir()
    with open(builds / "locked.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert prune_builds(builds, 0) == [unused]
    assert locked.exists() and recent.exists() and building.exists()


def test_the_limit_defaults_to_20_gb_and_0_turns_it_off(monkeypatch):
    monkeypatch.delenv("HWMATRIX_BUILD_CACHE_GB", raising=False)
    assert build_cache_limit() == int(BUILD_CACHE_GB * 1e9) == 20 * 10**9
    monkeypatch.setenv("HWMATRIX_BUILD_CACHE_GB", "1.5")
    assert build_cache_limit() == 1_500_000_000
    monkeypatch.setenv("HWMATRIX_BUILD_CACHE_GB", "0")
    assert build_cache_limit() is None


def _repo(tmp_path, commits: int):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "--quiet", "--initial-branch=main")
    (repo / "CMakeLists.txt").write_text(CMAKE)
    for i in range(commits):
        (repo / "bench.c").write_text(f"int main(void){{return {i};}}\n")
        _git(repo, "add", ".")
        _git(repo, "commit", "--quiet", "-m", f"commit {i}")
        _git(repo, "tag", f"c{i}")
    return repo


def _age(result, when: float):
    root = result.build_dir.parent
    for path in (root / "build.json", root.with_suffix(".lock")):
        os.utime(path, (when, when))


def test_a_new_build_prunes_the_unused_one_and_a_cache_hit_saves_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    repo = _repo(tmp_path, 3)
    first = build(resolve({"repo": str(repo)}, "tag", "c0"), [], ["llama-bench"])
    size = json.loads((first.build_dir.parent / "build.json").read_text())["bytes"]
    assert size > 10_000            # the source export and the cmake tree, measured at build time
    monkeypatch.setenv("HWMATRIX_BUILD_CACHE_GB", str(1.5 * size / 1e9))     # room for one
    _age(first, HOURS_AGO)
    hit = build(resolve({"repo": str(repo)}, "tag", "c0"), [], ["llama-bench"])          # used again: now recent
    assert hit.cached
    second = build(resolve({"repo": str(repo)}, "tag", "c1"), [], ["llama-bench"])
    assert first.bin("llama-bench").is_file(), "a build used a moment ago was pruned"
    _age(first, HOURS_AGO)
    _age(second, HOURS_AGO + 60)
    monkeypatch.setenv("HWMATRIX_BUILD_CACHE_GB", str(2.5 * size / 1e9))     # room for two
    third = build(resolve({"repo": str(repo)}, "tag", "c2"), [], ["llama-bench"])
    assert not first.build_dir.exists(), "the least recently used build was kept over the limit"
    assert second.bin("llama-bench").is_file() and third.bin("llama-bench").is_file()   # under the hour mark / new


def test_a_limit_that_is_not_a_number_is_a_build_error_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HWMATRIX_BUILD_CACHE_GB", "lots")
    repo = _repo(tmp_path, 1)
    with pytest.raises(BuildError, match=r"\$HWMATRIX_BUILD_CACHE_GB='lots' is not a number of GB"):
        build(resolve({"repo": str(repo)}, "tag", "c0"), [], ["llama-bench"])


def test_the_command_line_refuses_a_bad_limit_at_once_with_exit_2():
    from tests.conftest import hwmatrix

    started = time.monotonic()
    result = hwmatrix("run", "matrices/demo.yaml", env={"HWMATRIX_BUILD_CACHE_GB": "-3"})
    assert result.returncode == 2, result.stderr[-500:]
    assert result.stderr.strip().splitlines() == [
        "hwmatrix: $HWMATRIX_BUILD_CACHE_GB='-3' must be 0 (no limit) or a positive number of GB"]
    assert time.monotonic() - started < 20
