"""What a bisect measures, from the command line or from a matrix file with a `bisect:`
section: the base matrix every step is made from, the engine, and the commit range."""
from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from agent.engine.sources import SourceError, first_parent_range
from coordinator.errors import UserError
from coordinator.matrix.oneliner import bench_args, engine_entry, model_entry

DEFAULT_ARGS = {"n_prompt": 32, "n_gen": 16, "threads": 1}
DEFAULT_HYGIENE = {"drop_caches": "prefer", "warmup": 1, "quiet_wait_s": 10}
NOT_ENDS = ("ref", "exclude", "include")


def base_from_options(engine: str | None, repo: str | None, model: str, quant: str | None, args_text: str | None,
                      refs: list[str], min_process_s: float) -> tuple[dict, str]:
    """(base matrix, engine name) from --engine/--repo, -m, --quant and --args."""
    name, model_spec = model_entry(model)
    axes: dict = {}
    if quant:
        axes["quant"] = [quant]
    args = {**DEFAULT_ARGS, **bench_args(shlex.split(args_text or ""))}
    base = {"engines": {"engine": engine_entry(engine, repo, refs)}, "models": {name: model_spec},
            "tool": "llama-bench", "args": args,
            "repetitions": {"min": 3, "max": 20, "until": "verdict", "min_process_s": min_process_s},
            "hygiene": dict(DEFAULT_HYGIENE), "timeout_s": 600, "matrix": axes}
    return base, "engine"


def base_from_matrix(path: str, cells: list[str]) -> tuple[dict, str, dict]:
    """(base matrix, engine name, its bisect: section) from a matrix file; ``cells`` (AXIS=VALUE)
    pick one value of each axis that has several."""
    from coordinator.planning.plan import load_plan

    plan = load_plan(path)              # every problem of the file, one line, file:line: key
    raw = yaml.safe_load(Path(path).read_text())
    section = raw.pop("bisect", None) or {}
    raw.pop("compare", None)
    raw.pop("name", None)
    raw.pop("description", None)
    chosen = dict(c.split("=", 1) for c in cells)
    axes = {}
    for axis, values in (raw.get("matrix") or {}).items():
        if axis in NOT_ENDS:
            continue
        values = values if isinstance(values, list) else [values]
        if axis in chosen:
            values = [v for v in values if str(v).lower() == chosen[axis].lower()]
            if not values:
                raise UserError(f"{path}: --cell {axis}={chosen[axis]}: the matrix has no such value")
        if len(values) != 1:
            raise UserError(f"{path}: axis {axis} has {len(values)} values; a bisect measures one cell: "
                            f"pick one with --cell {axis}=VALUE")
        axes[axis] = values
    unknown = set(chosen) - set(axes)
    if unknown:
        raise UserError(f"{path}: --cell {sorted(unknown)[0]}: no such axis in the matrix")
    raw["matrix"] = axes
    engines = list(plan.matrix.engines)
    engine = section.get("engine") or (engines[0] if len(engines) == 1 else None)
    if engine not in plan.matrix.engines:
        raise UserError(f"{path}: bisect: engine: name one of the engines ({', '.join(engines)})")
    return raw, engine, section


def commit_range(base: dict, engine: str, good: str, bad: str) -> list:
    source = base["engines"][engine]
    source = {"sdist": source["sdist"]} if source.get("sdist") else {"repo": source["repo"]}
    try:
        return first_parent_range(source, good, bad)
    except SourceError as exc:
        raise UserError(str(exc)) from None
