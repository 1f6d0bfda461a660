"""llama-bench markdown tables, read by header name because visible columns vary from run to run."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from agent.spec.printable import shown
from agent.spec.registry import ARGS

from .common import (BUILD_FOOTER_RE, IK, MAINLINE, build_info, coerce, normalize_label, scan_all,
                     split_label, to_int)
from .types import BenchRow, ParsedOutput, ParseError

_SEP_RE = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)+\|?\s*$")
# Lines the tools print between table rows: ik's '============ Repacked N tensors', sweep-bench's
# '==== tg_start for n_kv = 0', and log lines when stderr is merged into stdout.
_NOISE_RE = re.compile(r"^\s*(=+(\s|$)|(llama|ggml|load|print_info|llm_load|gguf|CUDA)\w*:)")
_REPACKED_RE = re.compile(r"Repacked\s+\d+\s+tensors")
_TS_RE = re.compile(r"^([+-]?[\d.]+(?:[eE][+-]?\d+)?)\s*(?:(?:±|\+/-|\+-)\s*([\d.]+(?:[eE][+-]?\d+)?))?$")
_SIZE_RE = re.compile(r"^([\d.]+)\s*(GiB|MiB|KiB|B)$")
_PARAMS_RE = re.compile(r"^([\d.]+)\s*([BMK])$")
_SIZE_MULT = {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10, "B": 1}
_PARAMS_MULT = {"B": 10**9, "M": 10**6, "K": 10**3}

# Display name -> JSON key, mainline and ik together (they agree where both have the column):
# the tool args' columns come from the registry, where an engine spells a field its own way too.
DISPLAY_TO_FIELD = {
    "model": "model_type", "size": "model_size", "params": "model_n_params", "backend": "backends",
    "be": "backends", "mg": "main_gpu", "nkvo": "no_kv_offload", "dio": "use_direct_io",
    "lm": "load_mode", "embd": "embeddings", "nopo": "no_op_offload", "noh": "no_host", "dev": "devices",
    "gr": "reuse", "defer": "defer_experts", "thp": "use_thp", "ger": "grouped_er",
    "no-fug": "no_fused_up_gate", "no-ooae": "no_ooae", "cuda": "cuda_params", "cyc": "cycles",
    **{column: arg.json for arg in ARGS.values() if arg.json for column in arg.columns},
}
ENGINE_FIELDS = {(column, kind): field for arg in ARGS.values() for kind, field in arg.json_by_engine.items()
                 for column in arg.columns}
# Columns only ik prints: its own args' and these.
IK_COLUMNS = frozenset({"gr", "ser", "mqkv", "muge", "defer", "sas", "thp", "ger", "rcache", "no-fug", "no-ooae",
                        "cuda", "max_gpu"} | {c for arg in ARGS.values() if arg.engines == (IK,) for c in arg.columns})
MAINLINE_COLUMNS = frozenset({"dev", "nopo", "noh", "n_cpu_moe", "cpu_mask", "cpu_strict", "poll", "lm", "dio",
                              "th", "be"})


@dataclass
class PipeTable:
    """A raw markdown table: header cells, separator cells, (line number, cells) rows, noise lines."""

    header: list[str]
    sep: list[str]
    header_line: int
    rows: list[tuple[int, list[str]]] = field(default_factory=list)
    noise: list[tuple[int, str]] = field(default_factory=list)


def split_cells(line: str) -> list[str]:
    """Cells of a '| a | b |' line; a doubled trailing '||' (seen in the upstream README) is ignored."""
    s = line.strip()
    s = s[1:] if s.startswith("|") else s
    s = s.rstrip("|") if s.endswith("||") else s[:-1] if s.endswith("|") else s
    return [c.strip() for c in s.split("|")]


def _is_header(lines: list[str], i: int) -> bool:
    return (i + 1 < len(lines) and lines[i].lstrip().startswith("|") and not _SEP_RE.match(lines[i])
            and bool(_SEP_RE.match(lines[i + 1])))


def read_pipe_table(lines: list[str], i: int) -> tuple[PipeTable, int] | None:
    """The table whose header is line i (0-based) and the index after it, or None if none starts there.

    As on GitHub, a line holding a '|' continues the table even without its leading '|' (a
    paste often loses it), so such a row is read, or skipped with a note, never dropped unseen.
    """
    if not _is_header(lines, i):
        return None
    table = PipeTable(split_cells(lines[i]), split_cells(lines[i + 1]), i + 1)
    j = i + 2
    while j < len(lines):
        line = lines[j]
        if "|" in line:
            if _is_header(lines, j) or _SEP_RE.match(line):
                break
            table.rows.append((j + 1, split_cells(line)))
            j += 1
        elif _NOISE_RE.match(line):
            k = j
            while k < len(lines) and _NOISE_RE.match(lines[k]):
                k += 1
            if k < len(lines) and lines[k].lstrip().startswith("|") and not _is_header(lines, k):
                table.noise.extend((n + 1, lines[n].strip()) for n in range(j, k))
                j = k
            else:
                break
        else:
            break
    return table, j


def table_kind(header: list[str]) -> str | None:
    """'bench', 'sweep' or None (some other markdown table) from the header names."""
    names = {h.lower() for h in header}
    if "n_kv" in names:
        return "sweep"
    if names & {"test", "t/s"} or {"model", "backend"} <= names:
        return "bench"
    return None


def _convert(name: str, value: str, engine: str | None):
    key = ENGINE_FIELDS.get((name, engine)) or DISPLAY_TO_FIELD.get(name, name)
    try:            # 400 digits are infinite as a float (round() refuses it); "1.5.6" fits [\d.]+
        if key == "model_size" and (m := _SIZE_RE.match(value)):
            return key, int(round(float(m[1]) * _SIZE_MULT[m[2]]))
        if key == "model_n_params" and (m := _PARAMS_RE.match(value)):
            return key, int(round(float(m[1]) * _PARAMS_MULT[m[2]]))
    except (OverflowError, ValueError):
        return key, value
    return key, coerce(key, value)


def _engine(names: list[str], sep: list[str], labels: list[str]) -> str | None:
    """ik-only / mainline-only columns, '@d' (mainline) or '@pp' (ik) labels, or mainline's 20-wide t/s column."""
    ik = bool(set(names) & IK_COLUMNS) or any("@pp" in t for t in labels)
    main = bool(set(names) & MAINLINE_COLUMNS) or any("@d" in t for t in labels)
    if "t/s" in names and len(sep) == len(names) and len(sep[names.index("t/s")]) >= 20:
        main = True
    if ik == main:
        return None
    return IK if ik else MAINLINE


def bench_table_output(table: PipeTable) -> ParsedOutput:
    """Convert a raw bench table; rows that cannot be read are skipped and noted, none readable is an error."""
    names = [h.lower() for h in table.header]
    for required in ("test", "t/s"):
        if required not in names:
            raise ParseError(f"llama-bench markdown table has no {required!r} column "
                             f"(header: {shown(' | '.join(table.header))})", table.header_line)
    i_test, i_ts = names.index("test"), names.index("t/s")
    labels = [normalize_label(cells[i_test]) for _, cells in table.rows if len(cells) == len(names)]
    engine = _engine(names, table.sep, labels)
    out = ParsedOutput(format="md", engine=engine, bench_rows=[], sweep_rows=[])
    for n, text in table.noise:
        m = _REPACKED_RE.search(text)
        out.notes.append(f"line {n}: {m[0] if m else shown(text)}")
    seen: set[tuple[str, ...]] = set()
    for n, cells in table.rows:
        if tuple(cells) in seen:        # the same row pasted again: one record, counted as a duplicate
            out.duplicates += 1
            continue
        seen.add(tuple(cells))
        if len(cells) != len(names):
            out.notes.append(f"line {n}: skipped row with {len(cells)} cells, header has {len(names)}")
            continue
        label = normalize_label(cells[i_test])
        counts = split_label(label)
        ts = _TS_RE.match(cells[i_ts])
        if counts is None or ts is None:
            out.notes.append(f"line {n}: skipped row, unreadable test {shown(cells[i_test])} "
                             f"or t/s {shown(cells[i_ts])}")
            continue
        try:
            avg, sd = float(ts[1]), (float(ts[2]) if ts[2] is not None else None)
        except ValueError:              # "1.2.3" fits the pattern's [\d.]+
            avg = sd = math.nan
        if not math.isfinite(avg) or (sd is not None and not math.isfinite(sd)):
            out.notes.append(f"line {n}: skipped row, t/s {shown(cells[i_ts])} is not a finite number")
            continue
        fields = dict(_convert(name, cells[k], engine) for k, name in enumerate(names) if k not in (i_test, i_ts))
        out.bench_rows.append(BenchRow(
            test=label, n_prompt=counts[0], n_gen=counts[1], n_depth=counts[2], avg_ts=avg,
            stddev_ts=sd, samples_ts=[], samples_ns=[], fields=fields))
    if not out.bench_rows:
        raise ParseError("llama-bench markdown table has no readable rows "
                         "(expected '| ... | pp512 | 12.34 ± 0.56 |')", table.header_line)
    return out


def attach_footer(out: ParsedOutput, lines: list[str], j: int) -> int:
    """Apply a 'build: <sha> (<n>)' footer that follows the table (after blank lines) and return the next index."""
    k = j
    while k < len(lines) and not lines[k].strip() and k - j < 3:
        k += 1
    m = BUILD_FOOTER_RE.match(lines[k]) if k < len(lines) else None
    if not m:
        return j
    out.build_commit, out.build_number = m["commit"], to_int(m["number"])
    for row in out.bench_rows:
        row.fields["build_commit"], row.fields["build_number"] = out.build_commit, out.build_number
    return k + 1


def scan_bench_table(lines: list[str], i: int) -> tuple[ParsedOutput, int] | None:
    """A llama-bench table (with its footer) starting at line i, or None if line i starts none."""
    found = read_pipe_table(lines, i)
    if found is None or table_kind(found[0].header) != "bench":
        return None
    table, j = found
    out = bench_table_output(table)
    return out, attach_footer(out, lines, j)


def parse_llama_bench_markdown(text: str) -> ParsedOutput:
    """All llama-bench tables in text, rows in order; each row's fields carry its table's build footer."""
    parts: list[ParsedOutput] = scan_all(text.split("\n"), scan_bench_table)
    if not parts:
        raise ParseError("expected a llama-bench markdown table: a '| ... | test | t/s |' header "
                         "followed by a '|---|' separator line")
    rows = [r for p in parts for r in p.bench_rows]
    engines = sorted({p.engine for p in parts} - {None})
    commit, number = build_info(rows)
    out = ParsedOutput(format="md", engine=engines[0] if len(engines) == 1 else None, bench_rows=rows,
                       sweep_rows=[], build_commit=commit, build_number=number,
                       notes=[n for p in parts for n in p.notes], duplicates=sum(p.duplicates for p in parts))
    if len(parts) > 1:
        out.notes.append(f"{len(parts)} tables combined")
    if len(engines) > 1:
        out.notes.append("tables come from different engines")
    return out
