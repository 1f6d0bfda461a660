"""ik llama-sweep-bench output: markdown table, --output-format jsonl, or the table pasted without pipes.

llama-sweep-bench exists only in ik_llama.cpp (mainline has none), so its output is reported as ik's.
"""

from __future__ import annotations

import json
import math
import re

from .common import IK, to_int
from .llama_bench_markdown import read_pipe_table, table_kind
from .llama_bench_json import jsonl_run
from .types import ParsedOutput, ParseError, SweepRow

CORE = ("pp", "tg", "n_kv", "t_pp", "speed_pp", "t_tg", "speed_tg")
# Column titles printed by sweep-bench.cpp, lower-cased, -> JSONL key.
HEADER_TO_KEY = {
    "pp": "pp", "tg": "tg", "n_kv": "n_kv", "t_pp s": "t_pp", "s_pp t/s": "speed_pp", "t_tg s": "t_tg",
    "s_tg t/s": "speed_tg", "rss hwm": "rss_hwm_mib", "vram delta": "vram_delta_mib",
}
_MAIN_RE = re.compile(r"^\s*main:\s*n_kv_max\s*=")
_KV_RE = re.compile(r"(\w+)\s*=\s*(-?\d+(?:\.\d+)?)")
_TSV_HEADER_RE = re.compile(r"^\s*PP\s+TG\s+N_KV\s+T_PP\s*s\b", re.IGNORECASE)
_TSV_TITLE_RE = re.compile(r"PP|TG|N_KV|T_PP s|S_PP t/s|T_TG s|S_TG t/s|RSS HWM|VRAM delta", re.IGNORECASE)
_NUM_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def main_line_extra(line: str) -> dict | None:
    """Values from 'main: n_kv_max = 71680, n_batch = 7168, ...', the only run settings the table text carries."""
    if not _MAIN_RE.match(line):
        return None
    out = {}
    for k, v in _KV_RE.findall(line):
        try:
            out[k] = float(v) if "." in v else to_int(v)
        except ParseError:
            pass        # past Python's int digit cap; the posted-text scanner calls this outside its try
    return out


def _number(value: str):
    v = value.strip().split()[0] if value.strip() else ""
    if not _NUM_RE.fullmatch(v):
        return None
    if any(c in v for c in ".eE"):
        return float(v)
    try:
        return to_int(v)
    except ParseError:
        return None         # too long to be a count: unusable, as a non-number is


def _row(values: dict, extra: dict, where: str) -> SweepRow:
    missing = [k for k in CORE if values.get(k) is None]
    if missing:
        raise ParseError(f"sweep-bench row has no usable {', '.join(missing)} in {where}")
    try:
        core = {k: (int(values[k]) if k in ("pp", "tg", "n_kv") else float(values[k])) for k in CORE}
    except (TypeError, ValueError, OverflowError):    # OverflowError: int() of an infinite "1e999"
        raise ParseError(f"expected numbers for {', '.join(CORE)} in {where}") from None
    if not all(math.isfinite(v) for v in core.values()):
        raise ParseError(f"expected finite numbers for {', '.join(CORE)} in {where}")
    rest = {k: v for k, v in values.items() if k not in CORE}
    return SweepRow(**core, extra={**extra, **rest})


def _columns(header: list[str], line: int) -> list[str]:
    keys = [HEADER_TO_KEY.get(" ".join(h.lower().split()), h) for h in header]
    missing = [k for k in CORE if k not in keys]
    if missing:
        raise ParseError(f"sweep-bench table header lacks {', '.join(missing)} "
                         f"(expected PP, TG, N_KV, T_PP s, S_PP t/s, T_TG s, S_TG t/s)", line)
    return keys


def scan_sweep_md(lines: list[str], i: int, extra: dict) -> tuple[ParsedOutput, int] | None:
    """A sweep-bench markdown table starting at line i; extra comes from a preceding 'main:' line."""
    found = read_pipe_table(lines, i)
    if found is None or table_kind(found[0].header) != "sweep":
        return None
    table, j = found
    keys = _columns(table.header, table.header_line)
    out = ParsedOutput(format="sweep-md", engine=IK, bench_rows=[], sweep_rows=[])
    for n, cells in table.rows:
        if len(cells) != len(keys):
            out.notes.append(f"line {n}: skipped row with {len(cells)} cells, header has {len(keys)}")
            continue
        out.sweep_rows.append(_row({k: _number(c) for k, c in zip(keys, cells)}, extra, f"line {n}"))
    out.notes.extend(f"line {n}: {text}" for n, text in table.noise)
    if not out.sweep_rows:
        raise ParseError("sweep-bench table has no readable rows", table.header_line)
    return out, j


def scan_sweep_tsv(lines: list[str], i: int, extra: dict) -> tuple[ParsedOutput, int] | None:
    """The table pasted as TAB/space separated text (no pipes); a header with no data rows is not a result."""
    if not _TSV_HEADER_RE.match(lines[i]):
        return None
    line = lines[i].strip()
    header = line.split("\t") if "\t" in line else _TSV_TITLE_RE.findall(line)
    keys = _columns([h.strip() for h in header if h.strip()], i + 1)
    rows, j = [], i + 1
    while j < len(lines):
        tokens = lines[j].split()
        if len(tokens) != len(keys) or not all(_NUM_RE.fullmatch(t) for t in tokens):
            break
        rows.append(_row({k: _number(t) for k, t in zip(keys, tokens)}, extra, f"line {j + 1}"))
        j += 1
    if not rows:
        return None
    return ParsedOutput(format="sweep-tsv", engine=IK, bench_rows=[], sweep_rows=rows), j


def is_sweep_record(obj) -> bool:
    return isinstance(obj, dict) and "n_kv" in obj and "speed_pp" in obj


def scan_sweep_jsonl(lines: list[str], i: int) -> tuple[ParsedOutput, int] | None:
    """A run of sweep-bench JSONL lines starting at line i."""
    run, j = jsonl_run(lines, i)
    k = 0
    while k < len(run) and is_sweep_record(run[k][1]):
        k += 1
    if k == 0:
        return None
    rows = [_row(dict(obj), {}, f"JSONL line {n}") for n, obj in run[:k]]
    return ParsedOutput(format="sweep-jsonl", engine=IK, bench_rows=[], sweep_rows=rows), i + k


def parse_sweep_bench(text: str) -> ParsedOutput:
    """Every sweep-bench table/JSONL run/pasted table in text (stderr noise skipped), rows in order."""
    lines = text.split("\n")
    parts: list[ParsedOutput] = []
    extra: dict = {}
    header_only: int | None = None
    i = 0
    while i < len(lines):
        s = lines[i].lstrip()
        if (main := main_line_extra(lines[i])) is not None:
            extra, i = main, i + 1
            continue
        if s.startswith("{") and '"n_kv' in s:
            try:
                json.loads(s)
            except (ValueError, RecursionError):
                raise ParseError("truncated or invalid sweep-bench JSONL line", i + 1) from None
        found = scan_sweep_md(lines, i, extra) or scan_sweep_jsonl(lines, i) or scan_sweep_tsv(lines, i, extra)
        if found is None:
            if _TSV_HEADER_RE.match(lines[i]):
                header_only = i + 1
            i += 1
            continue
        parts.append(found[0])
        extra, i = {}, found[1]
    if not parts:
        if header_only is not None:
            raise ParseError("sweep-bench header with no data rows", header_only)
        raise ParseError("expected llama-sweep-bench output: a '| PP | TG | N_KV | ...' table, "
                         "JSONL lines with n_kv/speed_pp, or the same table without pipes")
    formats = [p.format for p in parts]
    out = ParsedOutput(format=formats[0], engine=IK, bench_rows=[],
                       sweep_rows=[r for p in parts for r in p.sweep_rows], notes=[n for p in parts for n in p.notes])
    if len(parts) > 1:
        out.notes.append(f"{len(parts)} sweep-bench blocks combined ({', '.join(formats)})")
    return out
