"""Engine command lines and what to read from their output, per engine and tool.

Argv lists only, built from the capability registry (``agent.spec.registry``). Options
that exist in one engine alone are refused for the other, so a matrix never silently
measures something other than what it asked for.
"""
from __future__ import annotations

import math

from agent.spec.cellspec import CellSpec, ToolArgs
from agent.parsers import ParsedOutput, parse_llama_bench_json, parse_sweep_bench
from agent.spec.flags import REPS_BOUNDS
from agent.spec.record import Metric
from agent.spec.registry import ENGINES, TOOLS, missing, tool_argv


class ArgError(ValueError):
    pass


def check_args(kind: str, tool: str, args: ToolArgs) -> None:
    """Refuse an argument or a tool that engine ``kind`` does not have (an unknown kind too)."""
    if kind not in ENGINES:
        raise ArgError(f"{kind!r} is not a known engine kind (known: {', '.join(ENGINES)})")
    wrong, owners = missing(kind, {k for k, v in args if v is not None})
    if wrong:
        raise ArgError(f"{', '.join(sorted(wrong))}: {' or '.join(owners)} options, not available in {kind}")
    if tool not in ENGINES[kind].tools:
        having = [k for k, e in ENGINES.items() if tool in e.tools]
        raise ArgError(f"{tool} exists only in {' or '.join(having)}")


def _argv(spec: CellSpec, binary: str, model: str, reps: int) -> list[str]:
    return tool_argv(spec.tool, spec.engine.kind, binary, model, dict(spec.args), reps, spec.hygiene.warmup)


def invocation(spec: CellSpec, binary: str, model: str, reps: int) -> list[str]:
    """One measuring process: a tool with a repetitions flag (llama-bench -r) does ``reps``
    repetitions itself; one without (sweep-bench measures each N_KV once per process) does one."""
    check_args(spec.engine.kind, spec.tool, spec.args)
    return _argv(spec, binary, model, reps)


def fixed_reps(spec: CellSpec) -> int | None:
    """Repetitions per process known before any run: 1 for a tool without a repetitions flag
    (sweep-bench measures each N_KV once per process), ``per_process`` where the matrix gives
    a number, 1 with calibration off (min_process_s 0). None: the agent calibrates."""
    rep = spec.repetitions
    if TOOLS[spec.tool].reps_flag is None:
        return 1
    if rep.per_process != "auto":
        return rep.per_process
    return 1 if rep.min_process_s == 0 else None


def calibrated_reps(rep_s: float, min_process_s: float) -> int:
    """Repetitions that make one process measure at least ``min_process_s`` at ``rep_s``
    seconds a repetition, within the bounds every agent accepts."""
    want = math.ceil(min_process_s / rep_s - 1e-9) if rep_s > 0 else REPS_BOUNDS[1]
    return max(REPS_BOUNDS[0], min(REPS_BOUNDS[1], want))


def repetition_s(parsed: ParsedOutput) -> float:
    """Seconds the fastest repetition of one process's tests took, model load and warmup
    left out: llama-bench's least samples_ns of each test, summed (tokens / avg_ts where a
    row has none); sweep-bench's T_PP + T_TG (one sweep)."""
    bench = sum(min(r.samples_ns) / 1e9 if r.samples_ns else (r.n_prompt + r.n_gen) / r.avg_ts if r.avg_ts else 0.0
                for r in parsed.bench_rows)
    return bench + sum(r.t_pp + r.t_tg for r in parsed.sweep_rows)


def warmup_invocations(spec: CellSpec, binary: str, model: str) -> list[list[str]]:
    """Untimed runs before the measured ones (hygiene.warmup beyond the tool's own pass)."""
    extra = max(0, spec.hygiene.warmup - 1)
    return [_argv(spec, binary, model, 1)] * extra


def _bench_samples(outputs: list[ParsedOutput]) -> tuple[dict, dict, dict]:
    """Each llama-bench row's repetitions, by metric: pp (no generation), tg (no prompt), pg."""
    samples: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}
    tests: dict[str, str] = {}
    for out in outputs:
        for row in out.bench_rows:
            name = "pp_tps" if row.n_gen == 0 else "tg_tps" if row.n_prompt == 0 else "pg_tps"
            values = row.samples_ts or ([row.avg_ts] if row.avg_ts is not None else [])
            samples.setdefault(name, []).extend(values)
            sizes.setdefault(name, []).append(len(values))
            tests[name] = row.test
    return samples, sizes, tests


def _sweep_samples(outputs: list[ParsedOutput]) -> tuple[dict, dict, dict]:
    """sweep-bench's first N_KV row of each process, one sample each."""
    first_rows = [out.sweep_rows[0] for out in outputs if out.sweep_rows]
    if not first_rows:
        return {}, {}, {}
    first = first_rows[0]
    tests = {"pp_tps": f"pp{first.pp}@kv{first.n_kv} (sweep)", "tg_tps": f"tg{first.tg}@kv{first.n_kv} (sweep)"}
    samples = {"pp_tps": [r.speed_pp for r in first_rows], "tg_tps": [r.speed_tg for r in first_rows]}
    return samples, {name: [1] * len(first_rows) for name in samples}, tests


# A tool's output form (registry ToolSpec.output) -> (its parser, its samples by metric).
READERS = {
    "llama-bench json": (parse_llama_bench_json, _bench_samples),
    "sweep-bench table": (parse_sweep_bench, _sweep_samples),
}


def parse_output(tool: str, stdout: str, stderr: str) -> ParsedOutput:
    """The tool's results from the stream it prints them on (sweep-bench: stderr, then stdout)."""
    spec = TOOLS[tool]
    parse = READERS[spec.output][0]
    return parse(stdout if spec.stream == "stdout" else stderr + "\n" + stdout)


def metrics_from(tool: str, outputs: list[ParsedOutput]) -> dict[str, Metric]:
    """pp_tps / tg_tps with every repetition's value and the process it came from
    (one output per process)."""
    samples, sizes, tests = READERS[TOOLS[tool].output][1](outputs)
    return {name: Metric.from_samples(tests[name], values, process_sizes=sizes[name])
            for name, values in samples.items()}
