"""Source checkout: every ref kind resolves to the commit git itself names; sdist repos are
reproducible; bad refs are errors, not crashes."""
from __future__ import annotations

import subprocess

import pytest

from agent.engine.sources import SourceError, export_tree, resolve, resolve_git

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
       "PATH": "/usr/bin:/bin"}


def sh_git(repo, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True, env=ENV).stdout.strip()


@pytest.fixture
def upstream(tmp_path, monkeypatch):
    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "upstream"
    repo.mkdir()
    sh_git(repo, "init", "--quiet", "--initial-branch=master")
    for i in range(3):
        (repo / "f.txt").write_text(str(i))
        sh_git(repo, "add", ".")
        sh_git(repo, "commit", "--quiet", "-m", f"c{i}")
        sh_git(repo, "tag", f"t{i}")
    sh_git(repo, "checkout", "--quiet", "-b", "feature", "t1")
    (repo / "g.txt").write_text("pr")
    sh_git(repo, "add", ".")
    sh_git(repo, "commit", "--quiet", "-m", "pr")
    sh_git(repo, "update-ref", "refs/pull/7/head", "HEAD")     # what GitHub serves for PR 7
    sh_git(repo, "checkout", "--quiet", "master")
    return repo


@pytest.mark.parametrize("kind, value, rev", [
    ("branch", "master", "master"), ("branch", "feature", "feature"), ("tag", "t1", "t1"),
    ("ref", "t0", "t0"), ("pr", "7", "refs/pull/7/head"), ("ref", "refs/pull/7/head", "refs/pull/7/head"),
])
def test_each_ref_kind_resolves_to_the_commit_git_names(upstream, kind, value, rev):
    resolved = resolve_git(str(upstream), kind, value)
    assert resolved.commit == sh_git(upstream, "rev-parse", f"{rev}^{{commit}}")


def test_a_commit_and_a_file_url_resolve_like_a_local_path(upstream):
    sha = sh_git(upstream, "rev-parse", "t2")
    assert resolve_git(upstream.as_uri(), "commit", sha[:10]).commit == sha
    assert resolve_git(str(upstream), "commit", sha).mirror == resolve_git(upstream.as_uri(), "tag", "t2").mirror


def test_a_moved_branch_is_fetched_again(upstream):
    first = resolve_git(str(upstream), "branch", "master").commit
    (upstream / "f.txt").write_text("new")
    sh_git(upstream, "commit", "--quiet", "-am", "more")
    assert resolve_git(str(upstream), "branch", "master").commit != first


def test_unknown_refs_and_missing_repos_are_source_errors(upstream, tmp_path):
    with pytest.raises(SourceError, match="no-such"):
        resolve_git(str(upstream), "branch", "no-such")
    with pytest.raises(SourceError):
        resolve_git(str(tmp_path / "nothing-here"), "branch", "main")


def test_export_tree_checks_out_exactly_the_commit(upstream, tmp_path):
    resolved = resolve_git(str(upstream), "tag", "t0")
    export_tree(resolved, tmp_path / "tree")
    assert (tmp_path / "tree" / "f.txt").read_text() == "0"
    assert sh_git(tmp_path / "tree", "rev-parse", "HEAD") == resolved.commit


@pytest.mark.engines
def test_sdist_repo_has_one_reproducible_commit_per_version():
    """Two agents preparing the same sdists get the same commit shas (fixed author/date)."""
    src = {"sdist": {"package": "llama-cpp-python", "versions": ["0.3.35", "0.3.36"]}}
    a = resolve(src, "tag", "v0.3.35")
    b = resolve(src, "tag", "v0.3.36")
    assert a.mirror == b.mirror and a.commit != b.commit
    assert sh_git(b.mirror, "rev-parse", f"{b.commit}~1") == a.commit
    assert (a.upstream_commit, b.upstream_commit) == ("4df29be4f", "0c1e57098")
    assert b.commit == "88aff4be4fc7aaa86a6fd754304802fe829cfd97"
