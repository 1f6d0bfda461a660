"""Source checkout: a per-agent mirror of each engine repo, refs resolved to commits.

A source is a git URL, a local path / file:// repo, or a registry sdist that vendors the
engine (llama-cpp-python, ik-llama-cpp-python). Sdists are turned into a local git repo
with one commit per version (tag ``v<version>``) so that the rest of the pipeline sees an
ordinary repo - the sdists' quirks are handled here and nowhere else.
"""
from __future__ import annotations

import contextvars
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent.engine.gitutil import GitError, git, git_ok
from agent.spec.flags import git_ref_problem
from agent.paths import cache_dir

# Upstream commits of sdists whose tarball does not carry them (their .git is absent).
KNOWN_SDIST_UPSTREAM = {("ik-llama-cpp-python", "0.1.5"): "55d3c05bf"}

IK_BUILD_INFO_GEN = """\
# Added by hwmatrix: ik-llama-cpp-python's sdist lacks this script, which common/ needs.
include(${CMAKE_CURRENT_SOURCE_DIR}/cmake/build-info.cmake)
set(TEMPLATE_FILE "${CMAKE_CURRENT_SOURCE_DIR}/common/build-info.cpp.in")
set(OUTPUT_FILE "${CMAKE_CURRENT_SOURCE_DIR}/common/build-info.cpp")
configure_file(${TEMPLATE_FILE} ${OUTPUT_FILE})
"""


# Fixed author and dates make sdist commits identical on every agent: same version, same sha.
FIXED_IDENTITY = {
    "GIT_AUTHOR_NAME": "hwmatrix", "GIT_AUTHOR_EMAIL": "hwmatrix@localhost",
    "GIT_COMMITTER_NAME": "hwmatrix", "GIT_COMMITTER_EMAIL": "hwmatrix@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
}


class SourceError(RuntimeError):
    """A source could not be fetched or a ref could not be resolved."""


@dataclass(frozen=True)
class ResolvedSource:
    repo_id: str        # stable identity of the repo (URL, or sdist package + versions)
    mirror: Path        # local git repo holding the commit
    commit: str         # full sha
    upstream_commit: str | None = None   # for sdist trees: the engine commit they vendor


@contextmanager
def cache_lock(path: Path):
    """Serialize work on one cache entry across processes (several agents on one box)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _slug(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- git sources

# A volunteer whose owner allows no fork PRs: a commit must be on a branch or tag of the
# repo, not only on a pull request ref an earlier fetch left in the mirror.
_PUBLISHED_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("hwmatrix_published_only", default=False)


@contextmanager
def published_commits_only(enabled: bool = True):
    token = _PUBLISHED_ONLY.set(enabled)
    try:
        yield
    finally:
        _PUBLISHED_ONLY.reset(token)


def normalize_repo(repo: str) -> str:
    """Local paths become absolute file:// URLs so one repo has one identity."""
    if "://" in repo or repo.startswith("git@"):
        return repo
    return Path(repo).expanduser().resolve().as_uri()


def _ref_refspecs(ref_kind: str, value: str) -> list[str]:
    if ref_kind == "pr":
        return [f"+refs/pull/{int(value)}/head:refs/pull/{int(value)}/head"]
    if ref_kind == "ref" and value.startswith("refs/") and not value.startswith(("refs/heads/", "refs/tags/")):
        return [f"+{value}:{value}"]           # e.g. refs/pull/N/head given as a plain ref
    return ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]


def _rev_name(ref_kind: str, value: str) -> str:
    if ref_kind == "pr":
        return f"refs/pull/{int(value)}/head"
    if ref_kind == "branch":
        return f"refs/heads/{value}"
    if ref_kind == "tag":
        return f"refs/tags/{value}"
    return value


def resolve_git(repo: str, ref_kind: str, value: str) -> ResolvedSource:
    """Mirror ``repo`` (fetching what the ref needs) and resolve the ref to a commit."""
    url = normalize_repo(repo)
    mirror = cache_dir("repos") / _slug(url)
    with cache_lock(mirror.with_suffix(".lock")):
        if not (mirror / "HEAD").exists():
            shutil.rmtree(mirror, ignore_errors=True)
            try:
                git("init", "--bare", "--quiet", str(mirror))
                git("remote", "add", "origin", url, cwd=mirror)
            except GitError as exc:
                raise SourceError(f"cannot create a mirror of {url}: {exc}") from exc
        try:
            git("fetch", "--quiet", "--force", "origin", *_ref_refspecs(ref_kind, value), cwd=mirror)
        except GitError as exc:
            # A known commit can still be built from an earlier fetch when the remote is down.
            if ref_kind != "commit":
                raise SourceError(f"cannot fetch {ref_kind} {value!r} from {url}: {exc}") from exc
        try:
            commit = git("rev-parse", "--verify", "--quiet", _rev_name(ref_kind, value) + "^{commit}", cwd=mirror)
        except GitError:
            commit = ""
        if not commit:
            raise SourceError(f"{ref_kind} {value!r} not found in {url}")
        if ref_kind == "commit" and _PUBLISHED_ONLY.get() and not git(
                "for-each-ref", "--count=1", "--contains", commit, "refs/heads", "refs/tags", cwd=mirror):
            raise SourceError(f"commit {value} is on no branch or tag of {url} (pull request code?); "
                              "the owner's policy allows no fork PRs")
        upstream = None
        try:
            message = git("log", "-1", "--format=%B", commit, cwd=mirror)
            for line in message.splitlines():
                if line.startswith("Upstream-Commit: "):
                    upstream = line.split(": ", 1)[1].strip()
        except GitError:
            pass
    return ResolvedSource(repo_id=url, mirror=mirror, commit=commit, upstream_commit=upstream)


def export_tree(resolved: ResolvedSource, dest: Path) -> None:
    """A private working tree of one commit (ik writes build-info.cpp into its tree)."""
    if dest.exists():
        shutil.rmtree(dest)
    git("clone", "--quiet", "--shared", "--no-checkout", str(resolved.mirror), str(dest))
    git("-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", resolved.commit, cwd=dest)


# ---------------------------------------------------------------- registry sdists

def sdist_repo_id(package: str, versions: list[str]) -> str:
    return f"sdist:{package}@{','.join(versions)}"


def _download_sdist(package: str, version: str) -> Path:
    """The sdist tarball, from HWMATRIX_SDIST_DIR (air-gapped sites) or the package registry."""
    names = {f"{package.replace('-', '_')}-{version}.tar.gz", f"{package}-{version}.tar.gz"}
    search = [Path(p) for p in os.environ.get("HWMATRIX_SDIST_DIR", "").split(os.pathsep) if p]
    store = cache_dir("sdists")
    for folder in [*search, store]:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         f"{package}=={version}", "-d", str(store)],
        capture_output=True, text=True,
    )
    for name in names:
        if (store / name).is_file():
            return store / name
    raise SourceError(f"cannot download the sdist {package}=={version}: "
                      f"{(proc.stderr or proc.stdout).strip()[-400:]}")


def _vendored_tree(unpacked: Path) -> Path:
    vendor = next(unpacked.iterdir()) / "vendor"
    candidates = [d for d in sorted(vendor.iterdir()) if (d / "CMakeLists.txt").is_file() and (d / "ggml").is_dir()]
    if len(candidates) != 1:
        raise SourceError(f"expected one engine tree under {vendor}, found {[c.name for c in candidates]}")
    return candidates[0]


def _upstream_commit(unpacked: Path, tree: Path, package: str, version: str) -> str | None:
    head = next(unpacked.iterdir()) / ".git" / "modules" / "vendor" / tree.name / "HEAD"
    if head.is_file():
        return head.read_text().strip()[:9]
    return KNOWN_SDIST_UPSTREAM.get((package, version))


def _fix_vendored_tree(tree: Path, upstream: str | None) -> None:
    """Make the vendored tree build like an upstream checkout, offline."""
    gen = tree / "common" / "cmake" / "build-info-gen-cpp.cmake"
    if (tree / "common" / "build-info.cpp.in").is_file() and not gen.exists():
        gen.parent.mkdir(parents=True, exist_ok=True)
        gen.write_text(IK_BUILD_INFO_GEN)
    build_info = tree / "cmake" / "build-info.cmake"
    if upstream and build_info.is_file():
        # The local repo's own sha and count mean nothing upstream: report the vendored
        # engine commit instead (build number unknown for a depth-1 vendored copy).
        build_info.write_text(build_info.read_text() + (
            "\n# Added by hwmatrix: this tree is a vendored copy of upstream commit "
            f"{upstream}.\nset(BUILD_COMMIT \"{upstream}\")\nset(BUILD_NUMBER 0)\n"))


def prepare_sdist_repo(package: str, versions: list[str]) -> Path:
    """A local git repo with one commit per sdist version, in the order given, tagged v<version>."""
    repo = cache_dir("sdist-repos") / f"{package}-{_slug(','.join(versions))}"
    with cache_lock(repo.with_suffix(".lock")):
        if (repo / ".git").is_dir():
            tags = set(git("tag", "--list", cwd=repo).split())
            if {f"v{v}" for v in versions} <= tags:
                return repo
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir(parents=True)
        git("init", "--quiet", "--initial-branch=main", cwd=repo)
        for version in versions:
            tarball = _download_sdist(package, version)
            with tempfile.TemporaryDirectory(dir=cache_dir("tmp")) as tmp:
                unpacked = Path(tmp)
                with tarfile.open(tarball) as archive:
                    archive.extractall(unpacked, filter="data")
                tree = _vendored_tree(unpacked)
                upstream = _upstream_commit(unpacked, tree, package, version)
                for child in repo.iterdir():
                    if child.name != ".git":
                        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
                shutil.copytree(tree, repo, dirs_exist_ok=True, symlinks=True,
                                ignore=shutil.ignore_patterns(".git"))
                _fix_vendored_tree(repo, upstream)
            git("add", "--all", "--force", ".", cwd=repo)
            git("commit", "--quiet", "--allow-empty", "-m",
                f"{tree.name} vendored by {package} {version}\n\nUpstream-Commit: {upstream or 'unknown'}",
                cwd=repo, env=FIXED_IDENTITY)
            git("tag", f"v{version}", cwd=repo)
    return repo


def resolve(source: dict, ref_kind: str, value: str) -> ResolvedSource:
    """Resolve a ref of an engine source (``{"repo": ...}`` or ``{"sdist": {package, versions}}``)."""
    if source.get("sdist"):
        sd = source["sdist"]
        repo = prepare_sdist_repo(sd["package"], list(sd["versions"]))
        resolved = resolve_git(str(repo), ref_kind, value)
        return ResolvedSource(sdist_repo_id(sd["package"], list(sd["versions"])), resolved.mirror,
                              resolved.commit, resolved.upstream_commit)
    return resolve_git(source["repo"], ref_kind, value)


# ---------------------------------------------------------------- commit ranges (bisect)

MAX_RANGE = 100_000      # commits a bisect may span: more is a typo, not a search


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    subject: str
    date: str           # author date, ISO 8601


_FORMAT = "--format=%H%x00%aI%x00%s"


def _info(line: str) -> CommitInfo:
    sha, date, subject = line.split("\0", 2)
    return CommitInfo(sha=sha, subject=subject, date=date)


def commit_info(mirror: Path, commit: str) -> CommitInfo:
    return _info(git("log", "-1", _FORMAT, commit, cwd=mirror))


def first_parent_range(source: dict, good: str, bad: str, limit: int = MAX_RANGE) -> list[CommitInfo]:
    """The commits a bisect searches: good, then every commit of the first-parent chain from
    good to bad, oldest first (so index 0 is good and index -1 is bad). Refuses good == bad,
    a bad that does not descend from good, an unknown ref and a range over ``limit`` commits,
    each with a one-line SourceError."""
    for name, value in (("good", good), ("bad", bad)):
        if problem := (git_ref_problem(value) if value else "it is empty"):
            raise SourceError(f"{name} ref {value!r}: {problem}")
    try:
        lo = resolve(source, "ref", good)
    except SourceError as exc:
        raise SourceError(f"good: {exc}") from None
    try:
        hi = resolve(source, "ref", bad)
    except SourceError as exc:
        raise SourceError(f"bad: {exc}") from None
    mirror = hi.mirror
    if lo.commit == hi.commit:
        raise SourceError(f"good and bad are the same commit ({lo.commit[:12]}): there is no range to search")
    if not git_ok("merge-base", "--is-ancestor", lo.commit, hi.commit, cwd=mirror):
        raise SourceError(f"bad {bad!r} ({hi.commit[:12]}) does not descend from good {good!r} ({lo.commit[:12]}); "
                          "give the older, good commit as --good")
    count = int(git("rev-list", "--count", "--first-parent", f"{lo.commit}..{hi.commit}", cwd=mirror) or 0)
    if count > limit:
        raise SourceError(f"good..bad spans {count:,} commits, more than {limit:,}; give a narrower range")
    listed = git("rev-list", "--first-parent", "--reverse", _FORMAT, "--no-commit-header",
                 f"{lo.commit}..{hi.commit}", cwd=mirror)
    chain = [_info(line) for line in listed.splitlines() if line]
    if not chain or chain[-1].sha != hi.commit or not _first_parent_reaches(mirror, chain[0].sha, lo.commit):
        raise SourceError(f"good {good!r} is not on bad's first-parent chain (it was merged in from a side "
                          "branch); give a good commit on the main line")
    return [commit_info(mirror, lo.commit), *chain]


def _first_parent_reaches(mirror: Path, first: str, good: str) -> bool:
    """The oldest listed commit's first parent is good: the chain really starts at good."""
    return git("rev-parse", f"{first}^1", cwd=mirror, check=False) == good
