"""llama-bench `-o json` and `-o jsonl` (mainline and ik schemas), tolerant of device-init lines before the data."""

from __future__ import annotations

import bisect
import json
import re

from .common import bench_row_from_record, build_info, engine_from_keys, line_starts
from .types import ParsedOutput, ParseError

_DECODER = json.JSONDecoder()
_ARRAY_START = re.compile(r"[ \t]*\[\s*(\{|\]|$)")


def array_start(lines: list[str], i: int, text: str, starts: list[int]) -> int | None:
    """Char offset of the '[' if line i opens a JSON array of objects (or an empty/unfinished one)."""
    stripped = lines[i].lstrip()
    if not stripped.startswith("["):
        return None
    pos = starts[i] + (len(lines[i]) - len(stripped))
    return pos if _ARRAY_START.match(text, pos) else None


def parse_array_at(text: str, starts: list[int], pos: int) -> tuple[ParsedOutput, int]:
    """Decode the array at pos; return it and the 0-based line index after it."""
    line = bisect.bisect_right(starts, pos)  # 1-based line of the '['
    try:
        data, end = _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as e:
        if not text[pos + 1:].strip():
            raise ParseError("lone '[' with no objects: llama-bench prints only this when the model "
                             "fails to load; expected a JSON array of results", line) from None
        raise ParseError(f"truncated or invalid JSON array starting here: {e.msg} "
                         f"at line {e.lineno} column {e.colno}", line) from None
    except (ValueError, RecursionError) as e:     # nested too deep, or an integer past Python's digit cap
        raise ParseError(f"unreadable JSON array starting here: {e}", line) from None
    if not isinstance(data, list):
        raise ParseError("expected a JSON array of llama-bench results", line)
    if not data:
        raise ParseError("empty JSON array: llama-bench reported no results", line)
    rows = [bench_row_from_record(obj, f"JSON object {k + 1} of the array at line {line}")
            for k, obj in enumerate(data)]
    out = _output("json", rows, data)
    return out, bisect.bisect_right(starts, max(end - 1, pos))


def _output(fmt: str, rows, records: list[dict]) -> ParsedOutput:
    keys = set().union(*(r.keys() for r in records))
    commit, number = build_info(rows)
    return ParsedOutput(format=fmt, engine=engine_from_keys(keys), bench_rows=rows, sweep_rows=[],
                        build_commit=commit, build_number=number)


def parse_llama_bench_json(text: str) -> ParsedOutput:
    """Parse the first llama-bench JSON array in text; lines before it (device init, loader logs) are skipped."""
    lines = text.split("\n")
    starts = line_starts(text)
    for i in range(len(lines)):
        pos = array_start(lines, i, text, starts)
        if pos is not None:
            out, _ = parse_array_at(text, starts, pos)
            skipped = sum(1 for ln in lines[:i] if ln.strip())
            if skipped:
                out.notes.append(f"skipped {skipped} non-JSON line(s) before the array (device/loader output)")
            return out
    for i, ln in enumerate(lines):
        if ln.strip() == "[":
            raise ParseError("lone '[' with no objects: llama-bench prints only this when the model "
                             "fails to load; expected a JSON array of results", i + 1)
    raise ParseError("expected a llama-bench JSON array: no line starts with '[' followed by '{'")


def is_bench_record(obj) -> bool:
    """A JSONL line from llama-bench (as opposed to sweep-bench or anything else)."""
    return isinstance(obj, dict) and ("avg_ts" in obj or "samples_ts" in obj) and (
        ("n_prompt" in obj and "n_gen" in obj) or "test" in obj)


def jsonl_run(lines: list[str], i: int) -> tuple[list[tuple[int, dict]], int]:
    """Consecutive lines from i that each hold one JSON object; stops at the first other line."""
    run = []
    while i < len(lines) and lines[i].lstrip().startswith("{"):
        try:
            obj = json.loads(lines[i])
        except (ValueError, RecursionError):
            break
        if not isinstance(obj, dict):
            break
        run.append((i + 1, obj))
        i += 1
    return run, i


def parse_llama_bench_jsonl(text: str) -> ParsedOutput:
    """Parse `-o jsonl`: one result object per line; non-JSON lines (device init) are skipped and noted."""
    records, rows, skipped = [], [], 0
    for n, line in enumerate(text.split("\n"), start=1):
        s = line.strip()
        if not s.startswith("{"):
            skipped += bool(s)
            continue
        try:
            obj = json.loads(s)
        except (ValueError, RecursionError) as e:
            raise ParseError(f"truncated or invalid JSON object: {e}", n) from None
        if not is_bench_record(obj):
            raise ParseError("expected a llama-bench result object (avg_ts, n_prompt, n_gen)", n)
        records.append(obj)
        rows.append(bench_row_from_record(obj, f"JSONL line {n}"))
    if not rows:
        raise ParseError("expected llama-bench JSONL: no line holds a JSON object")
    out = _output("jsonl", rows, records)
    if skipped:
        out.notes.append(f"skipped {skipped} non-JSON line(s)")
    return out


def scan_bench_jsonl(lines: list[str], i: int) -> tuple[ParsedOutput, int] | None:
    """A run of llama-bench JSONL lines starting at line i (for posted text)."""
    run, _ = jsonl_run(lines, i)
    k = 0
    while k < len(run) and is_bench_record(run[k][1]):
        k += 1
    if k == 0:
        return None
    records = [obj for _, obj in run[:k]]
    rows = [bench_row_from_record(obj, f"JSONL line {n}") for n, obj in run[:k]]
    return _output("jsonl", rows, records), i + k
