"""Parsers for llama-bench (json, jsonl, md, csv, sql) and ik llama-sweep-bench output, and whole posted reports."""

from .llama_bench_csv_sql import parse_llama_bench_csv, parse_llama_bench_sql
from .llama_bench_json import parse_llama_bench_json, parse_llama_bench_jsonl
from .llama_bench_markdown import parse_llama_bench_markdown
from .posted_text import parse_posted_text
from .sweep_bench import parse_sweep_bench
from .types import BenchRow, ParsedOutput, ParseError, SweepRow

__all__ = [
    "BenchRow", "ParsedOutput", "ParseError", "SweepRow", "parse_llama_bench_csv", "parse_llama_bench_json",
    "parse_llama_bench_jsonl", "parse_llama_bench_markdown", "parse_llama_bench_sql", "parse_posted_text",
    "parse_sweep_bench",
]
