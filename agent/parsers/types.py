"""Result types shared by every parser, so importers see one shape whatever the tool printed."""

from __future__ import annotations

from dataclasses import dataclass, field


class ParseError(ValueError):
    """Raised when text is not the expected tool output; the message says what was expected and where."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)


@dataclass
class BenchRow:
    """One llama-bench test (one md/csv row, one JSON object)."""

    test: str
    n_prompt: int
    n_gen: int
    n_depth: int
    avg_ts: float | None
    stddev_ts: float | None
    samples_ts: list[float]
    samples_ns: list[int]
    fields: dict


@dataclass
class SweepRow:
    """One llama-sweep-bench row: a single run at one KV depth (no stddev exists)."""

    pp: int
    tg: int
    n_kv: int
    t_pp: float
    speed_pp: float
    t_tg: float
    speed_tg: float
    extra: dict


@dataclass
class ParsedOutput:
    """One block of tool output: a table, a JSON array, a JSONL run, a CSV or SQL dump."""

    format: str
    engine: str | None
    bench_rows: list[BenchRow]
    sweep_rows: list[SweepRow]
    build_commit: str | None = None
    build_number: int | None = None
    notes: list[str] = field(default_factory=list)
    duplicates: int = 0         # rows left out because they repeat an earlier row of the block exactly
