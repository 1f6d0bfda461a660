"""The agent pipeline: source -> build -> model -> hygiene -> run -> parse -> record.

Cells that differ only in their ref (an A/B group) run together: every build and model is
ready before the first measurement, then the cells take turns one engine process at a
time (A B, B A, A B ...), so a noisy neighbour or thermal drift hits both sides alike.
Every failure becomes a record with its status and logs; nothing here raises for a
foreseeable problem, so the sweep goes on.
"""
from __future__ import annotations

import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from agent.engine import interleave, tools

from agent.machine import hygiene, quiet

from agent.engine import models

from agent.engine import sandbox
from agent.engine.build import BuildError, build, build_flags
from agent.spec.cellspec import CellSpec
from agent.spec.registry import QUANTIZE, TOOLS
from agent.parsers import ParseError
from agent.paths import cache_dir
from agent.machine.probe import probe
from agent.spec.record import ResultRecord, ci_half_width_pct, process_means, utc_now
from agent.spec.sequential import SETTLED, SequentialVerdict, sequential_verdict
from agent.engine.runner import engine_env, run_process
from agent.engine.sources import SourceError, resolve
from agent.store.spool import SPOOLED_NOTE, Granter, deliver, spool_record
from agent.store.backends import open_store
from agent.store.keys import log_key, recorded_ok, result_key

Reporter = Callable[[str, str, str], None]     # (cell id, phase, detail)

# Calibration aims this much over min_process_s (from the fastest repetition it saw), so a
# process a little faster than any calibration repetition still measures min_process_s.
CALIBRATION_MARGIN = 1.1
TIMEOUT_SHARE = 0.8         # of the time left after calibration, what min processes may plan to use
SEQUENTIAL_RULE = ("anytime-valid confidence sequence of the paired log-ratio (agent.spec.sequential), "
                   "alpha 0.05, min_effect 2%, equivalence repetitions.equivalence_pct")
PhaseReporter = Callable[[str, str], None]     # (phase, detail) of one cell


def agent_id_for(hostname: str | None) -> str:
    """The agent's name in store keys: its hostname, made safe."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", hostname or "agent")[:60] or "agent"


def _targets(spec: CellSpec) -> list[str]:
    targets = [TOOLS[spec.tool].target]
    if spec.quant and spec.quantizer is None:      # this cell's own build quantizes its model
        targets.append(QUANTIZE)
    return sorted(set(targets) | set(spec.build_targets))


def _gpu_env(gpus: int | None) -> dict[str, str]:
    """The first ``gpus`` GPUs visible to the engine (0: none); None leaves the environment as is."""
    if gpus is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(gpus))}


@dataclass
class _Cell:
    """One cell's state while its group is measured."""
    spec: CellSpec
    record: ResultRecord
    work: Path
    logs: dict[str, Path] = field(default_factory=dict)
    argv: list[str] | None = None       # the tool and model, once prepared; None = failed
    env: dict[str, str] = field(default_factory=dict)
    outputs: list = field(default_factory=list)
    done: int = 0                       # repetitions measured
    processes: int = 0
    reps: int = 1                       # repetitions per process (llama-bench -r): given or calibrated
    calibration: dict = field(default_factory=dict)
    sequential: dict | None = None      # until: verdict - the stopping facts, for the record
    used_s: float = 0.0                 # measuring time spent, against spec.timeout_s
    measuring: bool = False

    def left_s(self) -> float:
        return max(1.0, self.spec.timeout_s - self.used_s)


def run_cell(spec: CellSpec, report: Reporter | None = None) -> ResultRecord:
    """Run one cell and store its record (spooled first); returns the record."""
    return run_cells([spec], report)[0]


def run_cells(specs: list[CellSpec], report: Reporter | None = None, grant: Granter | None = None,
              identity: dict | None = None) -> list[ResultRecord]:
    """Run an A/B group of cells interleaved at the process level; store and return their
    records (in the order given). ``grant`` uploads through the coordinator's presigned
    URLs instead of straight to the store. ``identity`` (a volunteer's ``agent_id`` given by
    the coordinator and its ``agent_key_fingerprint``) makes each record attributable."""
    report = report or (lambda cell_id, phase, detail: None)
    profile = probe()
    identity = identity or {"agent_id": agent_id_for(profile.hostname)}
    me = identity["agent_id"]
    specs = [s for s in specs if _recorded(s, profile.hardware_class, me, grant) is None]
    cells = [_start(spec, profile, identity) for spec in specs]
    for step in (_prepare, _warm_up, _calibrate):
        for cell in cells:
            _guarded(cell, step, report)
    rounds = 0
    order = cells[0].spec.hygiene.order if cells else interleave.DEFAULT
    seed = interleave.group_seed(specs[0].run_id, [c.spec.cell_id for c in cells]) if cells else ""
    for cell in cells:
        cell.record.hygiene["order"] = order
    while any(cell.measuring for cell in cells):
        # each round every cell measures once, in the group's order (interleave.round_order)
        for cell in interleave.round_order(cells, rounds, order, seed):
            if cell.measuring:
                _guarded(cell, _measure_once, report)
        rounds += 1
        if _group_finished(cells):
            break
    _keep_stopping_facts(cells)
    return [_finish(cell, lambda phase, detail: report(cell.spec.cell_id, phase, detail), grant) for cell in cells]


def build_only(spec: CellSpec) -> dict:
    """Source, build and model of one cell, nothing measured: what a bisect asks of a commit
    before it decides whether the commit needs measuring (its code hash may equal an end's).
    A failure is an answer too (a commit that does not build is skipped)."""
    profile = probe()
    cell = _start(spec, profile, {"agent_id": agent_id_for(profile.hostname)})
    try:
        _guarded(cell, _prepare, lambda cell_id, phase, detail: None)
        log = cell.logs.get("build.log") or cell.logs.get("quantizer-build.log")
        tail = Path(log).read_text(errors="replace")[-4000:] if log and Path(log).is_file() else ""
    finally:
        shutil.rmtree(cell.work, ignore_errors=True)
    engine = cell.record.engine
    return {"cell_id": spec.cell_id, "status": cell.record.status, "error": cell.record.error,
            "commit": engine.get("commit"), "code_hash": engine.get("code_hash"),
            "binary_hash": engine.get("binary_hash"), "build_seconds": (engine.get("build") or {}).get("seconds"),
            "cached": (engine.get("build") or {}).get("cached"), "log_tail": tail}


def _recorded(spec: CellSpec, hw_class: str, agent_id: str, grant: Granter | None) -> str | None:
    """Who already has an ok record of ``spec``: this agent, or (one result per class)
    another agent of its class. With grants the coordinator looks, this agent cannot."""
    try:
        if grant is not None:
            ask = {"kind": "recorded", "key": result_key(spec.run_id, spec.cell_id, agent_id), "hw_class": hw_class,
                   "others": spec.one_per_class, "sha256": "", "size": 0}
            return grant([ask])[0].get("recorded_by")
        return recorded_ok(open_store(spec.store_url), spec.run_id, spec.cell_id, hw_class, agent_id,
                           spec.one_per_class)
    except Exception:  # noqa: BLE001 - can't tell: measure; a clash later keeps the new record spooled
        return None


def _start(spec: CellSpec, profile, identity: dict) -> _Cell:
    record = ResultRecord(
        run_id=spec.run_id, matrix={"name": spec.matrix_name, "hash": spec.matrix_hash},
        cell_id=spec.cell_id, agent_id=identity["agent_id"],
        agent_key_fingerprint=identity.get("agent_key_fingerprint"), params=spec.params, status="ok",
        engine={"name": spec.engine.name, "kind": spec.engine.kind, "source": spec.engine.source(),
                "ref": spec.ref.model_dump(), "cmake": list(spec.engine.cmake)},
        model={"name": spec.model.name, "quant": spec.quant},
        tool={"name": spec.tool, "argv": [], "exit_codes": [], "wall_s": [], "cpu_s": [], "started": []},
        hardware=profile.model_dump(), hardware_class=profile.hardware_class,
        timestamps={"started": utc_now()},
    )
    work = Path(tempfile.mkdtemp(prefix=f"{spec.cell_id}-", dir=cache_dir("work")))
    return _Cell(spec=spec, record=record, work=work)


def _guarded(cell: _Cell, step, report: Reporter) -> None:
    """Run one step of a cell that has not failed; an unforeseen bug still yields a record."""
    if cell.record.status != "ok":
        return
    try:
        step(cell, lambda phase, detail: report(cell.spec.cell_id, phase, detail))
    except Exception as exc:  # noqa: BLE001
        cell.record.status, cell.record.error = "run_failed", f"internal error: {type(exc).__name__}: {exc}"
    if cell.record.status != "ok":
        cell.measuring = False


def _prepare(cell: _Cell, report: PhaseReporter) -> None:
    """Source, build and model: everything slow and noisy happens before any measurement."""
    spec, record = cell.spec, cell.record
    report("checkout", f"{spec.engine.name}@{spec.ref.name}")
    try:
        # CUDA flags for this machine's GPUs (or a clear failure without nvcc) before any checkout
        devices = (record.hardware.get("gpus") or {}).get("devices") or []
        flags = build_flags(list(spec.engine.cmake), spec.gpus, devices)
        record.engine["build_flags"] = flags          # what cmake gets beyond the defaults, failed or not
        record.engine["sandboxed"] = sandbox.active()   # built and run under bubblewrap (volunteer work)
        resolved = resolve(spec.engine.source(), spec.ref.kind, spec.ref.value)
        record.engine.update(repo_id=resolved.repo_id, commit=resolved.commit,
                             upstream_commit=resolved.upstream_commit)
        report("build", f"{spec.engine.name}@{spec.ref.name} {resolved.commit[:10]}")
        built = build(resolved, flags, _targets(spec))
    except (SourceError, BuildError) as exc:
        record.status, record.error = "build_failed", str(exc)
        if getattr(exc, "log_path", None):
            cell.logs["build.log"] = exc.log_path
        return
    cell.logs["build.log"] = built.log_path
    record.engine["build"] = {"key": built.key.__dict__ | {"cmake_flags": list(built.key.cmake_flags)},
                              "digest": built.key.digest(), "cached": built.cached,
                              "seconds": round(built.seconds, 2)}
    record.engine["binary_hash"] = built.binary_hash.get(spec.tool)
    record.engine["code_hash"] = built.code_hash
    try:
        report("quantize" if spec.quant else "model", f"{spec.model.name} {spec.quant or ''}".strip())
        quantizer = None
        if spec.quant:      # the build the spec names (one per model and quant), else this cell's own
            quantizer = (models.shared_quantizer(spec.quantizer, devices) if spec.quantizer
                         else models.quantizer(spec.engine, spec.ref, resolved, built))
            record.model["quantized_by"] = quantizer.made_by
        mfile = models.model_file(spec.model, spec.quant, quantizer and quantizer.binary,
                                  quantizer and quantizer.binary_hash)
        record.model.update(path=str(mfile.path), sha256=mfile.sha256, source_sha256=mfile.source_sha256)
        tools.check_args(spec.engine.kind, spec.tool, spec.args)
    except (SourceError, BuildError) as exc:
        q = spec.quantizer
        record.status, record.error = "build_failed", f"the quantizing build {q.engine.name}@{q.ref.name}: {exc}"
        if getattr(exc, "log_path", None):
            cell.logs["quantizer-build.log"] = exc.log_path
        return
    except (models.ModelError, tools.ArgError) as exc:
        record.status, record.error = "run_failed", str(exc)
        return
    cell.argv = [str(built.bin(spec.tool)), str(mfile.path)]
    cell.env = engine_env(_gpu_env(spec.gpus))


def _warm_up(cell: _Cell, report: PhaseReporter) -> None:
    """Hygiene (cache drop, idle wait, cool-down) and untimed runs, then the cell measures."""
    spec, record = cell.spec, cell.record
    report("hygiene", spec.cell_id)
    try:
        record.hygiene = hygiene.prepare(spec.hygiene.drop_caches, spec.hygiene.max_load, spec.hygiene.cooldown_s)
    except hygiene.HygieneError as exc:
        record.status, record.error = "run_failed", str(exc)
        return
    record.hygiene["warmup"] = spec.hygiene.warmup
    warmups = tools.warmup_invocations(spec, *cell.argv)
    for i, argv in enumerate(warmups):
        report("warmup", f"{i + 1}/{len(warmups)}")
        result = run_process(argv, cell.left_s(), cell.work / "warmup.out", cell.work / "warmup.err",
                             env=cell.env, cwd=cell.work)
        cell.used_s += result.wall_s
        if result.timed_out or result.exit_code != 0:
            cell.logs["warmup.err"] = cell.work / "warmup.err"
            record.status = "timeout" if result.timed_out else "run_failed"
            record.error = f"warmup run {i + 1} {'timed out' if result.timed_out else f'exited with {result.exit_code}'}"
            return
    record.hygiene["extra_warmup_runs"] = len(warmups)
    record.timestamps["bench_started"] = utc_now()
    cell.measuring = True


def _calibrate(cell: _Cell, report: PhaseReporter) -> None:
    """Repetitions per process (llama-bench -r): given, or (per_process auto) as many as make
    each measured process measure min_process_s. Timed on processes no statistic counts: one
    at -r 1, then (when that one repetition is shorter than min_process_s) one of about
    min_process_s, whose fastest repetition sets -r, so a process that runs a little faster
    than the calibration still measures min_process_s. -p/-n/-d/ctx stay as they are: they
    define what is measured."""
    spec, rep = cell.spec, cell.spec.repetitions
    flag = TOOLS[spec.tool].reps_flag
    fixed = tools.fixed_reps(spec)
    cell.calibration = {"how": None, "min_process_s": rep.min_process_s, "ms_per_repetition": None,
                        "chosen": fixed, "warning": None}
    if fixed is not None:
        cell.reps = fixed
        cell.calibration["how"] = (
            f"none: {spec.tool} has no repetitions option, one sweep per process (more processes instead)"
            if flag is None else f"none: {spec.tool} {flag} {fixed} as per_process gives"
            if rep.per_process != "auto" else f"none: min_process_s 0, {spec.tool} {flag} 1")
        return
    report("calibrate", f"{spec.tool} {flag} 1, for processes of {rep.min_process_s:g} s or more")
    first = _calibration_process(cell, 1)
    if first is None:
        return
    rep_s, wall_s = first
    load_s = max(0.0, wall_s - rep_s)           # start, model load and the tool's warmup
    runs = [1]
    if rep_s < rep.min_process_s:           # as long as one measured process, if timeout_s has room
        runs.append(_fitting_reps(cell, tools.calibrated_reps(rep_s, rep.min_process_s), rep_s, load_s)[0])
        report("calibrate", f"{spec.tool} {flag} {runs[-1]}, for processes of {rep.min_process_s:g} s or more")
        second = _calibration_process(cell, runs[-1])
        if second is None:
            return
        rep_s = second[0]
    chosen = tools.calibrated_reps(rep_s / CALIBRATION_MARGIN, rep.min_process_s)
    cell.reps, warning = _fitting_reps(cell, chosen, rep_s, load_s)
    cell.calibration.update(how=f"{spec.tool} {flag}", ms_per_repetition=round(rep_s * 1000, 3), chosen=cell.reps,
                            load_s=round(load_s, 4), processes=runs, warning=warning)
    if warning:
        report("warning", warning)


def _calibration_process(cell: _Cell, reps: int) -> tuple[float, float] | None:
    """(seconds of its fastest repetition, wall seconds) of one calibration process at -r
    ``reps``; None, with the cell failed, when it failed."""
    spec, record = cell.spec, cell.record
    argv = tools.invocation(spec, cell.argv[0], cell.argv[1], reps)
    out, err = cell.work / "calibration.out", cell.work / "calibration.err"
    result = run_process(argv, cell.left_s(), out, err, env=cell.env, cwd=cell.work)
    cell.used_s += result.wall_s
    failure = _failure(spec, result)
    if failure is None:
        try:
            return tools.repetition_s(tools.parse_output(spec.tool, result.stdout(), result.stderr())), result.wall_s
        except ParseError as exc:
            failure = "parse_error", str(exc)
    cell.logs[out.name], cell.logs[err.name] = out, err
    record.status, record.error = failure[0], f"calibration run: {failure[1]}"
    return None


def _failure(spec: CellSpec, result) -> tuple[str, str] | None:
    """(status, error) of an engine process that did not end well; None when it did."""
    if result.timed_out:
        return "timeout", f"killed after the cell's {spec.timeout_s:g} s timeout"
    if result.truncated:
        return "run_failed", "output exceeded the size cap; process killed"
    if result.exit_code != 0:
        tail = (result.stderr().strip().splitlines() or [""])[-1][:300]
        return "run_failed", f"{spec.tool} exited with {result.exit_code}: {tail}"
    return None


def _fitting_reps(cell: _Cell, chosen: int, rep_s: float, load_s: float) -> tuple[int, str | None]:
    """``chosen`` repetitions, or as many as fit where timeout_s cannot hold min processes of
    them (with why): each process also pays ``load_s`` (its start, model load and the tool's
    warmup), and a fifth of the time left stays spare for processes slower than calibrated."""
    spec, rep = cell.spec, cell.spec.repetitions
    left = TIMEOUT_SHARE * (spec.timeout_s - cell.used_s)
    if rep.min * (load_s + chosen * rep_s) <= left:
        return chosen, None
    fits = max(1, min(chosen, math.floor((left / rep.min - load_s) / rep_s))) if rep_s > 0 else 1
    why = (f"timeout_s {spec.timeout_s:g} leaves {left:.1f} s ({TIMEOUT_SHARE:.0%} of what is left) for min "
           f"{rep.min} processes of {load_s:.2f} s load + {chosen} x {rep_s * 1000:.1f} ms: -r lowered from {chosen} "
           f"to {fits}, so a process measures about {fits * rep_s:.2f} s, under min_process_s {rep.min_process_s:g}")
    if rep.min * (load_s + fits * rep_s) > left:
        why += "; even so the cell may time out"
    return fits, why


def _measure_once(cell: _Cell, report: PhaseReporter) -> None:
    """One engine process; stops the cell on failure or once it reached its cap."""
    spec, record, rep = cell.spec, cell.record, cell.spec.repetitions
    batch = cell.reps
    argv = tools.invocation(spec, cell.argv[0], cell.argv[1], batch)
    lowered = " - -r lowered to fit timeout_s" if cell.calibration.get("warning") else ""
    report("run", f"{spec.tool} process {cell.processes + 1} of {rep.min}-{rep.max}, "
                  f"{batch} repetition{'s' if batch > 1 else ''} each{lowered}")
    try:    # the busy-machine guard (agent.machine.quiet): wait for quiet, mark, or fail
        seen = quiet.settle(spec.hygiene, spec.args.threads, record.hygiene.get("processes", []),
                            lambda why: report("busy", why))
    except quiet.BusyMachine as exc:
        record.status, record.error = "run_failed", str(exc)
        return
    record.hygiene.setdefault("processes", []).append(seen)
    record.hygiene["disturbed"] = sum(p["disturbed"] for p in record.hygiene["processes"])
    cell.processes += 1
    suffix = "" if cell.processes == 1 else f".{cell.processes}"
    out, err = cell.work / f"stdout{suffix}.txt", cell.work / f"stderr{suffix}.txt"
    cell.logs[out.name], cell.logs[err.name] = out, err
    record.tool["started"].append(utc_now())
    # cwd is the cell's work dir: ik's tools write llama.log into their working directory
    result = run_process(argv, cell.left_s(), out, err, env=cell.env, cwd=cell.work, cpus=seen.get("cpus"))
    record.timestamps["bench_finished"] = utc_now()     # the last process's end stands
    cell.used_s += result.wall_s
    if (cell.work / "llama.log").is_file():
        cell.logs["llama.log"] = cell.work / "llama.log"
    record.tool["argv"].append(argv)
    record.tool["exit_codes"].append(result.exit_code)
    record.tool["wall_s"].append(round(result.wall_s, 4))
    record.tool["cpu_s"].append(result.cpu_s)
    failure = _failure(spec, result)
    if failure:
        record.status, record.error = failure
    else:
        try:
            parsed = tools.parse_output(spec.tool, result.stdout(), result.stderr())
        except ParseError as exc:
            record.status, record.error = "parse_error", str(exc)
            return
        cell.outputs.append(parsed)
        _keep_rows(record, parsed, cell.processes - 1)
        cell.done += batch
    if cell.processes >= rep.max:
        cell.measuring = False


def _until(rep) -> str | None:
    """The stopping rule: a target_ci_pct without ``until`` is until: ci, as it always was."""
    return rep.until or ("ci" if rep.target_ci_pct is not None else None)


def _process_values(cell: _Cell) -> dict[str, list[float]]:
    """Per metric, one value per measured process (the mean of its repetitions), in order."""
    metrics = tools.metrics_from(cell.spec.tool, cell.outputs) if cell.outputs else {}
    return {name: process_means(m.samples, m.process_sizes) for name, m in metrics.items()}


def _verdicts(cell: _Cell, group: dict[str, _Cell]) -> dict[str, dict[str, SequentialVerdict]]:
    """Per baseline of ``cell`` measured in this group and per metric, the sequential verdict
    on the pairs (baseline's i-th process, cell's i-th process), which ran in one round."""
    rep, mine = cell.spec.repetitions, _process_values(cell)
    out = {}
    for base_id in cell.spec.baselines:
        base = group.get(base_id)
        if base is None or base.record.status != "ok" or cell.record.status != "ok":
            continue
        theirs = _process_values(base)
        out[base_id] = {m: sequential_verdict(theirs[m], mine[m], min_pairs=rep.min, max_pairs=rep.max,
                                              equivalence=rep.equivalence_pct / 100)
                        for m in cell.spec.verdict_metrics if m in mine and m in theirs}
    return out


def _settled(verdicts: dict[str, dict[str, SequentialVerdict]]) -> bool:
    """Every comparison has a verdict on each metric both sides have."""
    return all(per and all(v.verdict in SETTLED for v in per.values()) for per in verdicts.values())


def _enough(cell: _Cell, group: dict[str, _Cell]) -> bool:
    """At the minimum, and what ``until`` waits for: every metric's CI over process units
    tight enough (ci), or every comparison the cell takes part in settled (verdict)."""
    rep = cell.spec.repetitions
    if cell.processes < rep.min:
        return False
    until = _until(rep)
    if until == "ci":
        metrics = tools.metrics_from(cell.spec.tool, cell.outputs)
        return bool(metrics) and all(ci_half_width_pct(process_means(m.samples, m.process_sizes))
                                     <= rep.target_ci_pct for m in metrics.values())
    if until == "verdict":
        return _settled(_verdicts(cell, group))
    return True


def _group_finished(cells: list[_Cell]) -> bool:
    """The group measures on together until every cell still measuring has enough, so the
    A/B alternation stays balanced to the end."""
    group = {c.spec.cell_id: c for c in cells}
    active = [c for c in cells if c.measuring]
    if active and all(_enough(c, group) for c in active):
        for cell in active:
            cell.measuring = False
        return True
    return not active


def _keep_stopping_facts(cells: list[_Cell]) -> None:
    """until: verdict - per cell, where its comparisons stood when the group stopped."""
    group = {c.spec.cell_id: c for c in cells}
    found = {c.spec.cell_id: _verdicts(c, group) for c in cells}
    settled = all(_settled(v) for v in found.values())
    for cell in cells:
        if _until(cell.spec.repetitions) != "verdict" or cell.argv is None:
            continue
        cell.sequential = {
            "rule": SEQUENTIAL_RULE,
            "stopped": "failed" if cell.record.status != "ok" else "settled" if settled else "max",
            "baselines": {base_id: {m: {"verdict": v.verdict, "pairs": v.pairs, "ratio": v.ratio,
                                        "ci_low": v.ci_low, "ci_high": v.ci_high} for m, v in per.items()}
                          for base_id, per in found[cell.spec.cell_id].items()},
            "not_in_group": [b for b in cell.spec.baselines if b not in found[cell.spec.cell_id]]}


def _finish(cell: _Cell, report: PhaseReporter, grant: Granter | None = None) -> ResultRecord:
    """Metrics and repetition facts, then spool and deliver the record with its logs."""
    spec, record, rep = cell.spec, cell.record, cell.spec.repetitions
    metrics_now = tools.metrics_from(spec.tool, cell.outputs) if cell.outputs else {}
    if cell.argv is not None:
        record.repetitions = {
            "min": rep.min, "max": rep.max, "until": _until(rep), "target_ci_pct": rep.target_ci_pct,
            "per_process": rep.per_process, "done": cell.done, "processes": cell.processes,
            "equivalence_pct": rep.equivalence_pct,
            "calibration": cell.calibration,
            "ci_half_width_pct": {k: round(ci_half_width_pct(process_means(m.samples, m.process_sizes)), 3)
                                  for k, m in metrics_now.items()}}
        if cell.sequential is not None:
            record.repetitions["sequential"] = cell.sequential
    if record.status == "ok":
        record.metrics = metrics_now
        if not record.metrics:
            record.status, record.error = "parse_error", "the tool's output held no pp or tg result"
    record.timestamps["finished"] = utc_now()
    record.logs = {name: log_key(spec.run_id, spec.cell_id, record.agent_id, name) for name in cell.logs}
    other = _recorded(spec, record.hardware_class, record.agent_id, grant) if record.status == "ok" else None
    if other:
        record.error = f"superseded: {other} recorded this cell for the class first; not stored"
        shutil.rmtree(cell.work, ignore_errors=True)
        return record
    report("upload", spec.cell_id)
    entry = spool_record(spec.store_url, record.model_dump(mode="json"), cell.logs, spec.on_clash)
    try:
        deliver(entry, grant)
    except Exception as exc:  # noqa: BLE001 - stays spooled; `flush` delivers it later
        record.error = (record.error or "") + f" [{SPOOLED_NOTE}: {exc}]"
    shutil.rmtree(cell.work, ignore_errors=True)
    return record


def _keep_rows(record: ResultRecord, parsed, process: int) -> None:
    for row in parsed.bench_rows:
        record.bench_rows.append({"process": process, "test": row.test, "n_prompt": row.n_prompt,
                                  "n_gen": row.n_gen, "n_depth": row.n_depth, "avg_ts": row.avg_ts,
                                  "stddev_ts": row.stddev_ts, "samples_ts": row.samples_ts,
                                  "samples_ns": row.samples_ns, "fields": row.fields})
    for row in parsed.sweep_rows:
        record.sweep_rows.append({"rep": process, "pp": row.pp, "tg": row.tg, "n_kv": row.n_kv, "t_pp": row.t_pp,
                                  "speed_pp": row.speed_pp, "t_tg": row.t_tg, "speed_tg": row.speed_tg,
                                  **row.extra})
