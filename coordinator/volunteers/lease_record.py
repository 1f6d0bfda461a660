"""Is an uploaded volunteer record the one its lease asked for? Checked before a lease closes.

A volunteer writes its record itself (through a presigned PUT), so the work API reads it
back and believes nothing in it until it holds: this run, cell, agent and one of the
agent's key fingerprints; everything a reader of the store checks (coordinator.results.record_check:
size, JSON, the record model, finite bounded numbers, no steering characters), so the
record a lease closes on is one the reports can read; the enrolled hardware class; the
cell spec that was handed out (params, engine source, ref, cmake flags, model and the build
that quantized it, tool, and every argv that the spec's arguments determine); a known
status; and metrics whose samples are positive rates that add up. The first thing that
does not hold is the reason, in one line, values shown with ``agent.spec.printable.shown``.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass

from pydantic import ValidationError

from agent.engine import tools
from agent.spec.cellspec import CellSpec
from agent.spec.flags import REPS_BOUNDS
from agent.spec.printable import shown
from agent.spec.record import EnginePart, StoredRecord
from agent.spec.registry import TOOLS
from agent.engine.sources import normalize_repo, sdist_repo_id
from agent.store.keys import StoreError, log_key
from coordinator.results.record_check import BadRecord, parse_json, stored_record

METRICS = ("pp_tps", "tg_tps", "pg_tps")       # what agent.engine.tools.metrics_from makes
MAX_TPS = 1e9                                  # tokens per second no machine reaches
_CUDA_EXTRA = ("-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=")   # what agent.engine.build.build_flags adds


@dataclass(frozen=True)
class LeasedCell:
    """What the record must agree with: the lease's run, cell, agent and class, and its spec."""
    run_id: str
    cell_id: str
    agent_id: str
    fingerprints: frozenset[str]
    hardware_class: str
    spec: dict


def checked_record(raw: bytes, lease: LeasedCell) -> dict:
    """The record as a dict when it is the lease's, else BadRecord."""
    data = parse_json(raw)
    if isinstance(data, dict):          # whose it is comes first: a foreign record is that, whatever it holds
        _attributed(data, lease)
    record = stored_record(data)        # the floor: a record every reader of the store can use
    try:
        spec = CellSpec.model_validate(lease.spec)
    except ValidationError as exc:
        raise BadRecord(f"the leased cell spec does not validate: {exc.errors()[0]['msg']}") from None
    _matches_spec(record, spec, lease.hardware_class)
    _metrics_hold(record, spec)
    return data


def _attributed(data: dict, lease: LeasedCell) -> None:
    fingerprint = data.get("agent_key_fingerprint")
    if data.get("agent_id") != lease.agent_id or not isinstance(fingerprint, str) \
            or fingerprint not in lease.fingerprints:
        raise BadRecord("the record does not carry this agent's id and key fingerprint")
    for field, want in (("run_id", lease.run_id), ("cell_id", lease.cell_id)):
        if data.get(field) != want:
            raise BadRecord(f"{field} is {shown(data.get(field))}, the lease's is {want!r}")


def set_aside(store, key: str, raw: bytes, reason: str) -> None:
    """A refused record leaves the results: it moves under ``refused/`` (kept for the admin),
    and its key holds a notice whose status is no result, so no report, index or "already
    recorded for this class" lookup takes the refused record for a measurement. StoreError
    when the store cannot be written."""
    run_part, rest = key.split("/results/", 1)
    notice = {"status": "refused", "refused": reason, "set_aside_at": f"{run_part}/refused/{rest}"}
    store.put(notice["set_aside_at"], raw, on_clash="replace")
    store.put(key, json.dumps(notice).encode(), on_clash="replace")


def _same(what: str, got, want) -> None:
    if got != want:
        raise BadRecord(f"{what} is {shown(got)}, the leased cell's is {shown(want)}")


def _matches_spec(record: StoredRecord, spec: CellSpec, hw_class: str) -> None:
    _same("origin", record.origin, "measured")
    _same("matrix", record.matrix.model_dump(), {"name": spec.matrix_name, "hash": spec.matrix_hash})
    _same("params", record.params, spec.params)
    _same("hardware_class", record.hardware_class, hw_class)
    _same("hardware.hardware_class", record.hardware.hardware_class, hw_class)
    engine = record.engine
    _same("engine.name", engine.name, spec.engine.name)
    _same("engine.kind", engine.kind, spec.engine.kind)
    _same("engine.source", engine.source, spec.engine.source())
    _same("engine.ref", engine.ref, spec.ref.model_dump(mode="json"))
    cmake = list(spec.engine.cmake)
    _same("engine.cmake", engine.cmake, cmake)
    flags = cmake if engine.build_flags is None else engine.build_flags     # older agents did not record them
    if flags[:len(cmake)] != cmake or not all(f.startswith(_CUDA_EXTRA) for f in flags[len(cmake):]):
        raise BadRecord(f"engine.build_flags {shown(flags)} are not the leased cmake flags (plus CUDA's)")
    _same("model.name", record.model.name, spec.model.name)
    _same("model.quant", record.model.quant, spec.quant)
    _same("tool.name", record.tool.name, spec.tool)
    if record.status == "ok":
        _built_as_leased(engine, spec, flags)
        _quantized_as_leased(record, spec)
        if spec.model.sha256:
            _same("model.source_sha256", str(record.model.source_sha256).lower(), spec.model.sha256.lower())
    _argv_as_leased(record, spec)
    for name, key in record.logs.items():
        try:
            _same(f"logs.{shown(name)}", key, log_key(spec.run_id, spec.cell_id, record.agent_id, name))
        except StoreError:
            raise BadRecord(f"logs: {shown(name)} is not a log name") from None


def _built_as_leased(engine: EnginePart, spec: CellSpec, flags: list[str]) -> None:
    """An ok record names the commit it built, from the leased source, with the leased flags."""
    commit = engine.commit
    if commit is None or len(commit) not in (40, 64) or any(c not in "0123456789abcdef" for c in commit):
        raise BadRecord(f"engine.commit {shown(commit)} is not a full commit id")
    if spec.ref.kind == "commit" and not commit.startswith(spec.ref.value.lower()):
        raise BadRecord(f"engine.commit {commit} is not the leased commit {spec.ref.value}")
    repo_id = (sdist_repo_id(spec.engine.sdist.package, list(spec.engine.sdist.versions)) if spec.engine.sdist
               else normalize_repo(spec.engine.repo))
    _same("engine.repo_id", engine.repo_id, repo_id)
    key = engine.build.key if engine.build else None
    if key is not None:
        _same("engine.build.key.commit", key.commit, commit)
        _same("engine.build.key.repo_id", key.repo_id, repo_id)
        _same("engine.build.key.cmake_flags", key.cmake_flags, flags)


def _quantized_as_leased(record: StoredRecord, spec: CellSpec) -> None:
    """An ok record of a quant names the build whose llama-quantize made its file: the one the
    spec names (shared by the cells of that model and quant), or else the cell's own build."""
    if not spec.quant:
        return
    made = record.model.quantized_by
    if made is None:
        raise BadRecord("model.quantized_by is missing: the record does not name the build that quantized it")
    q = spec.quantizer
    engine, ref = (q.engine, q.ref) if q else (spec.engine, spec.ref)
    for what, got, want in (("engine", made.engine, engine.name), ("kind", made.kind, engine.kind),
                            ("source", made.source, engine.source()), ("ref", made.ref, ref.model_dump(mode="json")),
                            ("cmake", made.cmake, list(engine.cmake))):
        _same(f"model.quantized_by.{what}", got, want)
    if q is None:           # the cell's own build: the commit it built
        _same("model.quantized_by.commit", made.commit, record.engine.commit)
        _same("model.quantized_by.repo_id", made.repo_id, record.engine.repo_id)
        return
    commit = made.commit
    if commit is None or len(commit) not in (40, 64) or any(c not in "0123456789abcdef" for c in commit):
        raise BadRecord(f"model.quantized_by.commit {shown(commit)} is not a full commit id")
    if ref.kind == "commit" and not commit.startswith(ref.value.lower()):
        raise BadRecord(f"model.quantized_by.commit {commit} is not the leased quantizer's commit {ref.value}")
    _same("model.quantized_by.repo_id", made.repo_id,
          sdist_repo_id(engine.sdist.package, list(engine.sdist.versions)) if engine.sdist
          else normalize_repo(engine.repo))


def _argv_as_leased(record: StoredRecord, spec: CellSpec) -> None:
    """Each measuring process ran the leased tool with exactly the arguments the spec gives;
    only the binary, the model path and (llama-bench) the repetition count are the agent's."""
    argvs = record.tool.argv or []
    if len(argvs) > spec.repetitions.max:
        raise BadRecord(f"tool.argv: more processes than the cell's {spec.repetitions.max}")
    per_process = spec.repetitions.per_process
    most = per_process if isinstance(per_process, int) else REPS_BOUNDS[1]
    for i, argv in enumerate(argvs):
        if not (len(argv) > 2 and all(a.isprintable() for a in argv)):
            raise BadRecord(f"tool.argv[{i}] is not a command line (strings without control characters)")
        binary, model = argv[0], argv[2]
        if binary.rsplit("/", 1)[-1] != spec.tool:
            raise BadRecord(f"tool.argv[{i}] runs {shown(binary)}, not {spec.tool}")
        n = 1
        reps_flag = TOOLS[spec.tool].reps_flag
        if reps_flag:
            try:
                n = int(argv[argv.index(reps_flag) + 1])
            except (ValueError, IndexError):
                raise BadRecord(f"tool.argv[{i}] has no repetition count") from None
        try:
            want = tools.invocation(spec, binary, model, n)
        except tools.ArgError as exc:
            raise BadRecord(f"the leased arguments do not fit the engine: {exc}") from None
        if argv != want or n < 1:
            raise BadRecord(f"tool.argv[{i}] {shown(' '.join(argv[3:]))} is not what the leased cell runs")
        if n > most:
            raise BadRecord(f"tool.argv[{i}]: {n} repetitions in one process, the cell allows {most}")
    if record.status == "ok" and not argvs:
        raise BadRecord("an ok record that ran no process")


def _metrics_hold(record: StoredRecord, spec: CellSpec) -> None:
    if record.status != "ok":
        if record.metrics:
            raise BadRecord(f"a {record.status} record with metrics")
        return
    if not record.metrics:
        raise BadRecord("an ok record without metrics")
    for name, metric in record.metrics.items():
        if name not in METRICS:
            raise BadRecord(f"metrics: unknown metric {shown(name)}")
        if not (_label(metric.test) and _label(metric.unit)):
            raise BadRecord(f"metrics.{name}: test {shown(metric.test)} or unit {shown(metric.unit)} is no label")
        samples = metric.samples
        most = spec.repetitions.max * REPS_BOUNDS[1]      # max processes of at most REPS_BOUNDS[1] each
        if not samples or len(samples) > most:
            raise BadRecord(f"metrics.{name}: {len(samples)} samples, the cell allows 1 to {most}")
        bad = next((s for s in samples if not 0 < s <= MAX_TPS), None)      # finite: record_check
        if bad is not None:
            raise BadRecord(f"metrics.{name}.samples: {bad!r} is not a rate between 0 and {MAX_TPS:g}")
        if metric.process_sizes and sum(metric.process_sizes) != len(samples):    # none < 0: record_check
            raise BadRecord(f"metrics.{name}.process_sizes do not add up to its {len(samples)} samples")
        if metric.n != len(samples) or not _close(metric.mean, statistics.fmean(samples)) \
                or not _close(metric.median, statistics.median(samples)):
            raise BadRecord(f"metrics.{name}: n, mean or median are not those of its samples")


def _label(text: str) -> bool:
    return 0 < len(text) <= 64 and text.isprintable()


def _close(value: float | None, want: float) -> bool:
    return value is not None and math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-12)
