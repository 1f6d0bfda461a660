"""The result record: one versioned JSON document per (cell, agent), with full provenance.

Per-repetition samples are kept, never only means, together with the process each came
from: repetitions inside one engine process share that process's luck (memory placement,
a noisy neighbour's burst), so the statistics treat the process as the unit.
"""
from __future__ import annotations

import statistics
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    origin: Literal["measured", "imported"] = "measured"
    run_id: str
    matrix: dict                  # {name, hash}
    cell_id: str
    agent_id: str
    # a volunteer's key fingerprint (never the key): who vouches for this record
    agent_key_fingerprint: str | None = None
    params: dict
    status: Status
    error: str | None = None
    engine: dict = Field(default_factory=dict)     # name, kind, repo_id, ref, commit, upstream_commit, build
    model: dict = Field(default_factory=dict)      # name, path, sha256, quant
    tool: dict = Field(default_factory=dict)       # name, argv (one list per invocation), exit codes, wall_s
    hardware: dict = Field(default_factory=dict)   # the agent's probed profile
    hardware_class: str | None = None
    hygiene: dict = Field(default_factory=dict)
    repetitions: dict = Field(default_factory=dict)             # asked (min/max/target) and done
    metrics: dict[str, Metric] = Field(default_factory=dict)   # "pp_tps", "tg_tps", ...
    bench_rows: list[dict] = Field(default_factory=list)       # every parsed llama-bench row
    sweep_rows: list[dict] = Field(default_factory=list)       # every sweep-bench row (+ "rep")
    timestamps: dict = Field(default_factory=dict)
    logs: dict[str, str] = Field(default_factory=dict)         # log name -> store key
    hwmatrix_version: str = "0.1.0"
