"""Checks on single values of a matrix file, as pydantic types whose errors are one line.

The checks on values that reach argv, git or store keys are ``agent.spec.flags``'s (the
agent runs the same ones); here they become after-validators with the same messages, and
each registry argument type gets its matrix type (``arg_type``).
"""
from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from agent.spec.flags import (GPUS_BOUNDS, TINY_PARAM_MAX, cmake_flag_problem, commit_problem, git_ref_problem,
                              name_problem, path_problem, ref_name_problem, repo_problem, version_problem)
from agent.spec.printable import shown
from agent.spec.registry import BOOL, CHOICE, INT, KV_TYPE, OVERRIDES, TENSOR_SPLIT, ArgSpec
from coordinator.matrix.vocabulary import KNOWN_QUANTS, KV_TYPES, MATRIX_NAME_MAX

SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_TS = re.compile(r"[0-9]+(\.[0-9]+)?(/[0-9]+(\.[0-9]+)?)*")


def fail(message: str):
    """Raise a pydantic error whose text is exactly ``message``."""
    raise PydanticCustomError("matrix", message)


def did_you_mean(word: str, candidates, *, fold_case: bool = False) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""`` when none is close."""
    cands = list(candidates)
    if fold_case:
        folded = {c.upper(): c for c in cands}
        hit = difflib.get_close_matches(str(word).upper(), list(folded), n=1, cutoff=0.6)
        return f"; did you mean {folded[hit[0]]!r}?" if hit else ""
    hit = difflib.get_close_matches(str(word), cands, n=1, cutoff=0.6)
    return f"; did you mean {hit[0]!r}?" if hit else ""


def _check(problem_of):
    """A pydantic after-validator from an ``agent.spec.flags`` check, with the check's message."""
    def check(v: str) -> str:
        problem = problem_of(v)
        if problem:
            fail(problem)
        return v
    return check


_name = _check(name_problem)


def matrix_name(v: str) -> str:
    _name(v)
    if len(v) > MATRIX_NAME_MAX:
        fail(f"the matrix name is longer than {MATRIX_NAME_MAX} characters (its run id must stay a name)")
    return v


def canonical(table, what: str):
    """A check that accepts a word of ``table`` in any case and gives its spelling there."""
    lookup = {t.lower(): t for t in table}

    def check(v: str) -> str:
        hit = lookup.get(v.lower())
        if hit is None:
            fail(f"{shown(v)} is not a known {what}" + did_you_mean(v, table, fold_case=True))
        return hit
    return check


def _git_ref(v: str) -> str:
    problem = git_ref_problem(v)
    if problem:
        fail(f"{shown(v)} is not a valid git ref name: {problem}")
    return v


def _commit(v: str) -> str:
    _check(commit_problem)(v)
    return v.lower()


ref_name = _check(ref_name_problem)
_cmake_flag = _check(cmake_flag_problem)
git_repo = _check(repo_problem)
version = _check(version_problem)


def model_path(v: str) -> str:
    one_line(v)
    problem = path_problem(v)
    if problem:
        fail(f"not a usable model path: {problem}")
    return v


def _ts(v: str) -> str:
    if not _TS.fullmatch(v):
        fail(f"{shown(v)} is not a tensor split: numbers joined by '/', e.g. '3/1'")
    return v


def one_line(v: str) -> str:
    if not v or "\n" in v or "\r" in v or "\0" in v:
        fail("must be a non-empty single-line string")
    return v


Name = Annotated[str, AfterValidator(_name)]
Quant = Annotated[str, AfterValidator(canonical(KNOWN_QUANTS, "quant type"))]
KvType = Annotated[str, AfterValidator(canonical(KV_TYPES, "KV cache type"))]
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
Gpus = Annotated[int, Field(ge=GPUS_BOUNDS[0], le=GPUS_BOUNDS[1])]
TinyDim = Annotated[int, Field(ge=1, le=TINY_PARAM_MAX)]
TensorSplit = Annotated[str, AfterValidator(_ts)]
OneLine = Annotated[str, AfterValidator(one_line)]
CmakeFlag = Annotated[str, AfterValidator(_cmake_flag)]
GitRef = Annotated[str, AfterValidator(_git_ref)]
Commit = Annotated[str, AfterValidator(_commit)]


def arg_type(arg: ArgSpec) -> Any:
    """The matrix type of one registry argument (the bounds the agent enforces too)."""
    if arg.type == INT:
        return Annotated[int, Field(ge=arg.bounds[0], le=arg.bounds[1])]
    if arg.type == BOOL:
        return bool
    if arg.type == CHOICE:
        return Literal[arg.choices]
    if arg.type == KV_TYPE:
        return KvType
    if arg.type == TENSOR_SPLIT:
        return TensorSplit
    if arg.type == OVERRIDES:
        return Annotated[str, Field(max_length=arg.max_length), AfterValidator(one_line)]
    raise TypeError(f"argument {arg.name!r} has type {arg.type!r}, which the matrix has no type for")


class Strict(BaseModel):
    """No coercion ("4" is not 4, true is not 1) and no unknown keys: typos must fail loudly."""
    model_config = ConfigDict(strict=True, extra="forbid")
