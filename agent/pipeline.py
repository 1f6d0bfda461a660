"""The agent pipeline for one cell: source -> build -> model -> hygiene -> run -> parse -> record.

Every failure becomes a record with its status and logs; nothing here raises for a
foreseeable problem, so the sweep goes on.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from agent import engines, hygiene, models
from agent.build import BuildError, build
from agent.cellspec import CellSpec
from agent.parsers import ParseError
from agent.paths import cache_dir
from agent.probe import probe
from agent.record import ResultRecord, ci_half_width_pct, utc_now
from agent.runner import engine_env, run_process
from agent.sources import SourceError, resolve
from agent.spool import deliver, spool_record
from agent.store import log_key

Reporter = Callable[[str, str], None]


def agent_id_for(profile) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", profile.hostname or "agent")[:60] or "agent"


def _targets(spec: CellSpec) -> list[str]:
    targets = [spec.tool]
    if spec.quant:
        targets.append("llama-quantize")
    return sorted(set(targets) | set(spec.build_targets))


def _gpu_env(gpus: int | None) -> dict[str, str]:
    if gpus is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(gpus))}


def run_cell(spec: CellSpec, report: Reporter | None = None) -> ResultRecord:
    """Run one cell and store its record (spooled first); returns the record."""
    report = report or (lambda phase, detail: None)
    profile = probe()
    agent_id = agent_id_for(profile)
    record = ResultRecord(
        run_id=spec.run_id, matrix={"name": spec.matrix_name, "hash": spec.matrix_hash},
        cell_id=spec.cell_id, agent_id=agent_id, params=spec.params, status="ok",
        engine={"name": spec.engine.name, "kind": spec.engine.kind, "source": spec.engine.source(),
                "ref": spec.ref.model_dump(), "cmake": list(spec.engine.cmake)},
        model={"name": spec.model.name, "quant": spec.quant},
        tool={"name": spec.tool, "argv": [], "exit_codes": [], "wall_s": []},
        hardware=profile.model_dump(), hardware_class=profile.hardware_class,
        timestamps={"started": utc_now()},
    )
    work = Path(tempfile.mkdtemp(prefix=f"{spec.cell_id}-", dir=cache_dir("work")))
    logs: dict[str, Path] = {}
    try:
        _run(spec, record, work, logs, report)
    except Exception as exc:  # noqa: BLE001 - an unforeseen bug still yields a record
        record.status, record.error = "run_failed", f"internal error: {type(exc).__name__}: {exc}"
    record.timestamps["finished"] = utc_now()
    record.logs = {name: log_key(spec.run_id, spec.cell_id, agent_id, name) for name in logs}
    report("upload", spec.cell_id)
    entry = spool_record(spec.store_url, record.model_dump(mode="json"), logs)
    try:
        deliver(entry)
    except Exception as exc:  # noqa: BLE001 - stays spooled; `flush` delivers it later
        record.error = (record.error or "") + f" [spooled, not yet stored: {exc}]"
    shutil.rmtree(work, ignore_errors=True)
    return record


def _precise_enough(metrics: dict, target_ci_pct: float | None) -> bool:
    """Fixed repetitions stop at the minimum; adaptive ones once every metric's CI is tight."""
    if target_ci_pct is None:
        return True
    return bool(metrics) and all(ci_half_width_pct(m.samples) <= target_ci_pct for m in metrics.values())


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


def _run(spec: CellSpec, record: ResultRecord, work: Path, logs: dict[str, Path], report: Reporter) -> None:
    report("checkout", f"{spec.engine.name}@{spec.ref.name}")
    try:
        resolved = resolve(spec.engine.source(), spec.ref.kind, spec.ref.value)
        record.engine.update(repo_id=resolved.repo_id, commit=resolved.commit,
                             upstream_commit=resolved.upstream_commit)
        report("build", f"{spec.engine.name}@{spec.ref.name} {resolved.commit[:10]}")
        built = build(resolved, list(spec.engine.cmake), _targets(spec))
    except (SourceError, BuildError) as exc:
        record.status, record.error = "build_failed", str(exc)
        if getattr(exc, "log_path", None):
            logs["build.log"] = exc.log_path
        return
    logs["build.log"] = built.log_path
    record.engine["build"] = {"key": built.key.__dict__ | {"cmake_flags": list(built.key.cmake_flags)},
                              "digest": built.key.digest(), "cached": built.cached,
                              "seconds": round(built.seconds, 2)}
    record.engine["binary_hash"] = built.binary_hash.get(spec.tool)

    try:
        if spec.quant:
            report("quantize", f"{spec.model.name} {spec.quant}")
        else:
            report("model", spec.model.name)
        quantize = built.bin("llama-quantize") if spec.quant else None
        mfile = models.model_file(spec.model, spec.quant, quantize,
                                  built.binary_hash.get("llama-quantize"))
        record.model.update(path=str(mfile.path), sha256=mfile.sha256, source_sha256=mfile.source_sha256)
        engines.check_args(spec.engine.kind, spec.tool, spec.args)
        report("hygiene", spec.cell_id)
        record.hygiene = hygiene.prepare(spec.hygiene.drop_caches, spec.hygiene.max_load, spec.hygiene.cooldown_s)
        record.hygiene["warmup"] = spec.hygiene.warmup
    except (models.ModelError, engines.ArgError, hygiene.HygieneError) as exc:
        record.status, record.error = "run_failed", str(exc)
        return

    deadline = time.monotonic() + spec.timeout_s
    env = engine_env(_gpu_env(spec.gpus))
    warmups = engines.warmup_invocations(spec, str(built.bin(spec.tool)), str(mfile.path))
    for i, argv in enumerate(warmups):
        report("warmup", f"{i + 1}/{len(warmups)}")
        result = run_process(argv, max(1.0, deadline - time.monotonic()), work / "warmup.out", work / "warmup.err",
                             env=env, cwd=work)
        if result.timed_out or result.exit_code != 0:
            logs["warmup.err"] = work / "warmup.err"
            record.status = "timeout" if result.timed_out else "run_failed"
            record.error = f"warmup run {i + 1} {'timed out' if result.timed_out else f'exited with {result.exit_code}'}"
            return
    record.hygiene["extra_warmup_runs"] = len(warmups)
    outputs = []
    rep = spec.repetitions
    done, i = 0, 0
    record.timestamps["bench_started"] = utc_now()
    while True:
        batch = engines.next_batch(spec, done)
        argv = engines.invocation(spec, str(built.bin(spec.tool)), str(mfile.path), batch)
        report("run", f"{spec.tool} repetitions {done + 1}-{done + batch} (min {rep.min}, max {rep.max})")
        i += 1
        suffix = "" if i == 1 else f".{i}"
        out, err = work / f"stdout{suffix}.txt", work / f"stderr{suffix}.txt"
        logs[out.name], logs[err.name] = out, err
        # cwd is the cell's work dir: ik's tools write llama.log into their working directory
        result = run_process(argv, max(1.0, deadline - time.monotonic()), out, err, env=env, cwd=work)
        if (work / "llama.log").is_file():
            logs["llama.log"] = work / "llama.log"
        record.tool["argv"].append(argv)
        record.tool["exit_codes"].append(result.exit_code)
        record.tool["wall_s"].append(round(result.wall_s, 4))
        if result.timed_out:
            record.status, record.error = "timeout", f"killed after the cell's {spec.timeout_s:g} s timeout"
            break
        if result.truncated:
            record.status, record.error = "run_failed", "output exceeded the size cap; process killed"
            break
        if result.exit_code != 0:
            tail = (result.stderr().strip().splitlines() or [""])[-1][:300]
            record.status, record.error = "run_failed", f"{spec.tool} exited with {result.exit_code}: {tail}"
            break
        try:
            parsed = engines.parse_output(spec.tool, result.stdout(), result.stderr())
        except ParseError as exc:
            record.status, record.error = "parse_error", str(exc)
            break
        outputs.append(parsed)
        _keep_rows(record, parsed, i - 1)
        done += batch
        if done >= rep.max or (done >= rep.min and _precise_enough(engines.metrics_from(spec.tool, outputs),
                                                                   rep.target_ci_pct)):
            break
    metrics_now = engines.metrics_from(spec.tool, outputs) if outputs else {}
    record.repetitions = {"min": rep.min, "max": rep.max, "target_ci_pct": rep.target_ci_pct, "done": done,
                          "processes": i,
                          "ci_half_width_pct": {k: round(ci_half_width_pct(m.samples), 3)
                                                for k, m in metrics_now.items()}}
    record.timestamps["bench_finished"] = utc_now()
    if record.status == "ok":
        record.metrics = engines.metrics_from(spec.tool, outputs)
        if not record.metrics:
            record.status, record.error = "parse_error", "the tool's output held no pp or tg result"
