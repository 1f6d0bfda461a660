"""Engine command lines and what to read from their output, per engine and tool.

Argv lists only. Options that exist in one engine alone are refused for the other, so a
matrix never silently measures something other than what it asked for.
"""
from __future__ import annotations

from agent.spec.cellspec import CellSpec, ToolArgs
from agent.parsers import ParsedOutput, parse_llama_bench_json, parse_sweep_bench
from agent.spec.record import Metric

IK_ONLY = ("mla", "amb", "rtr", "fmoe")
MAINLINE_ONLY = ("depth",)


class ArgError(ValueError):
    pass


def _b(value: bool) -> str:
    return "1" if value else "0"


def check_args(kind: str, tool: str, args: ToolArgs) -> None:
    given = {k for k, v in args.model_dump().items() if v is not None}
    if kind == "llama.cpp":
        wrong = given & set(IK_ONLY)
        if wrong:
            raise ArgError(f"{', '.join(sorted(wrong))}: ik_llama.cpp options, not available in llama.cpp")
        if tool == "llama-sweep-bench":
            raise ArgError("llama-sweep-bench exists only in ik_llama.cpp")
    else:
        wrong = given & set(MAINLINE_ONLY)
        if wrong:
            raise ArgError(f"{', '.join(sorted(wrong))}: llama.cpp options, not available in ik_llama.cpp")


def llama_bench_argv(binary: str, kind: str, model: str, args: ToolArgs, reps: int, warmup: int) -> list[str]:
    argv = [binary, "-m", model, "-o", "json", "-r", str(reps)]
    pairs = [("-p", args.n_prompt), ("-n", args.n_gen), ("-t", args.threads), ("-b", args.batch),
             ("-ub", args.ubatch), ("-ngl", args.ngl), ("-ctk", args.ctk), ("-ctv", args.ctv),
             ("-sm", args.sm), ("-ts", args.ts), ("-ot", args.ot), ("-d", args.depth),
             ("-mla", args.mla), ("-amb", args.amb)]
    for flag, value in pairs:
        if value is not None:
            argv += [flag, str(value)]
    for flag, value in (("-fa", args.fa), ("-mmp", args.mmap), ("-rtr", args.rtr), ("-fmoe", args.fmoe)):
        if value is not None:
            argv += [flag, _b(value)]
    if warmup == 0:
        argv += ["--no-warmup"] if kind == "llama.cpp" else ["-w", "0"]
    return argv


def sweep_bench_argv(binary: str, model: str, args: ToolArgs, warmup: int) -> list[str]:
    """ik's llama-sweep-bench takes the common (llama-server style) options."""
    argv = [binary, "-m", model, "-c", str(args.ctx or 512)]
    pairs = [("-t", args.threads), ("-b", args.batch), ("-ub", args.ubatch), ("-ngl", args.ngl),
             ("-ctk", args.ctk), ("-ctv", args.ctv), ("-mla", args.mla), ("-amb", args.amb),
             ("-n", args.n_gen), ("-nrep", args.nrep), ("-sm", args.sm), ("-ts", args.ts), ("-ot", args.ot)]
    for flag, value in pairs:
        if value is not None:
            argv += [flag, str(value)]
    if args.fa is not None:
        argv += ["-fa", "on" if args.fa else "off"]
    if args.rtr:
        argv.append("-rtr")
    if args.fmoe is False:
        argv.append("-no-fmoe")
    if args.mmap is False:
        argv.append("--no-mmap")
    if warmup == 0:
        argv.append("--no-warmup")
    return argv


def invocation(spec: CellSpec, binary: str, model: str, reps: int) -> list[str]:
    """One measuring process: llama-bench does ``reps`` repetitions itself (-r); sweep-bench
    measures each N_KV once per process, so each of its repetitions is a process."""
    check_args(spec.engine.kind, spec.tool, spec.args)
    if spec.tool == "llama-bench":
        return llama_bench_argv(binary, spec.engine.kind, model, spec.args, reps, spec.hygiene.warmup)
    return sweep_bench_argv(binary, model, spec.args, spec.hygiene.warmup)


def next_batch(spec: CellSpec, done: int) -> int:
    """Repetitions the next process should do: ``per_process`` (llama-bench -r), never past
    the cap. sweep-bench measures each N_KV once per process."""
    if spec.tool != "llama-bench":
        return 1
    return max(1, min(spec.repetitions.per_process, spec.repetitions.max - done))


def warmup_invocations(spec: CellSpec, binary: str, model: str) -> list[list[str]]:
    """Untimed runs before the measured ones (hygiene.warmup beyond the tool's own pass)."""
    extra = max(0, spec.hygiene.warmup - 1)
    if spec.tool == "llama-bench":
        argv = llama_bench_argv(binary, spec.engine.kind, model, spec.args, 1, spec.hygiene.warmup)
    else:
        argv = sweep_bench_argv(binary, model, spec.args, spec.hygiene.warmup)
    return [argv] * extra


def parse_output(tool: str, stdout: str, stderr: str) -> ParsedOutput:
    """llama-bench prints JSON on stdout; sweep-bench prints its table on stderr."""
    if tool == "llama-bench":
        return parse_llama_bench_json(stdout)
    return parse_sweep_bench(stderr + "\n" + stdout)


def metrics_from(tool: str, outputs: list[ParsedOutput]) -> dict[str, Metric]:
    """pp_tps / tg_tps with every repetition's value and the process it came from
    (one output per process)."""
    samples: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}
    tests: dict[str, str] = {}
    if tool == "llama-bench":
        for out in outputs:
            for row in out.bench_rows:
                name = "pp_tps" if row.n_gen == 0 else "tg_tps" if row.n_prompt == 0 else "pg_tps"
                values = row.samples_ts or ([row.avg_ts] if row.avg_ts is not None else [])
                samples.setdefault(name, []).extend(values)
                sizes.setdefault(name, []).append(len(values))
                tests[name] = row.test
    else:
        first_rows = [out.sweep_rows[0] for out in outputs if out.sweep_rows]
        if first_rows:
            first = first_rows[0]
            tests = {"pp_tps": f"pp{first.pp}@kv{first.n_kv} (sweep)", "tg_tps": f"tg{first.tg}@kv{first.n_kv} (sweep)"}
            samples = {"pp_tps": [r.speed_pp for r in first_rows], "tg_tps": [r.speed_tg for r in first_rows]}
            sizes = {name: [1] * len(first_rows) for name in samples}
    return {name: Metric.from_samples(tests[name], values, process_sizes=sizes[name])
            for name, values in samples.items()}
