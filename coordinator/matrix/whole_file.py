"""Whole-file checks: what no single section can tell, run once the schema has passed.

Refs name defined engines and are unique, axis values are unique, includes and excludes
and each comparison's baseline and candidate name axes and defined refs and models, the cells fit
``--max-cells`` (counted before any is built), and every cell's settings are ones its
engine kind has (``agent.spec.registry.runs_on``). The first problem raises
:class:`Invalid` at a path into the data as the file spells it.
"""
from __future__ import annotations

from typing import Any

from agent.spec.flags import cmake_flag_problem
from agent.spec.printable import shown
from agent.spec.registry import kinds_running, runs_on
from coordinator.matrix.checks import did_you_mean
from coordinator.matrix.expansion import TooIntricate, count_cells, hashable, same
from coordinator.matrix.vocabulary import COUNT_STEPS_MAX, MAX_CELLS


class Invalid(Exception):
    """A whole-file check failed at ``loc`` (a path into the data as the file spells it)."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc, self.message = loc, message


def check(m, max_cells: int = MAX_CELLS) -> None:
    """The whole-file checks of validated matrix ``m``; the first problem raises :class:`Invalid`."""
    for name, e in m.engines.items():          # each engine takes only its own cmake options
        for j, flag in enumerate(e.build.cmake):
            if problem := cmake_flag_problem(flag, e.kind):
                raise Invalid(("engines", name, "build", "cmake", j), problem)
    refs = m.matrix.ref
    names: set[str] = set()
    for i, r in enumerate(refs):
        if r.engine is None:
            if len(m.engines) > 1:
                raise Invalid(("matrix", "ref", i), f"ref {r.name!r} must name its engine "
                              f"(one of {', '.join(m.engines)})")
        elif r.engine not in m.engines:
            raise Invalid(("matrix", "ref", i, "engine"), f"engine {shown(r.engine)} is not defined under engines"
                          + did_you_mean(r.engine, m.engines))
        if r.name in names:
            raise Invalid(("matrix", "ref", i, "name"), f"ref name {r.name!r} is used twice")
        names.add(r.name)
    axes = m.matrix.axes()
    for axis, values in axes.items():
        seen: set = set()
        for j, v in enumerate(values):
            if hashable(v) in seen:
                raise Invalid(("matrix", axis, j), f"duplicate value {shown(v)} in axis {axis!r}")
            seen.add(hashable(v))
    for j, model in enumerate(m.matrix.model or []):
        if model not in m.models:
            raise Invalid(("matrix", "model", j), f"model {shown(model)} is not defined under models"
                          + did_you_mean(model, m.models))
    for section in ("exclude", "include"):
        for j, entry in enumerate(getattr(m.matrix, section)):
            vals = entry.values()
            if not vals:
                raise Invalid(("matrix", section, j), f"empty {section} entry")
            for k, v in vals.items():
                loc = ("matrix", section, j, k)
                if section == "exclude" and k not in axes:
                    raise Invalid(loc, f"exclude key {k!r} is not an axis of this matrix "
                                  f"(axes: {', '.join(axes)})")
                _check_name(m, k, v, loc)
    excludes = [e.values() for e in m.matrix.exclude]
    try:
        if count_cells(axes, excludes, limit=max_cells + 1) > max_cells:   # stops at max_cells + 1
            try:
                count = f"{count_cells(axes, excludes):,}"
            except TooIntricate:
                count = f"more than {max_cells:,}"
            sizes = " x ".join(str(len(v)) for v in axes.values())
            raise Invalid(("matrix",), f"the matrix expands to {count} cells ({sizes}"
                          + (" less excluded" if excludes else "") + f"), more than the {max_cells:,} "
                          "--max-cells allows; exclude some, or raise --max-cells")
        cells = m.cells()
    except TooIntricate:
        raise Invalid(("matrix", "exclude"), f"the {len(excludes)} exclude entries overlap too much to "
                      f"count the cells they leave within {COUNT_STEPS_MAX:,} steps; merge some") from None
    if len(cells) > max_cells:
        raise Invalid(("matrix", "include"), f"with its include entries the matrix expands to "
                      f"{len(cells):,} cells, more than the {max_cells:,} --max-cells allows")
    if not cells:
        raise Invalid(("matrix",), "the matrix expands to no cells (everything is excluded)")
    for c in cells:
        missing = [k for k in ("ref", "model") if k not in c]
        if missing:
            raise Invalid(_origin(m, c, missing[0]),
                          f"this include matches no combination, so it adds a cell, and that cell "
                          f"has no ref: {shown(c)}" if missing[0] == "ref" else
                          "a 'model' axis is required when there is more than one model")
        _check_engine(m, c)
    for i, comparison in enumerate(m.compare or []):
        _check_comparison(m, axes, i, *comparison.sides())
    if m.repetitions.until == "verdict" and not m.compare:
        raise Invalid(("repetitions", "until"), "until: verdict stops once the comparisons are settled; "
                      "the matrix has no compare")


def _check_comparison(m, axes: dict, i: int, baseline: dict, candidate: dict | None) -> None:
    """Both sides name axes and their values; a candidate names the baseline's axes and differs."""
    # (a single-mapping compare has no index in the file: the error path drops it)
    for side, values in (("baseline", baseline), ("candidate", candidate)):
        if values is None:
            continue
        if not values:
            raise Invalid(("compare", i, side), f"empty {side}: name an axis value, e.g. {{ref: ...}}")
        for k, v in values.items():
            loc = ("compare", i, side, k)
            _check_name(m, k, v, loc)
            if k not in axes:
                raise Invalid(loc, f"{side} key {k!r} is not an axis of this matrix (axes: {', '.join(axes)})")
            if not any(same(v, w) for w in axes[k]):
                raise Invalid(loc, f"{side} {k} {shown(v)} is not a value of axis {k!r}")
    if candidate is None:
        return
    if set(candidate) != set(baseline):
        raise Invalid(("compare", i, "candidate"), f"candidate names {', '.join(sorted(candidate))} but baseline "
                      f"names {', '.join(sorted(baseline))}: a comparison varies the same axes on both sides")
    if all(same(v, baseline[k]) for k, v in candidate.items()):
        raise Invalid(("compare", i, "candidate"), "candidate and baseline are the same cells")


def _check_name(m, key: str, value: Any, loc: tuple) -> None:
    if key == "ref" and value not in m.refs():
        raise Invalid(loc, f"ref {shown(value)} is not defined in matrix.ref" + did_you_mean(value, m.refs()))
    if key == "model" and value not in m.models:
        raise Invalid(loc, f"model {shown(value)} is not defined under models" + did_you_mean(value, m.models))


def _origin(m, cell: dict, key: str) -> tuple:
    """Where in the file ``cell[key]`` came from: an axis item, an include entry, or args/tool."""
    if key in cell:
        values = m.matrix.axes().get(key, [])
        for j, v in enumerate(values):
            if same(v, cell[key]):
                return ("matrix", key, j)
    for j, entry in enumerate(m.matrix.include):
        vals = entry.values()
        if all(k in cell and same(v, cell[k]) for k, v in vals.items()) and (key not in cell or key in vals):
            return ("matrix", "include", j) + ((key,) if key in vals else ())
    if key == "tool":
        return ("tool",)
    if key in m.args.model_fields_set:
        return ("args", key)
    return ("matrix",)


def _check_engine(m, cell: dict) -> None:
    """Every setting of ``cell`` is one its ref's engine kind has (the registry says which)."""
    engine_name, engine = m.engine_of(cell["ref"])
    for key, value in m.cell_settings(cell).items():
        if not runs_on(engine.kind, key, value):
            needs = " or ".join(kinds_running(key, value))
            where = _origin(m, cell, key) if key in cell else (
                ("tool",) if key == "tool" else ("args", key))
            text = str(value).lower() if isinstance(value, bool) else value
            hint = "; exclude that combination" if where[0] == "matrix" else "; set it per ref with include"
            raise Invalid(where, f"{key}={text} needs {needs}, but ref {cell['ref']!r} builds "
                          f"engine {engine_name!r} ({engine.kind}){hint}")
