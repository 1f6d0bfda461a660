"""From a pydantic error to the one line a user reads: the message, and where it points.

A location is a path into the data as the file spells it (``b`` stays ``b``, union tags
such as ``pair`` drop out), so :mod:`agent.spec.yaml_lines` can find its line.
"""
from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel

from agent.spec.printable import shown
from agent.spec.yaml_lines import Lines
from coordinator.matrix.checks import did_you_mean
from coordinator.matrix.schema import MOVED, AxisValues, Matrix, MatrixAxes, ToolArgs
from coordinator.matrix.vocabulary import ALIASES, SHORT


def _candidate_model(loc: tuple) -> type[BaseModel] | None:
    """The model class that the error at ``loc`` (without its last part) was validating."""
    cands: list[Any] = [Matrix]
    for part in loc:
        nxt: list[Any] = []
        for t in cands:
            t = _unwrap(t)
            for u in (typing.get_args(t) if _is_union(t) else (t,)):
                u = _unwrap(u)
                origin = typing.get_origin(u)
                if isinstance(u, type) and issubclass(u, BaseModel):
                    f = u.model_fields.get(part) or u.model_fields.get(ALIASES.get(part, ""))
                    if f is not None:
                        nxt.append(f.annotation)
                    else:
                        nxt.append(u)  # a union tag such as 'pair': stay on this type
                elif origin is list and isinstance(part, int):
                    nxt.append(typing.get_args(u)[0])
                elif origin is dict:
                    nxt.append(typing.get_args(u)[1])
        cands = nxt
    for t in cands:
        t = _unwrap(t)
        for u in (typing.get_args(t) if _is_union(t) else (t,)):
            u = _unwrap(u)
            if isinstance(u, type) and issubclass(u, BaseModel):
                return u
    return None


def _unwrap(t: Any) -> Any:
    while typing.get_origin(t) is Annotated:
        t = typing.get_args(t)[0]
    return t


def _is_union(t: Any) -> bool:
    return typing.get_origin(t) in (Union, types.UnionType)


def data_path(data: Any, loc: tuple, keep_last: bool) -> tuple:
    """``loc`` reduced to the parts that exist in the data (drops union tags such as 'pair').

    A long name the file spelled short (``batch`` as ``b``) follows the file's spelling.
    """
    path, cur = [], data
    for i, part in enumerate(loc):
        # ``part in SHORT`` first: SHORT.get() gives None, which a YAML null key would match.
        if isinstance(cur, dict) and part not in cur and part in SHORT and SHORT[part] in cur:
            part = SHORT[part]
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
            path.append(part)
        elif (isinstance(cur, list) and isinstance(part, int) and not isinstance(part, bool)
              and 0 <= part < len(cur)):
            cur = cur[part]
            path.append(part)
        elif keep_last and i == len(loc) - 1:
            path.append(part)
    return tuple(path)


def nearest_line(lines: Lines, path: tuple) -> int | None:
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)


def _got(value: Any) -> str:
    return shown(value)


def message(err: dict, data: Any) -> str:
    """The one-line message for pydantic error ``err`` on ``data``."""
    kind, loc = err["type"], err["loc"]
    if kind == "extra_forbidden":
        key = loc[-1]
        parent = data_path(data, loc[:-1], False)
        cur = data
        for p in parent:
            cur = cur[p]
        if key in ALIASES and isinstance(cur, dict) and ALIASES[key] in cur:
            return f"{key!r} and {ALIASES[key]!r} are the same; give one of them"
        model = _candidate_model(loc[:-1])
        if model is Matrix and key in MOVED:
            return (f"a top-level {key!r} is never read: placement reads {MOVED[key]}.{key}; "
                    f"move it under {MOVED[key]}:")
        names = list(model.model_fields) if model else []
        names += [a for a, long in ALIASES.items() if long in names]
        what = ("axis" if model in (MatrixAxes, AxisValues) else "arg" if model is ToolArgs else "key")
        return f"unknown {what} {shown(key)}" + did_you_mean(str(key), names)
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "matrix":
        return msg
    if kind == "too_short":
        return f"needs at least {err['ctx']['min_length']} item"
    if kind == "too_long":
        return f"holds {err['ctx']['actual_length']:,} entries, at most {err['ctx']['max_length']:,} are allowed"
    msg = msg[0].lower() + msg[1:] if msg else msg
    if "input" in err:
        msg += f", got {_got(err['input'])}"
        if kind == "string_type" and isinstance(err["input"], (int, float)):
            msg += " (quote it in YAML)"
    return msg
