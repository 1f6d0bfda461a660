"""llama-bench `-o csv` and `-o sql`: every value is quoted text, so fields are coerced back to numbers/bools."""

from __future__ import annotations

import csv
import re
import sqlite3

from .common import bench_row_from_record, build_info, engine_from_keys, scan_all
from .types import ParsedOutput, ParseError

_CREATE_RE = re.compile(r"^\s*CREATE\s+TABLE\s", re.IGNORECASE)
_INSERT_RE = re.compile(r"^\s*INSERT\s+INTO\s+[\"`]?(\w+)[\"`]?\s*\(([^)]*)\)\s*VALUES\s*\(", re.IGNORECASE)
_CREATE_TABLE_RE = re.compile(r"^\s*CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?[\"`]?\w+[\"`]?\s*\(", re.IGNORECASE)


def _output(fmt: str, records: list[tuple[str, dict]]) -> ParsedOutput:
    rows = [bench_row_from_record(rec, where, text_values=True) for where, rec in records]
    keys = set().union(*(rec.keys() for _, rec in records))
    commit, number = build_info(rows)
    return ParsedOutput(format=fmt, engine=engine_from_keys(keys), bench_rows=rows, sweep_rows=[],
                        build_commit=commit, build_number=number)


def _cells(line: str, number: int) -> list[str]:
    """One CSV line's values; the csv module's own error (a stray '\r', say) becomes a ParseError."""
    try:
        return next(csv.reader([line]))
    except csv.Error as e:
        raise ParseError(f"unreadable CSV line: {e}", number) from None


def scan_csv(lines: list[str], i: int) -> tuple[ParsedOutput, int] | None:
    """A CSV block whose header (starting 'build_commit,') is line i, up to the first line that is not a row."""
    if not lines[i].strip().startswith("build_commit,"):
        return None
    header = _cells(lines[i].strip(), i + 1)
    records, j = [], i + 1
    while j < len(lines) and lines[j].strip():
        line = lines[j].strip()
        cells = _cells(line, j + 1)
        if len(cells) != len(header):
            if line.startswith('"'):
                raise ParseError(f"CSV row has {len(cells)} values, header has {len(header)} (truncated?)", j + 1)
            break
        records.append((f"CSV line {j + 1}", dict(zip(header, cells))))
        j += 1
    if not records:
        raise ParseError("CSV header with no data rows", i + 1)
    return _output("csv", records), j


def parse_llama_bench_csv(text: str) -> ParsedOutput:
    """All llama-bench CSV blocks in text (loader lines before the header are skipped)."""
    parts = scan_all(text.split("\n"), scan_csv)
    if not parts:
        raise ParseError("expected llama-bench CSV: a header line starting with 'build_commit,'")
    rows = [r for p in parts for r in p.bench_rows]
    commit, number = build_info(rows)
    engines = {p.engine for p in parts}
    return ParsedOutput(format="csv", engine=engines.pop() if len(engines) == 1 else None, bench_rows=rows,
                        sweep_rows=[], build_commit=commit, build_number=number)


def _complete(sql: str, line: int) -> bool:
    """sqlite3.complete_statement, whose ValueError on a NUL character becomes a ParseError."""
    if "\0" in sql:
        raise ParseError("NUL character in SQL text", line)
    return sqlite3.complete_statement(sql)


def sql_block(lines: list[str], i: int) -> tuple[list[tuple[int, str]], int] | None:
    """(line number, text) of the CREATE TABLE / INSERT statements starting at line i, and the index after."""
    if not (_CREATE_RE.match(lines[i]) or _INSERT_RE.match(lines[i])):
        return None
    out, j = [], i
    if _CREATE_RE.match(lines[i]):
        while j < len(lines):
            out.append((j + 1, lines[j]))
            j += 1
            if _complete("\n".join(t for _, t in out), j):
                break
    while j < len(lines):
        k = j
        while k < len(lines) and not lines[k].strip():
            k += 1
        if k < len(lines) and _INSERT_RE.match(lines[k]):
            out.append((k + 1, lines[k]))
            j = k + 1
        else:
            break
    return out, j


def _authorize(action, *_):
    """Loading posted SQL may only create tables and insert rows: no ATTACH (files), PRAGMA or SELECT."""
    denied = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH, sqlite3.SQLITE_PRAGMA, sqlite3.SQLITE_SELECT,
              sqlite3.SQLITE_RECURSIVE, sqlite3.SQLITE_DROP_TABLE, sqlite3.SQLITE_DELETE}
    return sqlite3.SQLITE_DENY if action in denied else sqlite3.SQLITE_OK


def _statements(block: list[tuple[int, str]]):
    buf, first = [], None
    for n, text in block:
        first = first if buf else n
        buf.append(text)
        if _complete("\n".join(buf), n):
            yield first, "\n".join(buf)
            buf = []
    if buf and "".join(buf).strip():
        raise ParseError("SQL statement not terminated with ';' (truncated?)", first)


def run_sql(block: list[tuple[int, str]]) -> ParsedOutput:
    """Execute the statements in an in-memory sqlite3 DB and read the rows back from every table."""
    con = sqlite3.connect(":memory:")
    try:
        con.set_authorizer(_authorize)
        created = False
        for n, stmt in _statements(block):
            if not (_CREATE_TABLE_RE.match(stmt) or _INSERT_RE.match(stmt)):
                raise ParseError("expected only CREATE TABLE and INSERT INTO ... VALUES statements", n)
            m = _INSERT_RE.match(stmt)
            try:
                if m and not created:  # INSERTs pasted without their CREATE TABLE: make an untyped table
                    con.execute(f'CREATE TABLE IF NOT EXISTS "{m[1]}" ({m[2]})')
                created = created or not m
                con.execute(stmt)
            except sqlite3.Error as e:
                raise ParseError(f"SQL statement failed in sqlite3: {e}", n) from None
        con.set_authorizer(None)
        con.row_factory = sqlite3.Row
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY rowid")]
        records = []
        for t in tables:
            for k, row in enumerate(con.execute(f'SELECT * FROM "{t}" ORDER BY rowid'), start=1):
                records.append((f"SQL table {t} row {k}", dict(row)))
    finally:
        con.close()
    if not records:
        raise ParseError("SQL holds no INSERTed rows", block[0][0] if block else None)
    return _output("sql", records)


def scan_sql(lines: list[str], i: int) -> tuple[ParsedOutput, int] | None:
    found = sql_block(lines, i)
    if found is None:
        return None
    return run_sql(found[0]), found[1]


def parse_llama_bench_sql(text: str) -> ParsedOutput:
    """Run the `-o sql` text (CREATE TABLE test/llama_bench + INSERTs) in an in-memory sqlite3 DB."""
    block = [line for part in scan_all(text.split("\n"), sql_block) for line in part]
    if not block:
        raise ParseError("expected llama-bench SQL: CREATE TABLE test (...) / INSERT INTO test ... lines")
    return run_sql(block)
