"""Helpers shared by the format modules: test labels, value coercion, engine detection, records -> BenchRow."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping

from agent.spec.printable import shown

from .types import BenchRow, ParseError

IK = "ik_llama.cpp"
MAINLINE = "llama.cpp"

# Keys only ik's llama-bench emits (per-backend booleans instead of `backends`, the `test` label, ik options).
IK_KEYS = frozenset({
    "cuda", "vulkan", "kompute", "metal", "sycl", "gpu_blas", "blas", "test", "mla_attn", "attn_max_batch",
    "ser", "reuse", "repack", "mqkv", "muge", "defer_experts", "fused_moe", "grouped_er", "no_fused_up_gate",
    "use_thp", "no_ooae", "rcache", "sas", "max_gpu", "cuda_params", "override_tensor",
})
# Keys only mainline emits.
MAINLINE_KEYS = frozenset({
    "backends", "n_depth", "cpu_mask", "cpu_strict", "poll", "devices", "tensor_buft_overrides",
    "no_op_offload", "no_host", "n_cpu_moe", "fit_target", "fit_min_ctx", "load_mode", "use_direct_io",
})
# Fields that are text even when they look numeric (a commit of digits, "0.00" tensor split, "-1,0" ser).
STRING_FIELDS = frozenset({
    "build_commit", "cpu_info", "gpu_info", "backends", "model_filename", "model_type", "cpu_mask", "type_k",
    "type_v", "split_mode", "tensor_split", "test_time", "devices", "tensor_buft_overrides", "override_tensor",
    "ser", "cuda_params", "rpc", "load_mode", "test",
})
# Fields the JSON schema types as bool; CSV/SQL/md print them as 0/1.
BOOL_FIELDS = frozenset({
    "cuda", "vulkan", "kompute", "metal", "sycl", "gpu_blas", "blas", "cpu_strict", "no_kv_offload",
    "use_mmap", "use_direct_io", "embeddings", "no_op_offload", "no_host", "repack", "fused_moe", "mqkv",
    "muge", "defer_experts", "grouped_er", "no_fused_up_gate", "use_thp", "no_ooae", "rcache", "sas",
})
ROW_KEYS = ("test", "n_prompt", "n_gen", "n_depth", "avg_ts", "stddev_ts", "samples_ts", "samples_ns")

_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_LABEL_RE = re.compile(
    r"(?:pp(?P<p>\d+)(?:\+tg(?P<pg>\d+))?|tg(?P<g>\d+)(?:@pp(?P<gp>\d+))?)(?:@d(?P<d>\d+))?"
)
_NEWLINE_RE = re.compile("\n")
BUILD_FOOTER_RE = re.compile(r"^\s*build:\s*(?P<commit>[0-9A-Za-z]+)\s*\((?P<number>-?\d+)\)\s*$")


def normalize_label(label: str) -> str:
    """Drop whitespace so old 'pp 64' and 'pp512 @ d512' compare equal to 'pp64' / 'pp512@d512'."""
    return re.sub(r"\s+", "", label)


def to_int(digits: str) -> int:
    """int() of text a regex already matched as digits: only Python's 4300-digit cap can fail it."""
    try:
        return int(digits)
    except ValueError:
        raise ParseError(f"a number of {len(digits)} digits is too long") from None


def split_label(label: str) -> tuple[int, int, int] | None:
    """(n_prompt, n_gen, n_depth) from a normalized label; ik's gp label 'tg128@pp4096' gives (4096, 128, 0)."""
    m = _LABEL_RE.fullmatch(label)
    if not m:
        return None
    depth = to_int(m["d"] or "0")
    if m["p"] is not None:
        return to_int(m["p"]), to_int(m["pg"] or "0"), depth
    return to_int(m["gp"] or "0"), to_int(m["g"]), depth


def make_label(n_prompt: int, n_gen: int, n_depth: int) -> str:
    """The label mainline would print for these counts (mainline JSON has no `test` key)."""
    if n_gen == 0:
        base = f"pp{n_prompt}"
    elif n_prompt == 0:
        base = f"tg{n_gen}"
    else:
        base = f"pp{n_prompt}+tg{n_gen}"
    return f"{base}@d{n_depth}" if n_depth else base


def coerce(key: str, value):
    """Turn CSV/SQL/md text into int/float/bool where the meaning is unambiguous; leave text fields alone."""
    if key in BOOL_FIELDS and value in (0, 1, "0", "1") and not isinstance(value, bool):
        return bool(int(value))
    if not isinstance(value, str) or key in STRING_FIELDS:
        return value
    v = value.strip()
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    if _INT_RE.fullmatch(v):
        try:
            n = to_int(v)
        except ParseError:
            return value        # too long to be a count: keep the text
        return bool(n) if key in BOOL_FIELDS and n in (0, 1) else n
    if _FLOAT_RE.fullmatch(v):
        return float(v)
    return value


def _as_int(value, key: str, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):     # OverflowError: JSON's 1e999 is infinity
        raise ParseError(f"expected an integer for {key!r} in {where}, got {shown(value)}") from None


def _as_float(value, key: str, where: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ParseError(f"expected a number for {key!r} in {where}, got {shown(value)}") from None
    if not math.isfinite(number):       # a speed of inf or nan is garbage, not a measurement
        raise ParseError(f"expected a finite number for {key!r} in {where}, got {shown(value)}")
    return number


def _as_list(value, cast, key: str, where: str) -> list:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise ParseError(f"expected a list for {key!r} in {where}, got {shown(value)}") from None
    if not isinstance(value, list):
        raise ParseError(f"expected a list for {key!r} in {where}, got {shown(value)}")
    try:
        numbers = [cast(v) for v in value]
    except (TypeError, ValueError, OverflowError):
        raise ParseError(f"expected numbers in {key!r} in {where}") from None
    if not all(math.isfinite(v) for v in numbers):
        raise ParseError(f"expected finite numbers in {key!r} in {where}")
    return numbers


def bench_row_from_record(rec: Mapping, where: str, *, text_values: bool = False) -> BenchRow:
    """Build a BenchRow from one llama-bench record (JSON object, CSV row, SQL row).

    text_values: the values are strings (CSV) or loosely typed (SQL), so coerce the leftover fields.
    """
    if not isinstance(rec, Mapping):
        raise ParseError(f"expected a llama-bench object in {where}, got {type(rec).__name__}")
    label = rec.get("test")
    counts = split_label(normalize_label(str(label))) if label not in (None, "") else None
    if "n_prompt" in rec and "n_gen" in rec:
        n_prompt = _as_int(rec["n_prompt"], "n_prompt", where)
        n_gen = _as_int(rec["n_gen"], "n_gen", where)
        n_depth = _as_int(rec.get("n_depth") or 0, "n_depth", where)
    elif counts is not None:
        n_prompt, n_gen, n_depth = counts
    else:
        raise ParseError(f"expected n_prompt and n_gen (or a test label) in {where}")
    test = normalize_label(str(label)) if label not in (None, "") else make_label(n_prompt, n_gen, n_depth)
    fields = {k: (coerce(k, v) if text_values else v) for k, v in rec.items() if k not in ROW_KEYS}
    return BenchRow(
        test=test,
        n_prompt=n_prompt,
        n_gen=n_gen,
        n_depth=n_depth,
        avg_ts=_as_float(rec.get("avg_ts"), "avg_ts", where),
        stddev_ts=_as_float(rec.get("stddev_ts"), "stddev_ts", where),
        samples_ts=_as_list(rec.get("samples_ts"), float, "samples_ts", where),
        samples_ns=_as_list(rec.get("samples_ns"), int, "samples_ns", where),
        fields=fields,
    )


def engine_from_keys(keys: Iterable[str]) -> str | None:
    """ik vs mainline from the field names a record carries; None when both or neither show."""
    keys = set(keys)
    ik, main = bool(keys & IK_KEYS), bool(keys & MAINLINE_KEYS)
    if ik == main:
        return None
    return IK if ik else MAINLINE


def build_info(rows: list[BenchRow]) -> tuple[str | None, int | None]:
    """The build shared by all rows, or (None, None) when rows disagree or carry none."""
    builds = {(r.fields.get("build_commit"), r.fields.get("build_number")) for r in rows}
    builds.discard((None, None))
    if len(builds) != 1:
        return None, None
    commit, number = builds.pop()
    try:
        number = int(number) if number is not None else None
    except (TypeError, ValueError, OverflowError):
        number = None
    return (str(commit) if commit is not None else None), number


def line_starts(text: str) -> list[int]:
    """Character offset of each line start, to turn JSON decoder positions into line numbers."""
    return [0, *(m.end() for m in _NEWLINE_RE.finditer(text))]


def scan_all(lines: list[str], scan) -> list:
    """Every block that ``scan(lines, i) -> (block, next_i) | None`` finds, in order."""
    blocks, i = [], 0
    while i < len(lines):
        found = scan(lines, i)
        if found is None:
            i += 1
            continue
        blocks.append(found[0])
        i = found[1]
    return blocks
