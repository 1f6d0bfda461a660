"""`--export sqlite`: a `llama_bench` table in llama.cpp's 2025 + 2026 schema, one row per llama-bench
row we kept, so `scripts/compare-llama-bench.py -i FILE -b A -c B` reads our results as its own.

That script requires KEY_PROPERTIES + build_commit, test_time and avg_ts on every row, so
a field the engine did not print (ik has no n_depth or backends; imports lack most) gets
llama-bench's own default instead of NULL.
"""
from __future__ import annotations

import math
import os
import sqlite3
import tempfile

from .formats import OutPath, ReportSource

# (column, SQL type, default) in compare-llama-bench.py's LLAMA_BENCH_DB_FIELDS order.
COLUMNS = [
    ("build_commit", "TEXT", "unknown"), ("build_number", "INTEGER", 0), ("cpu_info", "TEXT", "unknown"),
    ("gpu_info", "TEXT", ""), ("backends", "TEXT", "CPU"), ("model_filename", "TEXT", "unknown"),
    ("model_type", "TEXT", "unknown"), ("model_size", "INTEGER", 0), ("model_n_params", "INTEGER", 0),
    ("n_batch", "INTEGER", 2048), ("n_ubatch", "INTEGER", 512), ("n_threads", "INTEGER", 0),
    ("cpu_mask", "TEXT", "0x0"), ("cpu_strict", "INTEGER", 0), ("poll", "INTEGER", 50),
    ("type_k", "TEXT", "f16"), ("type_v", "TEXT", "f16"), ("n_gpu_layers", "INTEGER", 99),
    ("split_mode", "TEXT", "layer"), ("main_gpu", "INTEGER", 0), ("no_kv_offload", "INTEGER", 0),
    ("flash_attn", "INTEGER", 0), ("tensor_split", "TEXT", "0.00"), ("tensor_buft_overrides", "TEXT", "none"),
    ("use_mmap", "INTEGER", 1), ("embeddings", "INTEGER", 0), ("no_op_offload", "INTEGER", 0),
    ("n_prompt", "INTEGER", 0), ("n_gen", "INTEGER", 0), ("n_depth", "INTEGER", 0),
    ("test_time", "TEXT", ""), ("avg_ns", "INTEGER", 0), ("stddev_ns", "INTEGER", 0),
    ("avg_ts", "REAL", None), ("stddev_ts", "REAL", 0.0),
    # 2026 additions (llama.cpp's own llama-bench prints them; the 2026 compare script keys
    # on n_cpu_moe, load_mode, fit_target and fit_min_ctx). Both eras' columns are written,
    # so either version of the script reads the file.
    ("n_cpu_moe", "INTEGER", 0), ("fit_target", "INTEGER", 0), ("fit_min_ctx", "INTEGER", 0),
    ("load_mode", "TEXT", "auto"), ("devices", "TEXT", "auto"), ("no_host", "INTEGER", 0),
]
# ik prints one boolean per compiled backend instead of mainline's `backends` string.
IK_BACKENDS = (("cuda", "CUDA"), ("vulkan", "Vulkan"), ("kompute", "Kompute"), ("metal", "Metal"),
               ("sycl", "SYCL"), ("gpu_blas", "BLAS"), ("blas", "BLAS"), ("rpc", "RPC"))


def _truthy(v) -> bool:
    return v not in (None, False, 0, "0", "", "false", "False")


def backends_from_ik(fields: dict) -> str | None:
    if not any(k in fields for k, _ in IK_BACKENDS):
        return None
    names = []
    for key, name in IK_BACKENDS:
        if _truthy(fields.get(key)) and name not in names:
            names.append(name)
    return ",".join(names) or "CPU"


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    m = math.fsum(xs) / len(xs)
    sd = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def _record_facts(rec: dict) -> dict:
    """What the record knows when the tool's own fields do not say it."""
    hw = rec.get("hardware") or {}
    engine, model, params = rec.get("engine") or {}, rec.get("model") or {}, rec.get("params") or {}
    gpus = [d.get("name", "") for d in (hw.get("gpus") or {}).get("devices") or [] if isinstance(d, dict)]
    ts = rec.get("timestamps") or {}
    facts = {"build_commit": (engine.get("commit") or "")[:8] or None, "build_number": engine.get("build_number"),
             "cpu_info": (hw.get("cpu") or {}).get("brand") or hw.get("cpu_info") or hw.get("label"),
             "gpu_info": ", ".join(gpus) if gpus else hw.get("gpu_info"),
             "model_filename": model.get("path"),
             "model_type": " ".join(str(x) for x in (model.get("name"), model.get("quant") or params.get("quant"))
                                    if x) or None,
             "n_threads": params.get("threads"),
             "test_time": ts.get("bench_started") or ts.get("finished") or ts.get("imported")}
    return {k: v for k, v in facts.items() if v not in (None, "")}


def _value(kind: str, v, default):
    if v is None:
        return default
    if kind == "INTEGER":
        if isinstance(v, bool):
            return int(v)
        try:
            return int(float(v))
        except (TypeError, ValueError):
            return 1 if _truthy(v) and default in (0, 1) else default
    if kind == "REAL":
        try:
            return float(v)
        except (TypeError, ValueError):
            return default
    if isinstance(v, (list, tuple)):
        return "/".join(str(x) for x in v)
    return str(v)


# fields the row's numbers are computed from: taken from the tool's own fields only when numbers
NUMERIC_FIELDS = ("n_prompt", "n_gen", "n_depth", "avg_ts", "stddev_ts", "avg_ns", "stddev_ns")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1e15


def bench_row_values(rec: dict, row: dict, facts: dict) -> tuple | None:
    """One llama_bench row, or None when the row has no t/s at all (nothing to compare)."""
    fields = {k: v for k, v in (row.get("fields") or {}).items() if k not in NUMERIC_FIELDS or _number(v)}
    if "backends" not in fields:
        derived = backends_from_ik(fields)
        if derived:
            fields["backends"] = derived
    for key in ("n_prompt", "n_gen", "n_depth", "avg_ts", "stddev_ts"):
        if row.get(key) is not None:
            fields[key] = row[key]
    samples_ts = [float(s) for s in row.get("samples_ts") or []]
    if fields.get("avg_ts") is None and samples_ts:
        fields["avg_ts"], fields["stddev_ts"] = _mean_sd(samples_ts)
    if fields.get("avg_ts") is None:
        return None
    samples_ns = [float(s) for s in row.get("samples_ns") or []]
    if fields.get("avg_ns") is None and samples_ns:
        fields["avg_ns"], fields["stddev_ns"] = _mean_sd(samples_ns)
    if fields.get("avg_ns") is None and fields["avg_ts"]:
        tokens = (fields.get("n_prompt") or 0) + (fields.get("n_gen") or 0)
        fields["avg_ns"] = 1e9 * tokens / float(fields["avg_ts"])
    merged = {**facts, **{k: v for k, v in fields.items() if v is not None}}
    built = (rec.get("engine") or {}).get("commit") or ""
    if built and not built.startswith(str(merged.get("build_commit") or "-")):
        # the binary names the vendored upstream tree (an sdist) or a parent of a local
        # patch, so it can't tell A from B: use the commit hwmatrix built
        merged["build_commit"] = built[:8]
    return tuple(_value(kind, merged.get(name), default) for name, kind, default in COLUMNS)


def _fill(conn: sqlite3.Connection, records: list[dict]) -> int:
    cols = ", ".join(f"{name} {kind}" for name, kind, _ in COLUMNS)
    conn.execute(f"CREATE TABLE llama_bench ({cols})")
    marks = ", ".join("?" * len(COLUMNS))
    rows = []
    for rec in records:
        if not rec.get("bench_rows"):
            continue
        facts = _record_facts(rec)
        for row in rec["bench_rows"]:
            values = bench_row_values(rec, row, facts)
            if values is not None:
                rows.append(values)
    conn.executemany(f"INSERT INTO llama_bench VALUES ({marks})", rows)
    conn.commit()
    return len(rows)


def render(source: ReportSource, out_path: OutPath = None) -> bytes:
    """Write a fresh SQLite file at out_path (replacing any old one) and return its bytes."""
    records = source.records
    if out_path is None:
        conn = sqlite3.connect(":memory:")
        _fill(conn, records)
        data = conn.serialize()
        conn.close()
        return bytes(data)
    out_path = os.fspath(out_path)
    fd, tmp = tempfile.mkstemp(suffix=".sqlite", dir=os.path.dirname(os.path.abspath(out_path)))
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp)
        _fill(conn, records)
        conn.close()
        os.replace(tmp, out_path)
    except BaseException:
        os.unlink(tmp)
        raise
    with open(out_path, "rb") as f:
        return f.read()
