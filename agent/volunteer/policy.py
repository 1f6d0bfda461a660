"""The machine owner's policy for a volunteer agent: what may run here, and when.

The owner decides, not the coordinator: the agent checks every cell spec against this
policy before it fetches anything, and tells the coordinator its terms when it asks for
work so that it is only offered cells that fit. Both sides share one rule
(:func:`terms_allow`), so what the coordinator offers and what the agent accepts agree.
"""
from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agent.engine.cache_prune import cache_size, prune
from agent.volunteer.owner_time import (Ledger, duration_text, in_windows, local_time, next_window_start,
                              parse_window)
from agent.engine.sources import normalize_repo


class PolicyError(ValueError):
    """A policy file that cannot be used; ``str()`` is one line: ``file:line: key: message``."""


# ---------------------------------------------------------------- sources

_PYPI_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_SCP_LIKE = re.compile(r"^(?P<user>[^@/:\s]+@)?(?P<host>[^/:\s]+):(?P<path>[^/].*)$")


def _pypi_id(package: str) -> str:
    """PEP 503 name: Llama_CPP.python and llama-cpp-python are one package."""
    return "pypi:" + re.sub(r"[-_.]+", "-", package.strip()).lower()


def normalize_source(source: str) -> str:
    """One spelling per source, so the owner's list and a cell's repo compare equal:
    lowercase scheme and host, no credentials, no trailing ``/`` or ``.git``; local paths
    become file:// URIs (as agent.engine.sources does); ``pypi:<name>`` gets the PEP 503 name."""
    text = source.strip()
    if text.lower().startswith("pypi:"):
        return _pypi_id(text[5:])
    if "://" in text:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        if parts.port is not None:
            host += f":{parts.port}"
        if parts.username and parts.scheme.lower() not in ("http", "https"):
            host = f"{parts.username}@{host}"       # ssh://git@host: the user is part of the address
        path = _strip_git(parts.path)
        return urlunsplit((parts.scheme.lower(), host, path, parts.query, parts.fragment))
    match = _SCP_LIKE.match(text)
    if match and not text.startswith(("/", "~", ".")):
        return f"{match['user'] or ''}{match['host'].lower()}:{_strip_git(match['path'])}"
    return normalize_repo(text)          # a local path: the file:// URL agent.engine.sources mirrors it as


def _strip_git(path: str) -> str:
    path = path.rstrip("/")
    if path.endswith(".git"):
        path = path[:-4].rstrip("/")
    return path


def _check_source(value: str) -> str:
    text = value.strip()
    if text.lower().startswith("pypi:"):
        if not _PYPI_NAME.match(text[5:]):
            raise ValueError(f"{value!r}: 'pypi:' must be followed by a package name")
    elif "://" in text:
        parts = urlsplit(text)
        if parts.scheme.lower() not in ("https", "http", "ssh", "git", "file"):
            raise ValueError(f"{value!r}: scheme {parts.scheme!r} is not one of https, http, ssh, git, file")
        if parts.scheme.lower() != "file" and not parts.hostname:
            raise ValueError(f"{value!r} has no host")
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r}: a repo URL takes no ?query or #fragment")
    elif not (text.startswith(("/", "~")) or (_SCP_LIKE.match(text) and "@" in text)):
        raise ValueError(f"{value!r} is not a git URL (https://host/owner/repo), "
                         "an absolute path or pypi:<package>")
    return normalize_source(text)


def source_id(engine: dict) -> str:
    """The engine's source as the policy names it: ``pypi:<package>`` for a registry sdist,
    else the normalised repo URL. Raises ValueError for an engine with neither."""
    if not isinstance(engine, dict):
        raise ValueError("engine is not a mapping")   # noqa: TRY004 - one error type for a bad spec
    sdist = engine.get("sdist")
    if sdist is not None:
        package = sdist.get("package") if isinstance(sdist, dict) else None
        if not isinstance(package, str) or not package.strip():
            raise ValueError("engine sdist has no package name")
        return _pypi_id(package)
    repo = engine.get("repo")
    if not isinstance(repo, str) or not repo.strip():
        raise ValueError("engine has neither repo nor sdist")
    return normalize_source(repo)


# ---------------------------------------------------------------- the policy

def _check_window(text: str) -> str:
    parse_window(text)
    return text


Source = Annotated[str, AfterValidator(_check_source)]
WindowText = Annotated[str, AfterValidator(_check_window)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class IdlePolicy(_Strict):
    """Start cells only when the owner is not using the machine."""
    max_load_per_core: float | None = Field(0.5, ge=0)     # 1-min load / cpu count must be below it
    pause_when_users_logged_in: bool = True                # interactive sessions (psutil.users())


class OwnerPolicy(_Strict):
    """What the owner lets run on this machine, and when."""
    repos: list[Source] = Field(min_length=1)   # normalised git URLs or pypi:<package>
    allow_fork_prs: bool = False
    gpus: int = Field(0, ge=0)                  # most GPUs one cell may use; 0: CPU cells only
    windows: list[WindowText] = Field(default_factory=list)   # empty: any time
    max_hours_per_day: float | None = Field(None, gt=0, le=24)
    max_disk_gb: float | None = Field(None, gt=0)             # the agent's cache dir, GB = 10**9 bytes
    idle: IdlePolicy = Field(default_factory=IdlePolicy)


# ---------------------------------------------------------------- loading

def _key_lines(node: Node, path: tuple, lines: dict[tuple, int], where: str, seen_nodes: set[int]) -> None:
    """Map key paths to 1-based lines; refuse duplicate keys (PyYAML keeps the last).
    An aliased node is walked once, so alias bombs stay cheap."""
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else f"<{key_node.id}>"
            line = key_node.start_mark.line + 1
            if key in seen:
                raise PolicyError(f"{where}:{line}: {_format_key(path + (key,))}: "
                                  f"duplicate key (first given on line {seen[key]})")
            seen[key] = lines[path + (key,)] = line
            _key_lines(value_node, path + (key,), lines, where, seen_nodes)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _key_lines(item, path + (i,), lines, where, seen_nodes)


def _format_key(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(path: tuple, lines: dict[tuple, int]) -> int | None:
    """The line of ``path``, else of its nearest parent (a missing key: its mapping)."""
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)


def _message(error: dict, model: type[BaseModel]) -> str:
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(model.model_fields)
        return f"unknown key (allowed: {allowed})"
    if error["type"] == "missing":
        return "required key is missing"
    if error["type"] == "too_short":
        return "must list at least one entry"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"].endswith("_type") or error["type"] in ("bool_parsing", "int_parsing", "float_parsing"):
        message += f", got {type(error['input']).__name__} {error['input']!r}"
    return message


def load_policy(path: str | Path) -> OwnerPolicy:
    """Read and check an owner policy file; every problem is a one-line :class:`PolicyError`."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise PolicyError(f"{where}: cannot read: {exc.strerror or exc}") from None
    lines: dict[tuple, int] = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            lines[()] = node.start_mark.line + 1
            _key_lines(node, (), lines, where, set())
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise PolicyError(f"{where}{line}: YAML syntax error: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise PolicyError(f"{where}: YAML error: {' '.join(str(exc).split())}") from None
    if data is None:
        raise PolicyError(f"{where}: the policy is empty; at least 'repos' is required")
    if not isinstance(data, dict):
        raise PolicyError(f"{where}:{lines.get((), 1)}: the policy must be a mapping of keys, "
                          f"not a {type(data).__name__}")
    try:
        return OwnerPolicy.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        loc = tuple(first["loc"])
        model = IdlePolicy if loc[:1] == ("idle",) and len(loc) > 1 else OwnerPolicy
        line = _line_of(loc, lines)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise PolicyError(f"{where}{f':{line}' if line else ''}: {_format_key(loc) or '<policy>'}: "
                          f"{_message(first, model)}{more}") from None


# ---------------------------------------------------------------- which cells

def lease_terms(policy: OwnerPolicy) -> dict:
    """What the agent sends when asking for work, so it is offered only cells it may run."""
    return {"repos": sorted(set(policy.repos)), "allow_fork_prs": policy.allow_fork_prs, "max_gpus": policy.gpus}


_PR_REF = re.compile(r"^refs/(pull|merge-requests)/")


def _ref_problem(ref: Any, allow_fork_prs: bool) -> str | None:
    if not isinstance(ref, dict):
        return "malformed cell spec: ref is not a mapping"
    kind, value = ref.get("kind"), ref.get("value")
    if kind not in ("ref", "branch", "tag", "commit", "pr") or not isinstance(value, str):
        return f"malformed cell spec: ref kind {kind!r} / value {value!r}"
    # a plain ref such as refs/pull/N/head is fork PR code too
    is_pr = kind == "pr" or (kind in ("ref", "branch", "tag") and bool(_PR_REF.match(value.strip())))
    if is_pr and not allow_fork_prs:
        return (f"ref {ref.get('name', value)!r} is pull request {value!r} (fork code); "
                "the owner does not allow fork PRs")
    return None


def terms_allow(terms: dict, spec: dict) -> str | None:
    """Why ``spec`` falls outside ``terms`` (see :func:`lease_terms`), or None. Never raises:
    a malformed spec or terms is a reason, not a crash. The coordinator and the agent both
    call this, so what is offered and what is accepted follow one rule."""
    if not isinstance(terms, dict):
        return "malformed lease terms: not a mapping"
    repos, allow_prs, max_gpus = terms.get("repos"), terms.get("allow_fork_prs", False), terms.get("max_gpus", 0)
    if (not isinstance(repos, list) or not all(isinstance(r, str) for r in repos)
            or not isinstance(allow_prs, bool) or not isinstance(max_gpus, int) or isinstance(max_gpus, bool)):
        return "malformed lease terms: expected repos (list of str), allow_fork_prs (bool), max_gpus (int)"
    if not isinstance(spec, dict):
        return "malformed cell spec: not a mapping"
    try:
        source = source_id(spec.get("engine"))
        allowed = {normalize_source(r) for r in repos}
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        return f"malformed cell spec: {exc}"
    if source not in allowed:
        return f"source {source} is not in the owner's allowed repos"
    problem = _ref_problem(spec.get("ref"), allow_prs)
    if problem:
        return problem
    gpus = spec.get("gpus")
    if gpus is None:
        gpus = 0
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0:
        return f"malformed cell spec: gpus {gpus!r}"
    if gpus > max_gpus:
        return f"needs {gpus} GPU{'s' if gpus != 1 else ''}, the owner allows {max_gpus}"
    return None


def refusal(policy: OwnerPolicy, spec: dict) -> str | None:
    """Why this cell may not run here (checked before any fetch), or None."""
    return terms_allow(lease_terms(policy), spec)


# ---------------------------------------------------------------- idle and disk

def _own_terminals() -> set[str]:
    """The terminal the agent runs in: its owner's session there is not someone else's use."""
    names = set()
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                names.add(os.ttyname(fd).removeprefix("/dev/"))
        except OSError:
            pass
    return names


def idle_problem(idle: IdlePolicy) -> str | None:
    """Why the machine is not idle enough to start a cell, or None."""
    if idle.max_load_per_core is not None:
        load = psutil.getloadavg()[0] / (os.cpu_count() or 1)
        if load >= idle.max_load_per_core:
            return (f"load {load:.2f} per core is {'above' if load > idle.max_load_per_core else 'at'} "
                    f"{idle.max_load_per_core:g}")
    if idle.pause_when_users_logged_in:
        mine = _own_terminals()
        sessions = [u for u in psutil.users() if (u.terminal or "") not in mine or not u.terminal]
        if sessions:
            shown = ", ".join(f"{u.name} on {u.terminal or u.host or '?'}" for u in sessions[:3])
            shown += ", ..." if len(sessions) > 3 else ""
            return f"{len(sessions)} user{'s' if len(sessions) != 1 else ''} logged in ({shown})"
    return None

def disk_problem(policy: OwnerPolicy, cache_root: Path) -> str | None:
    """Prune the cache down to max_disk_gb; report when it is still over."""
    if policy.max_disk_gb is None:
        return None
    limit = int(policy.max_disk_gb * 1e9)
    cache_root = Path(cache_root)
    if cache_size(cache_root) <= limit:
        return None
    prune(cache_root, limit)
    size = cache_size(cache_root)
    if size <= limit:
        return None
    return (f"the cache {cache_root} holds {size / 1e9:.2f} GB, above the owner's {policy.max_disk_gb:g} GB "
            "even after pruning unused builds, models and work dirs")


# ---------------------------------------------------------------- now?

def window_problem(policy: OwnerPolicy, now: datetime | None = None) -> str | None:
    """Why ``now`` is outside the owner's windows, with the wait until the next one."""
    now = local_time(now)
    if in_windows(policy.windows, now):
        return None
    listed = ", ".join(policy.windows)
    upcoming = next_window_start(policy.windows, now)
    wait = f"; next in {duration_text((upcoming - now).total_seconds())}" if upcoming else ""
    return f"outside the owner's windows ({listed}){wait}"


def hours_problem(policy: OwnerPolicy, ledger: Ledger | None, now: datetime | None = None) -> str | None:
    if policy.max_hours_per_day is None or ledger is None:
        return None
    used = ledger.used_today(now)
    if used >= policy.max_hours_per_day * 3600:
        return (f"the owner's {policy.max_hours_per_day:g} h a day are used "
                f"({duration_text(used)} today)")
    return None


def pause_reason(policy: OwnerPolicy, ledger: Ledger | None, cache_root: Path,
                 now: datetime | None = None) -> str | None:
    """The first reason not to start a cell now (windows, hours, idle, disk), or None."""
    return (window_problem(policy, now) or hours_problem(policy, ledger, now)
            or idle_problem(policy.idle) or disk_problem(policy, cache_root))
