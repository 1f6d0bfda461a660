"""Whole posted reports (issue comments, READMEs): find every tool output among the prose, in order."""

from __future__ import annotations

import sqlite3

from .common import line_starts
from .llama_bench_csv_sql import scan_csv, scan_sql
from .llama_bench_json import array_start, parse_array_at, scan_bench_jsonl
from .llama_bench_markdown import scan_bench_table
from .sweep_bench import main_line_extra, scan_sweep_jsonl, scan_sweep_md, scan_sweep_tsv
from .types import ParsedOutput, ParseError


def _scan(text: str, starts: list[int], lines: list[str], i: int, extra: dict):
    pos = array_start(lines, i, text, starts)
    if pos is not None:
        return parse_array_at(text, starts, pos)
    if lines[i].lstrip().startswith("{"):
        return scan_sweep_jsonl(lines, i) or scan_bench_jsonl(lines, i)
    return (scan_csv(lines, i) or scan_sql(lines, i) or scan_bench_table(lines, i)
            or scan_sweep_md(lines, i, extra) or scan_sweep_tsv(lines, i, extra))


def parse_posted_text(text: str) -> list[ParsedOutput]:
    """Every llama-bench / sweep-bench output in text, one ParsedOutput per block; [] when there is none.

    Blocks that look like tool output but cannot be read (a lone '[', a truncated array) are skipped and
    mentioned in the notes of the nearest preceding output, because prose must never make this raise.
    """
    if not isinstance(text, str) or not text.strip():
        return []
    text = text.replace("\r\n", "\n")
    lines, starts = text.split("\n"), line_starts(text)
    outputs: list[ParsedOutput] = []
    skipped: list[tuple[int, str]] = []
    extra: dict = {}
    i = 0
    while i < len(lines):
        try:
            found = _scan(text, starts, lines, i, extra)
        except (ParseError, ValueError, RecursionError, sqlite3.Error) as e:
            skipped.append((len(outputs), f"skipped unreadable block: {e}"))
            found = None
        if found is None:
            main = main_line_extra(lines[i])
            extra = main if main is not None else extra
            i += 1
            continue
        out, nxt = found
        if out.format.startswith("sweep"):
            extra = {}
        outputs.append(out)
        i = max(nxt, i + 1)
    for idx, msg in skipped:
        if outputs:
            outputs[max(idx - 1, 0)].notes.append(msg)
    return outputs
