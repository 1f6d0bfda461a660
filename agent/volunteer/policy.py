"""The machine owner's policy for a volunteer agent: what may run here, and when.

The owner decides, not the coordinator. This module reads the policy file and says when a
cell may start (windows, hours a day, idle, disk); which cells may run is the offer rule
(agent.volunteer.offer), which the coordinator applies too.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Annotated

import psutil
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from agent.engine.cache_prune import cache_size, prune
from agent.spec.printable import shown
from agent.spec.yaml_lines import DuplicateKey, Lines, MatrixError, format_key, load_with_lines
from agent.volunteer.owner_time import (Ledger, duration_text, in_windows, local_time, next_window_start,
                              parse_window)
from agent.volunteer.source_names import check_source


class PolicyError(ValueError):
    """A policy file that cannot be used; ``str()`` is one line: ``file:line: key: message``."""


# ---------------------------------------------------------------- the policy

def _check_window(text: str) -> str:
    parse_window(text)
    return text


Source = Annotated[str, AfterValidator(check_source)]
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

def _error(file: str, line: int | None, key: str | None, message: str) -> PolicyError:
    """A PolicyError in yaml_lines' one-line format, its message bounded as a matrix error's is."""
    return PolicyError(str(MatrixError(file, line, key, message)))


def _line_of(path: tuple, lines: Lines) -> int | None:
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
        message += f", got {type(error['input']).__name__} {shown(error['input'])}"
    return message


def load_policy(path: str | Path) -> OwnerPolicy:
    """Read and check an owner policy file; every problem is a one-line :class:`PolicyError`.
    The YAML is read as a matrix is (agent.spec.yaml_lines): bounded in size and nodes, no
    duplicate keys, no control or bidi characters, and keys that could break the line quoted."""
    where = str(path)
    try:
        data, lines = load_with_lines(path, "policy file")
    except DuplicateKey as exc:       # the line already names the key
        raise _error(exc.file, exc.line, exc.key, f"duplicate key (first given on line {exc.first_line})") from None
    except MatrixError as exc:
        raise PolicyError(str(exc)) from None
    if data is None:
        raise _error(where, None, None, "the policy is empty; at least 'repos' is required")
    if not isinstance(data, dict):
        raise _error(where, lines.get((), 1), None,
                     f"the policy must be a mapping of keys, not a {type(data).__name__}")
    try:
        return OwnerPolicy.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        loc = tuple(first["loc"])
        model = IdlePolicy if loc[:1] == ("idle",) and len(loc) > 1 else OwnerPolicy
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise _error(where, _line_of(loc, lines), format_key(loc) or "<policy>",
                     f"{_message(first, model)}{more}") from None


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
