"""The one check a record read back from a store passes before anything uses it.

Every reader (the run index and so the reports, compare, the run table and the sqlite
export; the cross-checks) works on the numbers and names a record holds. A record anyone
could write (a volunteer's upload, a file dropped in a shared store) may hold `[1,2]`,
samples that are text, NaN or 1e308, a params value of 50 MB, a name with an escape
sequence. So a record is checked once: its size, its nesting, then
agent.spec.record.StoredRecord (the record with the parts readers use typed, strictly,
numbers finite and in range, shown text bounded and free of control characters), and its
ids against its store key. A record that fails is skipped with one line saying why, never
used half-way.
"""
from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from agent.spec.printable import printable
from agent.spec.record import StoredRecord

MAX_RECORD_BYTES = 8 << 20      # a real record is tens of KB (logs are separate objects)
MAX_DEPTH = 32                  # nesting of any JSON value in a record


class BadRecord(ValueError):
    """Why a record is not used: skipped when read (here), or refused before a volunteer's
    lease closes (coordinator.volunteers.lease_record). One line, safe to print and log."""


_JSON_TYPES = {list: "an array", str: "a string", type(None): "null", bool: "a boolean", int: "a number",
               float: "a number"}


def _too_deep(value: Any) -> bool:
    """Containers nested more than MAX_DEPTH levels (level by level, without recursion: a
    deep value must not blow the stack, and the index that holds the record adds levels)."""
    level = [value]
    for _ in range(MAX_DEPTH):
        inner = []
        for item in level:
            for v in (item.values() if type(item) is dict else item):
                if type(v) is dict or type(v) is list:
                    inner.append(v)
        if not inner:
            return False
        level = inner
    return True


def validation_problem(exc: ValidationError) -> str:
    """The first thing wrong, as `where: what` (never the offending value: it may be 50 MB)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    where = ".".join(printable(p)[:60] for p in first["loc"]) or "record"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    what = re.sub(r" or instance of \w+$", "", first["msg"]).replace("dictionary", "JSON object")
    return f"{where}: {printable(what)[:200]}{more}"


def _key_problem(rec: dict, key: str) -> str | None:
    """A record under runs/R/results/C/A.json (or a kept copy A.N.json) must say R, C and A."""
    parts = key.split("/")
    if len(parts) != 5 or parts[0] != "runs" or parts[2] != "results" or not parts[4].endswith(".json"):
        return None
    stem = parts[4].removesuffix(".json")
    copy_of, _, n = stem.rpartition(".")
    agents = {stem, copy_of} if n.isdigit() else {stem}
    for name, want in (("run_id", {parts[1]}), ("cell_id", {parts[3]}), ("agent_id", agents)):
        if rec[name] not in want:
            return f"its {name} {rec[name]} does not match its store key"
    return None


def stored_record(rec: Any, key: str | None = None) -> StoredRecord:
    """``rec`` with its parts typed when it is a usable record (stored under ``key``), else BadRecord."""
    if not isinstance(rec, dict):
        raise BadRecord(f"{_JSON_TYPES.get(type(rec), type(rec).__name__)}, not a JSON object")
    if _too_deep(rec):
        raise BadRecord(f"nested deeper than {MAX_DEPTH} levels")
    try:
        typed = StoredRecord.model_validate(rec)
    except ValidationError as exc:
        raise BadRecord(validation_problem(exc)) from None
    problem = _key_problem(rec, key) if key else None
    if problem:
        raise BadRecord(problem)
    return typed


def check_record(rec: Any, key: str | None = None) -> dict:
    """``rec`` itself when it is a usable record (stored under ``key``), else BadRecord."""
    stored_record(rec, key)
    return rec


def parse_json(data: bytes) -> Any:
    """A stored record's bytes as JSON, read only when they are not over the size a record
    may have, else BadRecord; not checked yet (check_record)."""
    if len(data) > MAX_RECORD_BYTES:
        raise BadRecord(f"{len(data) / 2**20:.1f} MiB, over the {MAX_RECORD_BYTES >> 20} MiB a record may hold")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BadRecord(f"not JSON: {printable(exc)[:200]}") from None


def parse_record(data: bytes, key: str | None = None) -> dict:
    """A stored record's bytes -> the checked record, else BadRecord."""
    return check_record(parse_json(data), key)
