"""Ranges of allowed numbers in hardware specs: ``">=2,<=4"`` (or a bare number meaning ``==``)."""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

from agent.spec.printable import shown
from coordinator.matrix.checks import fail

_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
        ">": operator.gt, "<": operator.lt}
_CLAUSE = re.compile(r"\s*(>=|<=|==|!=|>|<)?\s*([0-9]+(?:\.[0-9]+)?)\s*")


@dataclass(frozen=True)
class Range:
    """A set of allowed values written as ``">=2,<=4"`` (or a bare number meaning ``==``).

    ``integer`` ranges (counts) must admit a whole number; every range lives on >= 0.
    """
    clauses: tuple[tuple[str, float], ...]
    integer: bool = True

    @classmethod
    def parse(cls, value: Any, integer: bool = True) -> "Range":
        if isinstance(value, Range):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            fail(f"expected a number or comparisons like '>=2' or '>=2,<=4', got {shown(value)}")
        if isinstance(value, (int, float)):
            clauses = [("==", float(value))]
        else:
            clauses = []
            for part in value.split(","):
                m = _CLAUSE.fullmatch(part)
                if not m:
                    fail(f"{shown(value)} is not a comparison list like '>=2' or '>=2,<=4'")
                clauses.append((m.group(1) or "==", float(m.group(2))))
        rng = cls(tuple(clauses), integer)
        if rng.is_empty():
            fail(f"{shown(value)} admits no {'whole number' if integer else 'value'}")
        return rng

    def admits(self, x: float | None) -> bool:
        if x is None:
            return False
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return False
        return all(_OPS[op](x, v) for op, v in self.clauses)

    def also(self, op: str, v: float) -> "Range":
        """This range with one more clause (used to ask "does it admit anything >= 1?")."""
        return Range(self.clauses + ((op, float(v)),), self.integer)

    def is_empty(self) -> bool:
        lo, lo_strict, hi, hi_strict = 0.0, False, math.inf, False
        excluded = []
        for op, v in self.clauses:
            if op in (">=", ">", "==") and (v > lo or (v == lo and op == ">")):
                lo, lo_strict = v, op == ">"
            if op in ("<=", "<", "==") and (v < hi or (v == hi and op == "<")):
                hi, hi_strict = v, op == "<"
            if op == "!=":
                excluded.append(v)
        if self.integer:
            first = math.floor(lo) + 1 if lo_strict or lo != math.floor(lo) else int(lo)
            if hi == math.inf:
                return False
            last = math.ceil(hi) - 1 if hi_strict or hi != math.ceil(hi) else int(hi)
            if first > last:
                return True
            if last - first > len(excluded):
                return False
            return all(any(n == e for e in excluded) for n in range(first, last + 1))
        if lo > hi:
            return True
        if lo == hi:
            return lo_strict or hi_strict or lo in excluded
        return False

    def __str__(self) -> str:
        def num(v: float) -> str:
            return str(int(v)) if v == int(v) else str(v)
        if len(self.clauses) == 1 and self.clauses[0][0] == "==":
            return num(self.clauses[0][1])
        return ",".join(op + num(v) for op, v in self.clauses)


IntRange = Annotated[Range, PlainValidator(lambda v: Range.parse(v, integer=True)), PlainSerializer(str)]
GbRange = Annotated[Range, PlainValidator(lambda v: Range.parse(v, integer=False)), PlainSerializer(str)]
