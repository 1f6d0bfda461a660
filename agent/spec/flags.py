"""The one copy of the checks on values that reach argv, git or store keys.

The coordinator refuses a matrix with them, and a volunteer agent re-checks every spec it
is handed with them, because it trusts no coordinator: what passes here is inert as an
argv element (no leading '-', no shell syntax, no control characters). Each check returns
why the value is refused, or None; callers turn that into their own error type.
"""
from __future__ import annotations

import difflib
import re
from urllib.parse import unquote, urlsplit

from agent.spec.cmake_options import PATH_OPTIONS as CMAKE_PATH_OPTIONS
from agent.spec.printable import find_steering, is_steering
from agent.spec.registry import ENGINES

__all__ = [
    "CMAKE_ALLOWED_EXACT", "CMAKE_TYPES", "CMAKE_BOOL", "CUDA_ARCH_SPECIAL",
    "REPO_SCHEMES", "NAME_MAX", "PATH_MAX", "GPUS_BOUNDS", "REPS_BOUNDS", "TINY_PARAM_MAX",
    "cmake_options", "cmake_flag_problem", "cuda_architectures_problem", "git_ref_problem", "commit_problem",
    "pr_problem", "ref_value_problem", "ref_name_problem", "repo_problem", "path_problem",
    "name_problem", "version_problem",
]

CMAKE_ALLOWED_EXACT = ("CMAKE_BUILD_TYPE", "CMAKE_CUDA_ARCHITECTURES", "BUILD_SHARED_LIBS")
CMAKE_TYPES = ("BOOL", "STRING", "PATH", "FILEPATH", "INTERNAL", "UNINITIALIZED")
CMAKE_BOOL = ("ON", "OFF", "TRUE", "FALSE", "YES", "NO", "Y", "N", "1", "0")
# CMAKE_CUDA_ARCHITECTURES: compute capabilities without the dot (86, 90a, 120f), each
# optionally -real/-virtual, joined by ';'; or one of cmake's special values.
CUDA_ARCH_SPECIAL = ("native", "all", "all-major", "OFF")
REPO_SCHEMES = ("https", "ssh", "git", "file")
NAME_MAX = 128          # names become store key parts (the store takes up to 200)
PATH_MAX = 4096

# The first k GPUs a cell sees, as (least, most). The tool args' bounds are in the registry
# (agent.spec.registry), which the matrix and the agent both read, so a matrix the
# coordinator accepts is never refused by an agent.
GPUS_BOUNDS = (0, 1024)
# Repetitions inside one engine process (llama-bench -r), given or calibrated: bounded so one
# process cannot be asked to run for ever.
REPS_BOUNDS = (1, 1000)
TINY_PARAM_MAX = 1 << 20     # each dimension of a generated tiny model

# Explicit ASCII classes throughout: Python's \d and \w also match other scripts' digits and letters.
_CMAKE_FLAG = re.compile(r"-D([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?=(.*)", re.S)
_CMAKE_VALUE = re.compile(r"[A-Za-z0-9_.,;=+-]*")
_CMAKE_ITEM_NUMBER = re.compile(r"-[0-9]+(\.[0-9]+)?")
_CUDA_ARCH = re.compile(r"[0-9]+[af]?(-real|-virtual)?")
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_REF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+@-]*")
_COMMIT = re.compile(r"[0-9a-fA-F]{7,40}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]*")
_GIT_SCP = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+")


def _control(text: str) -> bool:
    """Any steering character (agent.spec.printable): a control, a bidi or zero-width mark."""
    return find_steering(text) is not None


_EITHER_ENGINE = tuple(frozenset().union(*sets) for sets in zip(*(e.cmake for e in ENGINES.values())))
_ANY_ENGINE = " or ".join(ENGINES)


def cmake_options(kind: str | None) -> tuple[frozenset, frozenset]:
    """(ON/OFF options, string options) of engine ``kind``; of any engine when None."""
    return _EITHER_ENGINE if kind is None else ENGINES[kind].cmake


def cmake_flag_problem(flag: str, kind: str | None = None) -> str | None:
    """Why ``flag`` is not an allowed ``-D<NAME>[:TYPE]=<VALUE>`` for engine ``kind``
    (a registry engine kind; None: for any). cmake runs it in the agent's build, so
    only the options that engine has pass (``agent.spec.cmake_options``), none that names a file,
    and nothing that could pick a compiler, a launcher or a script."""
    m = _CMAKE_FLAG.fullmatch(flag)
    if not m:
        return f"bad cmake flag {flag!r}: expected -D<NAME>=<VALUE>"
    name, typ, value = m.groups()
    bools, strings = cmake_options(kind)
    if name not in CMAKE_ALLOWED_EXACT and name not in bools and name not in strings:
        refused = f"bad cmake flag {flag!r}: {name} is not allowed"
        if name in CMAKE_PATH_OPTIONS:
            return f"{refused}: it names a file, a directory or a toolchain"
        if kind and name in _EITHER_ENGINE[0] | _EITHER_ENGINE[1]:
            return f"{refused}: it is an option of the other engine, not of {kind}"
        hit = difflib.get_close_matches(name, sorted({*CMAKE_ALLOWED_EXACT, *bools, *strings}), n=1)
        return (f"{refused}: it is not a cmake option of {kind or _ANY_ENGINE}"
                + (f"; did you mean {hit[0]}?" if hit else
                   " (allowed: the engine's GGML_*/LLAMA_* options, " + ", ".join(CMAKE_ALLOWED_EXACT) + ")"))
    if typ is not None and typ.upper() not in CMAKE_TYPES:
        return f"bad cmake flag {flag!r}: unknown cache type {typ!r}"
    if not _CMAKE_VALUE.fullmatch(value):
        return f"bad cmake flag {flag!r}: the value may only hold letters, digits and _.,;=+-"
    if ".." in value:
        return f"bad cmake flag {flag!r}: the value may not hold '..'"
    for item in value.split(";"):
        if item.startswith("-") and not _CMAKE_ITEM_NUMBER.fullmatch(item):
            return f"bad cmake flag {flag!r}: a value (or ';' list item) may not start with '-' unless it is a number"
    if (name in bools or name == "BUILD_SHARED_LIBS") and value.upper() not in CMAKE_BOOL:
        return f"bad cmake flag {flag!r}: {name} is ON or OFF"
    if name == "CMAKE_CUDA_ARCHITECTURES":
        problem = cuda_architectures_problem(value)
        if problem:
            return f"bad cmake flag {flag!r}: {problem}"
    return None


def cuda_architectures_problem(value: str) -> str | None:
    """Why ``value`` is not a CMAKE_CUDA_ARCHITECTURES value, with a hint for '8.6'."""
    if value in CUDA_ARCH_SPECIAL:
        return None
    for arch in value.split(";"):
        if not _CUDA_ARCH.fullmatch(arch):
            hint = (f"; write compute capability {arch} as {arch.replace('.', '')}"
                    if re.fullmatch(r"[0-9]+\.[0-9]+", arch) else "")
            return (f"{arch!r} is not a CUDA architecture (digits such as 86 or 90a, joined by ';', "
                    f"or one of {', '.join(CUDA_ARCH_SPECIAL)}){hint}")
    return None


def git_ref_problem(name: str) -> str | None:
    """Why ``name`` fails ``git check-ref-format`` (plus no leading '-', and no steering
    character: git takes bidi and C1 controls, a terminal shows them as something else)."""
    if not name:
        return "it is empty"
    if name == "@":
        return "it is '@'"
    if name.startswith("-"):
        return "it starts with '-'"
    for bad in ("..", "@{", "//"):
        if bad in name:
            return f"it contains {bad!r}"
    for ch in name:
        if ch in " ~^:?*[\\" or is_steering(ch):
            return f"it contains {ch!r}"
    if name.startswith("/") or name.endswith("/"):
        return "it starts or ends with '/'"
    if name.endswith("."):
        return "it ends with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return "a component starts with '.'"
        if part.endswith(".lock"):
            return "a component ends with '.lock'"
    return None


def commit_problem(value: str) -> str | None:
    """Why ``value`` is not an abbreviated or full commit id."""
    if not _COMMIT.fullmatch(value):
        return f"{value!r} is not a commit id (7 to 40 hex digits)"
    return None


def pr_problem(value: str) -> str | None:
    """Why ``value`` is not a pull request number (it goes into refs/pull/N/head)."""
    if not (value.isascii() and value.isdigit()) or len(value) > 9 or int(value) < 1:
        return f"{value!r} is not a pull request number"
    return None


def ref_value_problem(kind: str, value: str) -> str | None:
    """Why ``value`` cannot be the ``kind`` (ref, branch, tag, commit, pr) git is asked for."""
    if kind == "commit":
        return commit_problem(value)
    if kind == "pr":
        return pr_problem(value)
    problem = git_ref_problem(value)
    return f"{value!r} is not a valid git ref name: {problem}" if problem else None


def ref_name_problem(name: str) -> str | None:
    """Why ``name`` cannot label a ref in cells and reports."""
    if not _REF_NAME.fullmatch(name):
        return f"{name!r} is not a valid ref name (letters, digits and ._/+@-, starting with a letter or digit)"
    if len(name) > NAME_MAX:
        return f"{name[:20]!r}... is not a valid ref name: longer than {NAME_MAX} characters"
    return None


def repo_problem(repo: str) -> str | None:
    """Why ``repo`` is not a git URL or local path git may fetch from: no option (nor a
    host, user or scp path git would hand ssh that starts with '-'), no ``ext::`` style
    transport (those run commands), no scheme outside the known four, and no credentials:
    the URL is copied into every cell spec and record, so a token in it would leak."""
    if not repo or _control(repo):
        return f"{repo!r} is not a repository: empty or holds control characters"
    if repo.startswith("-"):
        return f"{repo!r} is not a repository: it starts with '-'"
    if "://" in repo:
        scheme = repo.split("://", 1)[0].lower()
        if scheme not in REPO_SCHEMES:
            return f"{repo!r}: scheme {scheme!r} is not allowed (use https, ssh, git or file)"
        if any(c.isspace() for c in repo):
            return f"{repo!r} is not a git URL: it holds whitespace"
        return _url_problem(repo, scheme)
    if "::" in repo:
        return f"{repo!r}: git transport syntax '<transport>::' is not allowed"
    user, at, rest = repo.partition("@") if "@" in repo.split("/", 1)[0] else ("", "", repo)
    if at and ":" in user:
        return _credentials("<user>:<password>@" + rest)
    if at and not _GIT_SCP.fullmatch(repo):
        return f"{repo!r} is not a git URL (expected user@host:path)"
    host, colon, path = rest.partition(":")
    if colon and "/" not in host and (host.startswith("-") or path.startswith("-")):   # scp-like, over ssh
        return f"{repo!r} is not a git URL: git would hand ssh a host or path that starts with '-'"
    return None


def _url_problem(repo: str, scheme: str) -> str | None:
    """What is wrong with a ``scheme://`` URL's parts, read the way git reads them
    (percent-decoded, as git decodes them before it calls ssh)."""
    try:
        parts = urlsplit(repo)
        parts.port                        # raises ValueError on a port that is not a number
    except ValueError as err:
        return f"{repo!r} is not a git URL: {err}"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, colon, _ = unquote(userinfo).partition(":")
    if at and (colon or scheme == "https"):
        return _credentials(f"{scheme}://<credentials>@{hostport}{parts.path}")
    host = unquote(parts.hostname or "")
    if scheme != "file" and not host:
        return f"{repo!r} is not a git URL: it names no host"
    if host.startswith("-") or user.startswith("-"):
        return f"{repo!r} is not a git URL: git would hand ssh a host or user that starts with '-'"
    return None


def _credentials(shown: str) -> str:
    return (f"{shown!r}: a repository URL may not hold a user name, password or token (it is copied "
            f"into every cell spec and record); give the plain URL and let git supply the secret "
            f"with a credential helper (git config credential.helper, see gitcredentials(7))")


def path_problem(path: str) -> str | None:
    """Why ``path`` may not name a model file: no way up ('..'), nothing an argv reader
    takes for an option, no control characters."""
    if not path:
        return "the path is empty"
    if _control(path):
        return f"{path!r} holds control characters"
    if path.startswith("-"):
        return f"{path!r} starts with '-'"
    if len(path) > PATH_MAX:
        return f"the path is longer than {PATH_MAX} characters"
    if ".." in path.replace("\\", "/").split("/"):
        return f"{path!r} has a '..' component"
    return None


def name_problem(text: str) -> str | None:
    """Why ``text`` cannot be a name that becomes a store key part or a file name."""
    if not _NAME.fullmatch(text):
        return f"{text!r} is not a valid name (letters, digits, '.', '_', '-')"
    if text in (".", ".."):
        return f"{text!r} is not a valid name: '.' and '..' name directories"
    if len(text) > NAME_MAX:
        return f"{text[:20]!r}... is not a valid name: longer than {NAME_MAX} characters"
    return None


def version_problem(version: str) -> str | None:
    """Why ``version`` is not a registry package version (it becomes tag v<version>)."""
    if not _VERSION.fullmatch(version) or len(version) > NAME_MAX or git_ref_problem("v" + version):
        return f"{version!r} is not a package version"
    return None
