"""The one check a record read back from a store passes before anything uses it.

Every reader (the run index and so the reports, compare, the run table and the sqlite
export; the cross-checks) works on the numbers and names a record holds. A record anyone
could write (a volunteer's upload, a file dropped in a shared store) may hold `[1,2]`,
samples that are text, NaN or 1e308, a params value of 50 MB, a name with an escape
sequence. So a record is checked once, against agent.spec.record.ResultRecord with the parts
readers use typed too, strictly (no "1.5" taken for 1.5), with its numbers finite and in
range, its shown text bounded and free of control characters, and its ids matching its
store key. A record that fails is skipped with one line saying why, never used half-way.
"""
from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from agent.spec.printable import printable, steering_char
from agent.spec.record import ResultRecord

MAX_RECORD_BYTES = 8 << 20      # a real record is tens of KB (logs are separate objects)
MAX_DEPTH = 32                  # nesting of any JSON value in a record
MAX_TEXT = 1000                 # a name, label or params value that tables show
MAX_ID = 200                    # run, cell, agent and class ids
MAX_VALUE = 1e15                # tokens/s or ns: beyond any machine, and far from float overflow


class BadRecord(ValueError):
    """Why a record is not used: skipped when read (here), or refused before a volunteer's
    lease closes (coordinator.volunteers.lease_record). One line, safe to print and log."""


def _measure(x: float) -> float:
    if not (math.isfinite(x) and 0 <= x <= MAX_VALUE):
        raise ValueError(f"{x!r}: a measurement must be finite and within [0, {MAX_VALUE:g}]")
    return x


def _plain(text: str) -> str:
    found = steering_char(text)
    if found:
        raise ValueError(f"holds a control character ({found})")
    return text


def _param_value(value: Any) -> Any:
    """Any JSON value, short when printed, with no control character in any string in it."""
    if len(repr(value)) > MAX_TEXT:
        raise ValueError(f"longer than {MAX_TEXT} characters")
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _plain(item)
        elif isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
    return value


Measure = Annotated[float, AfterValidator(_measure)]
Count = Annotated[int, Field(ge=0, le=10**9)]
# what reports show: bounded, and never an escape sequence, a line break or a bidi override
Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_plain)]
Name = Annotated[str, Field(max_length=MAX_ID), AfterValidator(_plain)]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID), AfterValidator(_plain)]


class _Part(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _Matrix(_Part):
    name: Text | None = None
    hash: Text | None = None


class _Engine(_Part):
    name: Text | None = None
    kind: Text | None = None
    commit: Text | None = None
    binary_hash: Text | None = None
    ref: Text | dict[Text, Text | None] | None = None


class _Model(_Part):
    name: Text | None = None
    path: Text | None = None
    quant: Text | None = None


class _Cpu(_Part):
    brand: Text | None = None
    uarch: Text | None = None


class _Gpu(_Part):
    name: Text = "?"


class _Gpus(_Part):
    count: Count | None = None
    devices: list[_Gpu] = []


class _Hardware(_Part):
    label: Text | None = None
    cpu: _Cpu | None = None
    gpus: _Gpus | None = None
    cpu_info: Text | None = None
    gpu_info: Text | None = None


class _Metric(_Part):
    test: Text
    unit: Text = "t/s"
    samples: list[Measure]
    process_sizes: list[Count] = []
    n: Count = 0
    mean: Measure | None = None
    sd: Measure | None = None
    median: Measure | None = None


class _BenchRow(_Part):
    test: Text | None = None
    n_prompt: Count | None = None
    n_gen: Count | None = None
    n_depth: Count | None = None
    avg_ts: Measure | None = None
    stddev_ts: Measure | None = None
    samples_ts: list[Measure] = []
    samples_ns: list[Measure] = []
    fields: dict[str, Any] = {}


class _SweepRow(_Part):
    n_kv: Count | None = None
    speed_pp: Measure | None = None
    speed_tg: Measure | None = None


class StoredRecord(ResultRecord):
    """ResultRecord as readers rely on it: strict, with the nested parts they read typed."""
    model_config = ConfigDict(strict=True, extra="allow")

    run_id: Id
    cell_id: Id
    agent_id: Id
    hardware_class: Name | None = None
    matrix: _Matrix
    params: dict[Name, Annotated[Any, AfterValidator(_param_value)]]
    engine: _Engine = Field(default_factory=_Engine)
    model: _Model = Field(default_factory=_Model)
    hardware: _Hardware = Field(default_factory=_Hardware)
    metrics: dict[Text, _Metric] = Field(default_factory=dict)
    bench_rows: list[_BenchRow] = Field(default_factory=list)
    sweep_rows: list[_SweepRow] = Field(default_factory=list)
    timestamps: dict[Text, Text | None] = Field(default_factory=dict)


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


def check_record(rec: Any, key: str | None = None) -> dict:
    """``rec`` itself when it is a usable record (stored under ``key``), else BadRecord."""
    if not isinstance(rec, dict):
        raise BadRecord(f"{_JSON_TYPES.get(type(rec), type(rec).__name__)}, not a JSON object")
    if _too_deep(rec):
        raise BadRecord(f"nested deeper than {MAX_DEPTH} levels")
    try:
        StoredRecord.model_validate(rec)
    except ValidationError as exc:
        raise BadRecord(validation_problem(exc)) from None
    problem = _key_problem(rec, key) if key else None
    if problem:
        raise BadRecord(problem)
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
