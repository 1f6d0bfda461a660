"""`hwmatrix import`: turn a result as people post it into records marked ``imported``.

An imported record sits in the store next to measured ones so a reproduction and the original
report share one table, but its hardware class can never equal a measured class, so nothing
ever gives the two a significance verdict against each other.

What one import may cost is bounded: the file is refused unread above ``IMPORT_MAX_BYTES``
(only that much is ever read), a row that repeats an earlier one exactly is dropped and
counted rather than made into another record, more than ``IMPORT_MAX_RECORDS`` distinct rows
are refused before any record is built, and the notes a block carries are capped.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from agent.parsers import BenchRow, ParsedOutput, ParseError, SweepRow, parse_posted_text
from agent.spec.record import Metric, ResultRecord, utc_now
from agent.spec.registry import ARGS, BENCH, SWEEP
from agent.store.backends import open_store
from agent.store.keys import StoreError, result_key

# A posted result is a few KB (a GitHub comment holds at most 64K characters); parsing takes
# about half a second of CPU per MB here, and every distinct row becomes a record file in the store.
IMPORT_MAX_BYTES = 4 << 20
IMPORT_MAX_RECORDS = 10_000
NOTES_MAX = 20              # notes kept per block (and shown by the CLI); the rest are counted

# Run settings that tell two rows of one table apart (or two reports apart) when present: the
# tool args' JSON fields (every engine's spelling) from the registry, and settings hwmatrix never sets.
KEY_PARAMS = ("model_type", "backends",
              *dict.fromkeys(f for arg in ARGS.values() if arg.key_param and arg.json
                             for f in (arg.json, *arg.json_by_engine.values())),
              "no_kv_offload", "n_cpu_moe", "ser")
# Fields that describe the measurement or the machine, never the cell.
NOT_PARAMS = frozenset({"test_time", "avg_ns", "stddev_ns", "build_commit", "build_number", "cpu_info", "gpu_info",
                        "model_size", "model_n_params"})
SWEEP_PARAMS = ("n_kv_max", "n_batch", "n_ubatch", "flash_attn", "n_gpu_layers", "n_threads", "n_threads_batch")
# Record fields that differ between two imports of the same text; kept from the stored copy on re-import.
VOLATILE = (("timestamps", "imported"), ("import_source",))


class ImportFailed(ValueError):
    """A file with nothing importable; the message is one line, meant for the user, not a traceback."""


@dataclass
class Converted:
    """What a posted text gives: its records, the parsers' notes (rows they skipped, with line
    numbers), once each, and how many rows were dropped as exact repeats of earlier ones."""
    records: list[dict]
    notes: list[str]
    duplicates: int


@dataclass
class Imported:
    """What ``import_file`` wrote: the run, the store keys, and the notes and duplicates as above."""
    run_id: str
    keys: list[str]
    notes: list[str]
    duplicates: int


def slug(text: str, limit: int = 60) -> str:
    """A store-safe name part (letters, digits, '.', '_', '-')."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:limit].strip("-.")
    return s or "x"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _digest(value) -> str:
    return _sha(json.dumps(value, sort_keys=True, default=str))


def clean_text(text: str) -> str:
    """Blank the leading '# ' header lines and every '#### ' marker line (never tool output).

    Blanked, not removed, so the parsers' line numbers in notes still point into the file.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    header = True
    for i, line in enumerate(lines):
        if header and (line.startswith("# ") or line == "#"):
            lines[i] = ""
            continue
        header = False
        if line.startswith("#### "):
            lines[i] = ""
    return "\n".join(lines)


def _row_dict(row: BenchRow) -> dict:
    """The same shape measured records keep in bench_rows."""
    return {"test": row.test, "n_prompt": row.n_prompt, "n_gen": row.n_gen, "n_depth": row.n_depth,
            "avg_ts": row.avg_ts, "stddev_ts": row.stddev_ts, "samples_ts": row.samples_ts,
            "samples_ns": row.samples_ns, "fields": row.fields}


def _sweep_dict(row: SweepRow) -> dict:
    return {"rep": 0, "pp": row.pp, "tg": row.tg, "n_kv": row.n_kv, "t_pp": row.t_pp, "speed_pp": row.speed_pp,
            "t_tg": row.t_tg, "speed_tg": row.speed_tg, **row.extra}


def _bench_metric(row: BenchRow) -> tuple[str, Metric] | None:
    """Per-repetition samples when the format kept them; otherwise the posted mean +- sd as they are."""
    name = "pp_tps" if row.n_gen == 0 else "tg_tps" if row.n_prompt == 0 else "pg_tps"
    if row.samples_ts:
        return name, Metric.from_samples(row.test, row.samples_ts)
    if row.avg_ts is None:
        return None
    reps = row.fields.get("repetitions")
    n = reps if isinstance(reps, int) and not isinstance(reps, bool) and reps > 0 else 0
    return name, Metric(test=row.test, samples=[], n=n, mean=row.avg_ts, sd=row.stddev_ts)


def _varying(rows: list[BenchRow]) -> set[str]:
    keys = set().union(*(r.fields for r in rows)) - NOT_PARAMS
    return {k for k in keys if len({repr(r.fields.get(k)) for r in rows}) > 1}


class _Context:
    """What every record of one import shares."""

    def __init__(self, text: str, label: str, engine: str | None, source: str, run_id: str | None):
        self.label = label
        self.engine = engine
        self.source = source
        self.text_hash = _sha(text)
        self.agent_id = slug(label)
        self.run_id = run_id or f"import-{slug(label, 80)}-{self.text_hash[:10]}"
        self.now = utc_now()
        self.seen: dict[str, int] = {}

    def cell_id(self, block: int, test: str, params: dict) -> str:
        """Stable per (block, test, params); a row with the same params but other numbers gets an
        ordinal so none is lost (an exact repeat never gets here: it is dropped as a duplicate)."""
        base = {"block": block, "params": params}
        cid = f"b{block:02d}-{slug(test, 40)}-{_digest(base)[:10]}"
        n = self.seen.get(cid, 0)
        self.seen[cid] = n + 1
        if n:
            cid = f"b{block:02d}-{slug(test, 40)}-{_digest({**base, 'dup': n})[:10]}"
        return cid

    def engine_kind(self, out: ParsedOutput, notes: list[str]) -> str:
        if self.engine and out.engine and self.engine != out.engine:
            notes.append(f"--engine {self.engine} given, but the output looks like {out.engine}")
        return self.engine or out.engine or "unknown"

    def record(self, out: ParsedOutput, block: int, test: str, params: dict, **fields) -> dict:
        rec = ResultRecord(
            origin="imported", run_id=self.run_id, matrix={"name": "import", "hash": self.text_hash[:12]},
            cell_id=self.cell_id(block, test, params), agent_id=self.agent_id, params=params, status="ok",
            hardware_class="imported:" + _sha(self.label)[:12],
            tool={"name": SWEEP if out.sweep_rows else BENCH, "imported_format": out.format},
            **fields)
        if self.source:
            rec.import_source = self.source
        return rec.model_dump(mode="json")


def _bench_records(ctx: _Context, out: ParsedOutput, block: int, rows: list[BenchRow]) -> list[dict]:
    """One record per row of ``rows`` (the block's rows less repeats); params vary as across the block."""
    varying = _varying(out.bench_rows)
    records = []
    for row in rows:
        f = row.fields
        notes = list(out.notes)
        kind = ctx.engine_kind(out, notes)
        commit = f.get("build_commit") or out.build_commit
        number = f.get("build_number", out.build_number)
        params = {"ref": str(commit) if commit else "unknown", "engine": kind, "test": row.test}
        params.update({k: f[k] for k in KEY_PARAMS if k in f})
        params.update({k: f[k] for k in sorted(varying) if k in f and k not in params})
        hardware = {"label": ctx.label, **{k: f[k] for k in ("cpu_info", "gpu_info") if f.get(k)}}
        model = {k: f[src] for k, src in (("type", "model_type"), ("path", "model_filename"),
                                          ("size", "model_size"), ("n_params", "model_n_params")) if src in f}
        timestamps = {"imported": ctx.now, **({"test_time": f["test_time"]} if f.get("test_time") else {})}
        metric = _bench_metric(row)
        if metric is None:
            notes.append(f"{row.test}: no t/s value in the posted row")
        records.append(ctx.record(
            out, block, row.test, params, hardware=hardware, model=model, timestamps=timestamps,
            engine={"kind": kind, "commit": commit, "build_number": number},
            metrics=dict([metric]) if metric else {}, bench_rows=[_row_dict(row)], import_notes=notes))
    return records


def _sweep_record(ctx: _Context, out: ParsedOutput, block: int) -> dict:
    """One record per sweep-bench table; pp/tg metrics are the single run at the first N_KV."""
    first = out.sweep_rows[0]
    notes = list(out.notes)
    kind = ctx.engine_kind(out, notes)
    test = f"sweep pp{first.pp} tg{first.tg}"
    params = {"ref": str(out.build_commit) if out.build_commit else "unknown", "engine": kind, "test": test}
    params.update({k: first.extra[k] for k in SWEEP_PARAMS if k in first.extra})
    metrics = {"pp_tps": Metric.from_samples(f"pp{first.pp}@kv{first.n_kv} (sweep)", [first.speed_pp]),
               "tg_tps": Metric.from_samples(f"tg{first.tg}@kv{first.n_kv} (sweep)", [first.speed_tg])}
    return ctx.record(out, block, test, params, hardware={"label": ctx.label}, timestamps={"imported": ctx.now},
                      engine={"kind": kind, "commit": out.build_commit, "build_number": out.build_number},
                      metrics=metrics, sweep_rows=[_sweep_dict(r) for r in out.sweep_rows], import_notes=notes)


def _bounded_notes(notes: list[str]) -> list[str]:
    """The first ``NOTES_MAX`` notes, each cut to 300 characters, and how many more there were."""
    return [n if len(n) <= 300 else n[:297] + "..." for n in notes[:NOTES_MAX]] + (
        [f"... and {len(notes) - NOTES_MAX} more notes"] if len(notes) > NOTES_MAX else [])


Kept = list[tuple[ParsedOutput, list[BenchRow], bool]]


def _kept(outputs: list[ParsedOutput], engine: str | None) -> tuple[Kept, int]:
    """Per block, its bench rows that repeat no earlier row exactly, and whether its sweep table
    repeats none; and how many repeats there were in all (the markdown parser drops and counts
    the repeats inside one table itself, before it converts them)."""
    seen: set[str] = set()
    kept, duplicates = [], sum(out.duplicates for out in outputs)
    for out in outputs:
        kind = engine or out.engine
        rows = []
        for row in out.bench_rows:
            key = _digest([kind, row.fields.get("build_commit") or out.build_commit, _row_dict(row)])
            if key in seen:
                duplicates += 1
            else:
                seen.add(key)
                rows.append(row)
        sweep = bool(out.sweep_rows)
        if sweep:
            key = _digest([kind, out.build_commit, [_sweep_dict(r) for r in out.sweep_rows]])
            if key in seen:
                duplicates += 1
                sweep = False
            seen.add(key)
        kept.append((out, rows, sweep))
    return kept, duplicates


def convert_text(text: str, label: str, engine: str | None = None, source: str = "", *,
                 run_id: str | None = None) -> Converted:
    """ResultRecord dicts for every distinct llama-bench row and sweep-bench table in posted text.

    Raises ImportFailed (one line) when the text holds no tool output, more than
    ``IMPORT_MAX_RECORDS`` distinct ones, or the label is blank.
    """
    where = f"{source}: " if source else ""
    label = (label or "").strip()
    if not label:
        raise ImportFailed(f"{where}a hardware label is required (--as \"CPU + GPU\")")
    if not isinstance(text, str) or not text.strip():
        raise ImportFailed(f"{where}empty: nothing to import")
    if len(text) > IMPORT_MAX_BYTES:
        raise ImportFailed(f"{where}{len(text):,} characters, more than the {IMPORT_MAX_BYTES:,} one import "
                           "may hold; split the file")
    try:
        outputs = parse_posted_text(clean_text(text))
    except (ParseError, ValueError, RecursionError, sqlite3.Error) as exc:
        raise ImportFailed(f"{where}unreadable: {' '.join(str(exc).split())[:300]}") from None
    if not outputs:
        raise ImportFailed(f"{where}no llama-bench or llama-sweep-bench output found "
                           "(looked for markdown tables, JSON, JSONL, CSV, SQL and sweep-bench tables)")
    kept, duplicates = _kept(outputs, engine)
    distinct = sum(len(rows) + sweep for _, rows, sweep in kept)
    if distinct > IMPORT_MAX_RECORDS:
        raise ImportFailed(f"{where}{distinct:,} distinct results, more than the {IMPORT_MAX_RECORDS:,} one "
                           "import may hold; split the file")
    ctx = _Context(text, label, engine, source, run_id)
    records: list[dict] = []
    notes: dict[str, None] = {}
    for block, (out, rows, sweep) in enumerate(kept, start=1):
        out.notes = _bounded_notes(out.notes)
        if sweep:
            records.append(_sweep_record(ctx, out, block))
        records.extend(_bench_records(ctx, out, block, rows))
    for rec in records:
        notes.update(dict.fromkeys(rec["import_notes"]))
    return Converted(records, list(notes), duplicates)


def import_text(text: str, label: str, engine: str | None = None, source: str = "", *,
                run_id: str | None = None) -> list[dict]:
    """The records of :func:`convert_text`."""
    return convert_text(text, label, engine, source, run_id=run_id).records


def read_text_file(path: str) -> str:
    """The file as text; UTF-8 (with or without BOM) or PowerShell's UTF-16, anything else is refused.

    Above ``IMPORT_MAX_BYTES`` it is refused by its size, and never more than that is read
    (a pipe or a growing file has no size to go by).
    """
    too_big = ImportFailed(f"{path}: larger than {IMPORT_MAX_BYTES:,} bytes, the most one import may hold; "
                           "split the file")
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > IMPORT_MAX_BYTES:
                raise too_big
            data = f.read(IMPORT_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ImportFailed(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImportFailed(f"{path}: is a directory, expected a text file") from None
    except OSError as exc:
        raise ImportFailed(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > IMPORT_MAX_BYTES:
        raise too_big
    if not data.strip():
        raise ImportFailed(f"{path}: empty: nothing to import")
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return data.decode("utf-16")
        if b"\x00" in data:
            raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportFailed(f"{path}: not a text file (expected UTF-8 text as posted)") from None


def _dumps(record: dict) -> bytes:
    return json.dumps(record, indent=1, sort_keys=True).encode()


def _adopt_volatile(new: dict, old: dict) -> None:
    """Take the stored copy's import time and source, so the same text re-imported is byte-identical."""
    for path in VOLATILE:
        src, dst = old, new
        for part in path[:-1]:
            src, dst = src.get(part, {}), dst.get(part, {})
        if path[-1] in src:
            dst[path[-1]] = src[path[-1]]


def import_file(path: str, label: str, engine: str | None, store_url: str,
                run_id: str | None) -> Imported:
    """Import one file into the store. Re-importing is idempotent.

    Every key is checked before anything is written, so a clash leaves the store untouched.
    """
    text = read_text_file(path)
    converted = convert_text(text, label, engine, source=Path(path).name, run_id=run_id)
    records = converted.records
    run_id = records[0]["run_id"]
    try:
        store = open_store(store_url)
        planned = []
        for rec in records:
            key = result_key(run_id, rec["cell_id"], rec["agent_id"])
            if store.exists(key):
                try:
                    _adopt_volatile(rec, store.get_json(key))
                except (KeyError, ValueError, AttributeError):
                    pass
                if store.get(key) != _dumps(rec):
                    raise ImportFailed(f"{key} already holds a different record in {store.url}; "
                                       "pass another --run-id")
            planned.append((key, _dumps(rec)))
        keys = [store.put(key, data, on_clash="reject") for key, data in planned]
        return Imported(run_id, keys, converted.notes, converted.duplicates)
    except StoreError as exc:
        raise ImportFailed(f"{path}: {exc}") from None
    except OSError as exc:
        raise ImportFailed(f"{path}: cannot write to the store {store_url}: {exc.strerror or exc}") from None
