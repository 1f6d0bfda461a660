"""The agent pipeline: source -> build -> model -> hygiene -> run -> parse -> record.

Cells that differ only in their ref (an A/B group) run together: every build and model is
ready before the first measurement, then the cells take turns one engine process at a
time (A B, B A, A B ...), so a noisy neighbour or thermal drift hits both sides alike.
Every failure becomes a record with its status and logs; nothing here raises for a
foreseeable problem, so the sweep goes on.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from agent.engine import tools

from agent.machine import hygiene

from agent.engine import models

from agent.engine import sandbox
from agent.engine.build import BuildError, build, build_flags
from agent.spec.cellspec import CellSpec
from agent.spec.registry import QUANTIZE, TOOLS
from agent.parsers import ParseError
from agent.paths import cache_dir
from agent.machine.probe import probe
from agent.spec.record import ResultRecord, ci_half_width_pct, process_means, utc_now
from agent.engine.runner import engine_env, run_process
from agent.engine.sources import SourceError, resolve
from agent.store.spool import SPOOLED_NOTE, Granter, deliver, spool_record
from agent.store.backends import open_store
from agent.store.keys import log_key, recorded_ok, result_key

Reporter = Callable[[str, str, str], None]     # (cell id, phase, detail)
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
    for step in (_prepare, _warm_up):
        for cell in cells:
            _guarded(cell, step, report)
    rounds = 0
    while any(cell.measuring for cell in cells):
        # counterbalanced: A B, then B A, ... so neither side always goes first
        for cell in (cells if rounds % 2 == 0 else reversed(cells)):
            if cell.measuring:
                _guarded(cell, _measure_once, report)
        rounds += 1
        if _group_finished(cells):
            break
    return [_finish(cell, lambda phase, detail: report(cell.spec.cell_id, phase, detail), grant) for cell in cells]


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
        tool={"name": spec.tool, "argv": [], "exit_codes": [], "wall_s": [], "started": []},
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


def _measure_once(cell: _Cell, report: PhaseReporter) -> None:
    """One engine process; stops the cell on failure or once it reached its cap."""
    spec, record, rep = cell.spec, cell.record, cell.spec.repetitions
    batch = tools.next_batch(spec, cell.done)
    argv = tools.invocation(spec, cell.argv[0], cell.argv[1], batch)
    report("run", f"{spec.tool} repetitions {cell.done + 1}-{cell.done + batch} (min {rep.min}, max {rep.max})")
    cell.processes += 1
    suffix = "" if cell.processes == 1 else f".{cell.processes}"
    out, err = cell.work / f"stdout{suffix}.txt", cell.work / f"stderr{suffix}.txt"
    cell.logs[out.name], cell.logs[err.name] = out, err
    record.tool["started"].append(utc_now())
    # cwd is the cell's work dir: ik's tools write llama.log into their working directory
    result = run_process(argv, cell.left_s(), out, err, env=cell.env, cwd=cell.work)
    record.timestamps["bench_finished"] = utc_now()     # the last process's end stands
    cell.used_s += result.wall_s
    if (cell.work / "llama.log").is_file():
        cell.logs["llama.log"] = cell.work / "llama.log"
    record.tool["argv"].append(argv)
    record.tool["exit_codes"].append(result.exit_code)
    record.tool["wall_s"].append(round(result.wall_s, 4))
    if result.timed_out:
        record.status, record.error = "timeout", f"killed after the cell's {spec.timeout_s:g} s timeout"
    elif result.truncated:
        record.status, record.error = "run_failed", "output exceeded the size cap; process killed"
    elif result.exit_code != 0:
        tail = (result.stderr().strip().splitlines() or [""])[-1][:300]
        record.status, record.error = "run_failed", f"{spec.tool} exited with {result.exit_code}: {tail}"
    else:
        try:
            parsed = tools.parse_output(spec.tool, result.stdout(), result.stderr())
        except ParseError as exc:
            record.status, record.error = "parse_error", str(exc)
            return
        cell.outputs.append(parsed)
        _keep_rows(record, parsed, cell.processes - 1)
        cell.done += batch
    if cell.done >= rep.max:
        cell.measuring = False


def _precise_enough(cell: _Cell) -> bool:
    """At the minimum, and (adaptive) every metric's CI over process units is tight enough."""
    rep = cell.spec.repetitions
    if cell.done < rep.min:
        return False
    if rep.target_ci_pct is None:
        return True
    metrics = tools.metrics_from(cell.spec.tool, cell.outputs)
    return bool(metrics) and all(ci_half_width_pct(process_means(m.samples, m.process_sizes)) <= rep.target_ci_pct
                                 for m in metrics.values())


def _group_finished(cells: list[_Cell]) -> bool:
    """The group measures on together until every cell still measuring is precise enough,
    so the A/B alternation stays balanced to the end."""
    active = [c for c in cells if c.measuring]
    if active and all(_precise_enough(c) for c in active):
        for cell in active:
            cell.measuring = False
        return True
    return not active


def _finish(cell: _Cell, report: PhaseReporter, grant: Granter | None = None) -> ResultRecord:
    """Metrics and repetition facts, then spool and deliver the record with its logs."""
    spec, record, rep = cell.spec, cell.record, cell.spec.repetitions
    metrics_now = tools.metrics_from(spec.tool, cell.outputs) if cell.outputs else {}
    if cell.argv is not None:
        record.repetitions = {
            "min": rep.min, "max": rep.max, "target_ci_pct": rep.target_ci_pct, "per_process": rep.per_process,
            "done": cell.done, "processes": cell.processes,
            "ci_half_width_pct": {k: round(ci_half_width_pct(process_means(m.samples, m.process_sizes)), 3)
                                  for k, m in metrics_now.items()}}
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
