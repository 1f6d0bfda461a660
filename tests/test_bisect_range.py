"""The commit range a bisect searches (agent.engine.sources.first_parent_range) on real git
repos, and `hwmatrix bisect` refusing bad input with one line and exit 2 before it builds
anything."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from agent.engine.sources import MAX_RANGE, SourceError, first_parent_range
from tests.conftest import hwmatrix
from tests.planted import ENV, git


def commit(repo: Path, name: str) -> str:
    (repo / "f.txt").write_text(name)
    git(repo, "add", "f.txt")
    git(repo, "commit", "--quiet", "-m", name)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def merged(tmp_path, monkeypatch) -> tuple[Path, dict[str, str]]:
    """master: c0 c1 c2 M c3, where M merges side (s1 s2, branched at c1) with --no-ff."""
    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=master")
    shas = {name: commit(repo, name) for name in ("c0", "c1")}
    git(repo, "checkout", "--quiet", "-b", "side")
    (repo / "side.txt").write_text("s")
    git(repo, "add", "side.txt")
    git(repo, "commit", "--quiet", "-m", "s1")
    shas["s1"] = git(repo, "rev-parse", "HEAD")
    shas["s2"] = commit(repo, "s2")
    git(repo, "checkout", "--quiet", "master")
    (repo / "g.txt").write_text("c2")
    git(repo, "add", "g.txt")
    git(repo, "commit", "--quiet", "-m", "c2")
    shas["c2"] = git(repo, "rev-parse", "HEAD")
    git(repo, "merge", "--quiet", "--no-ff", "-X", "theirs", "-m", "M", "side")
    shas["M"] = git(repo, "rev-parse", "HEAD")
    (repo / "h.txt").write_text("c3")
    git(repo, "add", "h.txt")
    git(repo, "commit", "--quiet", "-m", "c3")
    shas["c3"] = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "good", shas["c0"])
    git(repo, "tag", "bad", shas["c3"])
    return repo, shas


def test_range_is_good_first_bad_last_in_first_parent_order(merged):
    """Index 0 is good and -1 is bad; the merge is one step and the side branch's commits
    are not in the range (a bisect cannot land on a commit the main line never had alone)."""
    repo, shas = merged
    chain = first_parent_range({"repo": str(repo)}, "good", "bad")
    assert [c.sha for c in chain] == [shas[n] for n in ("c0", "c1", "c2", "M", "c3")]
    assert [c.subject for c in chain] == ["c0", "c1", "c2", "M", "c3"]
    assert shas["s1"] not in {c.sha for c in chain} and shas["s2"] not in {c.sha for c in chain}
    assert all(c.date[:4].isdigit() and "T" in c.date for c in chain)      # ISO 8601 author dates


def test_range_by_commit_ids_matches_range_by_tags(merged):
    repo, shas = merged
    by_sha = first_parent_range({"repo": str(repo)}, shas["c1"], shas["M"])
    assert [c.sha for c in by_sha] == [shas[n] for n in ("c1", "c2", "M")]


def test_good_on_a_side_branch_is_refused(merged):
    """A good that reached bad only through a merge is not on the first-parent chain."""
    repo, shas = merged
    with pytest.raises(SourceError, match="not on bad's first-parent chain"):
        first_parent_range({"repo": str(repo)}, shas["s1"], "bad")


@pytest.mark.parametrize("good,bad,message", [
    ("bad", "bad", "same commit"),
    ("bad", "good", "does not descend from good"),
    ("good", "no-such-ref", "not found"),
])
def test_bad_ranges_are_one_line_source_errors(merged, good, bad, message):
    repo, _ = merged
    with pytest.raises(SourceError, match=message) as caught:
        first_parent_range({"repo": str(repo)}, good, bad)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- a range too long

def fast_import_chain(repo: Path, count: int) -> None:
    """``count`` empty-tree commits on master, tagged first, before-last and last, in a few seconds."""
    lines = []
    for n in range(1, count + 1):
        message = f"c{n}\n"
        lines += ["commit refs/heads/master", f"mark :{n}", f"committer t <t@t> {1_700_000_000 + n} +0000",
                  f"data {len(message)}", message.rstrip("\n")]
        if n > 1:
            lines.append(f"from :{n - 1}")
        lines.append("")
    for tag, mark in (("first", 1), ("before-last", count - 1), ("last", count)):
        lines += [f"reset refs/tags/{tag}", f"from :{mark}", ""]
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input="\n".join(lines) + "\n", text=True,
                   check=True, capture_output=True, env=ENV)


@pytest.fixture(scope="module")
def long_repo(tmp_path_factory) -> tuple[Path, Path]:
    """(repo, cache): a chain of MAX_RANGE + 2 commits, so first..last spans MAX_RANGE + 1."""
    root = tmp_path_factory.mktemp("long")
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=master")
    fast_import_chain(repo, MAX_RANGE + 2)
    assert git(repo, "rev-list", "--count", "last") == str(MAX_RANGE + 2)
    return repo, root / "cache"


def test_range_over_the_limit_is_refused_and_at_the_limit_accepted(long_repo, monkeypatch):
    """MAX_RANGE + 1 commits after good is a typo, not a search; MAX_RANGE itself is listed whole."""
    repo, cache = long_repo
    monkeypatch.setenv("HWMATRIX_CACHE", str(cache))
    with pytest.raises(SourceError, match=f"spans {MAX_RANGE + 1:,} commits, more than {MAX_RANGE:,}"):
        first_parent_range({"repo": str(repo)}, "first", "last")
    chain = first_parent_range({"repo": str(repo)}, "first", "before-last")
    assert len(chain) == MAX_RANGE + 1
    assert chain[0].subject == "c1" and chain[-1].subject == f"c{MAX_RANGE + 1}"


# ---------------------------------------------------------------- the CLI's refusals

def refused(result, *words: str) -> str:
    """Exit 2 and exactly one stderr line, 'hwmatrix: ...', naming the problem."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hwmatrix: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def bisect_cli(repo: Path, good: str, bad: str, cache: Path, store: Path, *more: str):
    started = time.monotonic()
    result = hwmatrix("bisect", "--repo", str(repo), "--good", good, "--bad", bad, "-m", "tiny",
                      "--store", store.as_uri(), *more, env={"HWMATRIX_CACHE": str(cache),
                                                            "HWMATRIX_SPOOL": str(store.parent / "spool")},
                      timeout=120)
    return result, time.monotonic() - started


def nothing_built(cache: Path, store: Path) -> bool:
    builds = cache / "builds"
    return not (builds.exists() and any(builds.iterdir())) and not (store.exists() and any(store.rglob("*.json")))


@pytest.mark.parametrize("good,bad,words", [
    ("bad", "bad", ("same commit", "no range")),
    ("bad", "good", ("does not descend from good", "--good")),
    ("good", "no-such-ref", ("bad", "no-such-ref", "not found")),
    ("no-such-ref", "bad", ("good", "no-such-ref", "not found")),
])
def test_cli_refuses_a_bad_range_in_one_line_before_any_build(merged, tmp_path, good, bad, words):
    repo, _ = merged
    cache, store = tmp_path / "cli-cache", tmp_path / "store"
    result, seconds = bisect_cli(repo, good, bad, cache, store)
    refused(result, *words)
    assert nothing_built(cache, store)
    assert seconds < 30


def test_cli_refuses_a_range_over_100000_commits_quickly(long_repo, tmp_path):
    repo, cache = long_repo
    store = tmp_path / "store"
    result, seconds = bisect_cli(repo, "first", "last", cache, store)
    refused(result, f"{MAX_RANGE + 1:,} commits", f"more than {MAX_RANGE:,}", "narrower range")
    assert nothing_built(cache, store)
    assert seconds < 30


def bisect_matrix(tmp_path: Path, name: str, repo: Path, rest: str) -> Path:
    """A matrix file on ``repo`` with the tiny model; ``rest`` holds its args, axes and bisect:."""
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"name: {name}\nengines:\n  local: {{kind: llama.cpp, repo: {repo}}}\n"
                      f"models:\n  tiny: {{generate: tiny-llama}}\n{rest}")
    return matrix


def test_cli_matrix_axis_with_two_values_needs_a_cell(merged, tmp_path):
    """A bisect measures one cell: a matrix axis with two values and no --cell is named."""
    repo, _ = merged
    matrix = bisect_matrix(tmp_path, "twoq", repo, """args: {n_prompt: 16, n_gen: 4, threads: 1}
matrix:
  ref: [{name: good, tag: good}]
  quant: [Q8_0, Q4_0]
bisect: {good: good, bad: bad}
""")
    cache, store = tmp_path / "cli-cache", tmp_path / "store"
    result = hwmatrix("bisect", "--matrix", str(matrix), "--store", store.as_uri(),
                      env={"HWMATRIX_CACHE": str(cache)}, timeout=120)
    refused(result, "axis quant", "2 values", "--cell quant=")
    assert nothing_built(cache, store)
    # naming the cell gets past this check (to the range, which is fine here): not the same refusal
    picked = hwmatrix("bisect", "--matrix", str(matrix), "--cell", "quant=Q4_0", "--store", store.as_uri(),
                      "--good", "bad", "--bad", "bad", env={"HWMATRIX_CACHE": str(cache)}, timeout=120)
    refused(picked, "same commit")


def test_without_repo_refs_in_either_order_make_one_sdist_repo_and_a_reversed_range_is_refused(tmp_path):
    """Without --repo the refs name sdist versions; the versions are committed oldest first
    whatever order good and bad came in, so good=v0.3.36 bad=v0.3.35 is 'not a descendant'
    (before: the sdist repo was built in the order given, and the bisect ran backwards)."""
    store = tmp_path / "store"
    result = hwmatrix("bisect", "--good", "v0.3.36", "--bad", "v0.3.35", "-m", "tiny", "--store", store.as_uri(),
                      env={"HWMATRIX_SPOOL": str(tmp_path / "spool")}, timeout=300)
    refused(result, "does not descend from good 'v0.3.36'")
    assert not (store.exists() and any(store.rglob("*.json")))


def test_a_matrix_files_bisect_section_gives_good_and_bad(merged, tmp_path):
    """`--matrix FILE` alone: the range comes from its bisect: section (here a bad ref the repo
    lacks, so the refusal names it, and nothing is built)."""
    repo, _ = merged
    matrix = bisect_matrix(tmp_path, "fromfile", repo, """matrix:
  ref: [{name: good, tag: good}]
bisect: {good: good, bad: no-such-tag, metric: pp_tps}
""")
    cache, store = tmp_path / "cli-cache", tmp_path / "store"
    result = hwmatrix("bisect", "--matrix", str(matrix), "--store", store.as_uri(),
                      env={"HWMATRIX_CACHE": str(cache)}, timeout=120)
    refused(result, "bad:", "'no-such-tag' not found")
    assert nothing_built(cache, store)
