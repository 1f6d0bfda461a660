"""Expansion: the cells of a matrix's axes, include and exclude, exactly as GitHub Actions
expands ``strategy.matrix``, counted before any is built.

Excluded combinations are never built and includes find their combinations through an
index of the axis values, so the work follows the cells made, not the product.
"""
from __future__ import annotations

import math
from typing import Any

from coordinator.matrix.vocabulary import COUNT_STEPS_MAX


def same(a: Any, b: Any) -> bool:
    """Equality that keeps true apart from 1 (as GitHub's JSON values are) and compares mappings whole."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def has_values(params: dict, values: dict) -> bool:
    """Whether a cell's ``params`` hold every one of ``values``: a partial match, as a
    comparison's baseline or candidate names its cells."""
    return all(same(params.get(k), v) for k, v in values.items())


def hashable(v: Any) -> Any:
    """A key equal for two values exactly when :func:`same` says they are the same."""
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, dict):
        return ("dict", frozenset((k, hashable(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return ("list", tuple(hashable(x) for x in v))
    return ("value", v)


class TooIntricate(Exception):
    """Counting the cells the excludes leave took more than ``COUNT_STEPS_MAX`` steps."""


class _Product:
    """The axes' product less the excludes, counted and walked without building what they drop.

    Each exclude entry becomes {axis position: positions of the value it names}. At each axis
    the values that no live entry names lead to the same count, so counting costs about the
    entries times the axes, not the product; walking visits only combinations that survive.
    Counting what many entries leave, each naming values on several axes, is a hard problem
    in general, so it stops at ``COUNT_STEPS_MAX``; with a ``limit`` every count stops there
    (``min(count, limit)``), which is much cheaper when many combinations survive.
    """

    def __init__(self, axes: dict[str, list], exclude: list[dict], limit: int | None = None):
        self.limit = limit
        self.keys, self.values = list(axes), list(axes.values())
        where = []
        for values in self.values:
            positions: dict = {}
            for j, v in enumerate(values):
                positions.setdefault(hashable(v), set()).add(j)
            where.append(positions)
        self.rules: list[dict[int, set]] = []
        for entry in exclude:
            rule = {self.keys.index(k): where[self.keys.index(k)].get(hashable(v), set()) for k, v in entry.items()}
            if all(rule.values()):          # an entry naming a value no axis has drops nothing
                self.rules.append(rule)
        self.last = [max(rule, default=-1) for rule in self.rules]
        self.memo: dict[tuple, int] = {}
        self.steps = 0

    def _split(self, level: int, live: frozenset) -> tuple[frozenset, dict[int, frozenset]]:
        """(entries that do not name this axis, value position -> the entries that name it)."""
        free, named = [], {}
        for r in live:
            positions = self.rules[r].get(level)
            if positions is None:
                free.append(r)
            else:
                for j in positions:
                    named.setdefault(j, []).append(r)
        free = frozenset(free)
        return free, {j: free | frozenset(rs) for j, rs in named.items()}

    def count(self, level: int = 0, live: frozenset | None = None) -> int:
        """Combinations of the axes from ``level`` on that no entry in ``live`` drops."""
        if live is None:
            live = frozenset(range(len(self.rules)))
        key = (level, live)
        if key not in self.memo:
            self.steps += 1 + len(live)
            if self.steps > COUNT_STEPS_MAX:
                raise TooIntricate()
            if any(self.last[r] < level for r in live):
                n = 0                       # an entry matched every axis it names
            elif not live:
                n = math.prod(len(v) for v in self.values[level:])
            else:
                free, named = self._split(level, live)
                rest = len(self.values[level]) - len(named)
                n = rest * self.count(level + 1, free) if rest else 0
                for rules in named.values():
                    if self.limit is not None and n >= self.limit:
                        break
                    n += self.count(level + 1, rules)
            self.memo[key] = n if self.limit is None else min(n, self.limit)
        return self.memo[key]

    def combos(self) -> list[dict]:
        """The surviving combinations in product order (first axis outermost); ``limit=1``
        makes the test for an empty subtree cheapest."""
        out: list[dict] = []
        chosen: list = [None] * len(self.keys)

        def walk(level: int, live: frozenset) -> None:
            if not self.count(level, live):
                return
            if level == len(self.keys):
                out.append(dict(zip(self.keys, chosen)))
                return
            free, named = self._split(level, live)
            for j, value in enumerate(self.values[level]):
                chosen[level] = value
                walk(level + 1, named.get(j, free))

        if self.keys:
            walk(0, frozenset(range(len(self.rules))))
        return out


def _check_exclude_keys(axes: dict[str, list], exclude: list[dict]) -> None:
    for entry in exclude:
        for key in entry:
            if key not in axes:
                raise ValueError(f"exclude key {key!r} is not an axis")


def count_cells(axes: dict[str, list], exclude: list[dict], limit: int | None = None) -> int:
    """How many combinations the axes give once the excludes drop theirs, without building any
    (with ``limit``: at most that many, found faster). An include adds at most one cell each.

    Raises ``TooIntricate`` past ``COUNT_STEPS_MAX`` steps: hundreds of excludes, each
    naming values on several axes of a product of billions, get there.
    """
    _check_exclude_keys(axes, exclude)
    return _Product(axes, exclude, limit).count() if axes else 0


def expand_axes(axes: dict[str, list], include: list[dict], exclude: list[dict]) -> list[dict]:
    """Expand axes exactly as GitHub Actions expands ``strategy.matrix``.

    Cartesian product (first axis outermost); drop combinations matching every key of an
    exclude entry; then each include entry, in order, is merged into every product
    combination whose original axis values it does not contradict (values that earlier
    includes added may be overwritten), or, if it fits none, appended as a new combination.
    Excluded combinations are never built, and includes find their combinations through an
    index of the axis values, so the work follows the cells made, not the product.
    """
    _check_exclude_keys(axes, exclude)
    combos = _Product(axes, exclude, limit=1).combos()
    if not include:
        return combos
    originals = len(combos)
    index: dict[str, dict] = {k: {} for k in axes}      # axis -> value -> combinations holding it
    for i, c in enumerate(combos):
        for k in axes:
            index[k].setdefault(hashable(c[k]), set()).add(i)
    for entry in include:
        hits = None
        for k, v in entry.items():
            if k in axes:
                found = index[k].get(hashable(v), set())
                hits = found if hits is None else hits & found
        if hits is None:
            hits = range(originals)
        for i in hits:
            combos[i].update(entry)
        if not hits:
            combos.append(dict(entry))
    return combos
