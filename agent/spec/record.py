"""The result record: one versioned JSON document per (cell, agent), with full provenance.

Per-repetition samples are kept, never only means, together with the process each came
from: repetitions inside one engine process share that process's luck (memory placement,
a noisy neighbour's burst), so the statistics treat the process as the unit.

Two models of one document. ResultRecord is what the agent fills in while a cell runs: its
nested parts are plain dicts it adds to step by step. StoredRecord is a record as readers get
it back from a store: every nested part they read is typed (EnginePart, HardwarePart, ...),
strictly (no "1.5" taken for 1.5), with numbers finite and in range and shown text bounded
and free of steering characters (coordinator.results.record_check applies it to untrusted
bytes). Every part keeps the keys it does not type, and dumps only the keys it was given,
so a stored record read as a StoredRecord and dumped again is the same JSON.
"""
from __future__ import annotations

import math
import statistics
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, model_serializer

from agent.spec.printable import steering_char

SCHEMA_VERSION = 1
Status = Literal["ok", "build_failed", "run_failed", "timeout", "parse_error", "skipped", "canceled", "lost"]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Metric(BaseModel):
    """One measured quantity of a cell, e.g. pp tokens/s, with every repetition's value."""
    test: str                     # the tool's label, e.g. "pp64", "tg16", "sweep pp@n_kv=0"
    unit: str = "t/s"
    samples: list[float]
    # samples per engine process, in order (sum = len(samples)); empty in records written
    # before processes were tracked
    process_sizes: list[int] = Field(default_factory=list)
    n: int = 0
    mean: float | None = None
    sd: float | None = None
    median: float | None = None

    @classmethod
    def from_samples(cls, test: str, samples: list[float], unit: str = "t/s",
                     process_sizes: list[int] | None = None) -> "Metric":
        clean = [float(s) for s in samples]
        return cls(test=test, unit=unit, samples=clean, process_sizes=list(process_sizes or []), n=len(clean),
                   mean=statistics.fmean(clean) if clean else None,
                   sd=statistics.stdev(clean) if len(clean) > 1 else (0.0 if clean else None),
                   median=statistics.median(clean) if clean else None)


def process_means(samples: list[float], process_sizes: list[int] | None) -> list[float]:
    """The statistical units of a metric: one value per engine process (the mean of its
    repetitions). Samples of unknown origin (no sizes, or sizes that don't add up) are
    taken one by one, as before processes were tracked."""
    sizes = list(process_sizes or [])
    if not sizes or sum(sizes) != len(samples) or all(k == 1 for k in sizes):
        return [float(s) for s in samples]
    out, at = [], 0
    for k in sizes:
        if k > 0:
            out.append(statistics.fmean(samples[at:at + k]))
        at += k
    return out


def ci_half_width_pct(samples: list[float], confidence: float = 0.95) -> float:
    """Half-width of the t-based CI of the mean, in % of the mean (inf when it can't be told)."""
    from scipy import stats as st

    if len(samples) < 2 or not statistics.fmean(samples):
        return float("inf")
    half = st.t.ppf((1 + confidence) / 2, len(samples) - 1) * statistics.stdev(samples) / len(samples) ** 0.5
    return abs(100.0 * half / statistics.fmean(samples))


class ResultRecord(BaseModel):
    """The record as the agent writes it; how each part reads back: StoredRecord."""
    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    origin: Literal["measured", "imported"] = "measured"
    run_id: str
    matrix: dict                  # MatrixPart
    cell_id: str
    agent_id: str
    # a volunteer's key fingerprint (never the key): who vouches for this record
    agent_key_fingerprint: str | None = None
    params: dict
    status: Status
    error: str | None = None
    engine: dict = Field(default_factory=dict)     # EnginePart
    model: dict = Field(default_factory=dict)      # ModelPart
    tool: dict = Field(default_factory=dict)       # ToolPart
    hardware: dict = Field(default_factory=dict)   # HardwarePart: the agent's probed profile, or a posted label
    hardware_class: str | None = None
    hygiene: dict = Field(default_factory=dict)
    repetitions: dict = Field(default_factory=dict)             # asked, done, calibration, sequential stop
    metrics: dict[str, Metric] = Field(default_factory=dict)   # "pp_tps", "tg_tps", ...
    bench_rows: list[dict] = Field(default_factory=list)       # every parsed llama-bench row (BenchRowPart)
    sweep_rows: list[dict] = Field(default_factory=list)       # every sweep-bench row, + "rep" (SweepRowPart)
    timestamps: dict = Field(default_factory=dict)
    logs: dict[str, str] = Field(default_factory=dict)         # log name -> store key
    hwmatrix_version: str = "0.1.0"


# ---------------------------------------------------------------- a record read back

MAX_TEXT = 1000                 # a name, label or params value that tables show
MAX_ID = 200                    # run, cell, agent and class ids
MAX_VALUE = 1e15                # tokens/s or ns: beyond any machine, and far from float overflow


def _measure(x: float) -> float:
    if not (math.isfinite(x) and 0 <= x <= MAX_VALUE):
        raise ValueError(f"{x!r}: a measurement must be finite and within [0, {MAX_VALUE:g}]")
    return x


def _number(x: Any) -> int | float:
    """A measurement kept as it was written: a row's nanoseconds are ints and stay ints."""
    if type(x) not in (int, float):
        raise ValueError("should be a number")
    return _measure(x)


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
Number = Annotated[int | float, PlainValidator(_number)]
Count = Annotated[int, Field(ge=0, le=10**9)]
# what reports show: bounded, and never an escape sequence, a line break or a bidi override
Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_plain)]
Name = Annotated[str, Field(max_length=MAX_ID), AfterValidator(_plain)]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID), AfterValidator(_plain)]
ParamValue = Annotated[Any, AfterValidator(_param_value)]


class _AsGiven(BaseModel):
    """Dumps the keys it was given, no more: a default is only what a reader gets for a key
    the stored record lacks, never something added to it."""

    @model_serializer(mode="wrap")
    def _as_given(self, dump):
        given = self.model_fields_set | (self.__pydantic_extra__ or {}).keys()
        return {k: v for k, v in dump(self).items() if k in given}


class Part(_AsGiven):
    """A nested part of a stored record: the keys readers use, typed; any other key kept as it was."""
    model_config = ConfigDict(strict=True, extra="allow")


class MatrixPart(Part):
    name: Text | None = None
    hash: Text | None = None


class BuildKeyPart(Part):
    """What the build was keyed on (agent.engine.build.BuildKey): the rest of the key kept as it is."""
    repo_id: str | None = None
    commit: str | None = None
    cmake_flags: list[str] | None = None


class BuildPart(Part):
    """The build the cell ran (also digest, cached, seconds)."""
    key: BuildKeyPart | None = None


class EnginePart(Part):
    """The engine as asked (name, kind, source, ref, cmake) and as built (also sandboxed,
    upstream_commit; build_number for imports)."""
    name: Text | None = None
    kind: Text | None = None
    source: dict[str, Any] | None = None          # {"repo": ...} or {"sdist": {...}}
    ref: Text | dict[Text, Text | None] | None = None
    cmake: list[str] | None = None
    build_flags: list[str] | None = None          # what cmake got beyond the defaults (None: not recorded)
    repo_id: str | None = None
    commit: Text | None = None
    build: BuildPart | None = None
    binary_hash: Text | None = None


class QuantizedByPart(Part):
    """The build whose llama-quantize wrote the model file (also build_digest, binary_hash):
    one build per (model, quant), so the refs of a comparison load the same bytes."""
    engine: Text | None = None
    kind: Text | None = None
    source: dict[str, Any] | None = None
    ref: dict[Text, Text | None] | None = None
    cmake: list[str] | None = None
    repo_id: str | None = None
    commit: Text | None = None


class ModelPart(Part):
    """The model file (also sha256 of the file used; type, size, n_params for imports);
    ``quantized_by`` is absent in records older than shared quantization, and for a file as given."""
    name: Text | None = None
    path: Text | None = None
    quant: Text | None = None
    source_sha256: str | None = None
    sha256: str | None = None
    quantized_by: QuantizedByPart | None = None


class ToolPart(Part):
    """The tool and its processes (also exit_codes, wall_s, started; imported_format; cpu_s:
    each process's user + system CPU seconds, absent in older records)."""
    name: Text | None = None
    argv: list[list[str]] | None = None           # one command line per engine process


class CpuPart(Part):
    brand: Text | None = None
    uarch: Text | None = None


class GpuPart(Part):
    name: Text = "?"


class GpusPart(Part):
    count: Count | None = None
    devices: list[GpuPart] = []


class HardwarePart(Part):
    """The agent's probed profile (a HardwareProfile, agent.machine), or for an import
    the posted label and the tool's cpu_info / gpu_info."""
    label: Text | None = None
    cpu: CpuPart | None = None
    gpus: GpusPart | None = None
    cpu_info: Text | None = None
    gpu_info: Text | None = None
    hardware_class: str | None = None


class MetricPart(Part):
    """A Metric as stored."""
    test: Text
    unit: Text = "t/s"
    samples: list[Measure]
    process_sizes: list[Count] = []
    n: Count = 0
    mean: Measure | None = None
    sd: Measure | None = None
    median: Measure | None = None


class BenchRowPart(Part):
    test: Text | None = None
    n_prompt: Count | None = None
    n_gen: Count | None = None
    n_depth: Count | None = None
    avg_ts: Number | None = None
    stddev_ts: Number | None = None
    samples_ts: list[Number] = []
    samples_ns: list[Number] = []
    fields: dict[str, Any] = {}


class SweepRowPart(Part):
    n_kv: Count | None = None
    speed_pp: Number | None = None
    speed_tg: Number | None = None


class StoredRecord(ResultRecord, _AsGiven):
    """A record as readers rely on it: strict, with the nested parts they read typed."""
    model_config = ConfigDict(strict=True, extra="allow")

    run_id: Id
    cell_id: Id
    agent_id: Id
    hardware_class: Name | None = None
    matrix: MatrixPart
    params: dict[Name, ParamValue]
    engine: EnginePart = Field(default_factory=EnginePart)
    model: ModelPart = Field(default_factory=ModelPart)
    tool: ToolPart = Field(default_factory=ToolPart)
    hardware: HardwarePart = Field(default_factory=HardwarePart)
    metrics: dict[Text, MetricPart] = Field(default_factory=dict)
    bench_rows: list[BenchRowPart] = Field(default_factory=list)
    sweep_rows: list[SweepRowPart] = Field(default_factory=list)
    timestamps: dict[Text, Text | None] = Field(default_factory=dict)
