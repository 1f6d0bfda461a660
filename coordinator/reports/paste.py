"""The block `hwmatrix ab --paste` prints for a GitHub issue or PR: the numbers as
llama.cpp's scripts/compare-llama-bench.py shows them, the verdicts, the machine and the
builds they came from, and the commands that reproduce them."""
from __future__ import annotations

import shlex
from collections import Counter

from tabulate import tabulate

from coordinator.reports.model import fmt_ratio
from coordinator.results.compare import METRICS, pair_records


def _esc(text) -> str:
    return str(text).replace("|", "\\|")


def _table(headers: list[str], rows: list[list], numeric: set[int]) -> str:
    align = ["right" if i in numeric else "left" for i in range(len(headers))]
    return tabulate([[_esc(c) for c in r] for r in rows], headers=headers, tablefmt="pipe",
                    disable_numparse=True, colalign=align)


def _model_name(rec: dict) -> str:
    """llama-bench's own model_type (what compare-llama-bench.py shows), else hwmatrix's name."""
    for row in rec.get("bench_rows") or []:
        kind = (row.get("fields") or {}).get("model_type")
        if kind:
            return kind
    model = rec.get("model") or {}
    return " ".join(str(p) for p in (model.get("name") or rec["params"].get("model"), model.get("quant")) if p)


def bench_table(records: list[dict], a: str, b: str) -> str:
    """Model | test | t/s A | t/s B | speedup B/A, one row per metric of each paired cell."""
    rows = []
    for base, cand in pair_records(records, {"ref": a}, {"ref": b}):
        for metric in METRICS:
            mb, mc = (r.get("metrics", {}).get(metric) for r in (base, cand))
            if not mb or not mc or not mb.get("mean") or not mc.get("mean"):
                continue
            rows.append([_model_name(base), mb.get("test") or metric, f"{mb['mean']:.2f}", f"{mc['mean']:.2f}",
                         f"{mc['mean'] / mb['mean']:.2f}"])
    return _table(["Model", "Test", f"t/s {a}", f"t/s {b}", f"Speedup {b}/{a}"], rows, {2, 3, 4})


def verdict_table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        out.append([r["metric"], f"**{r['verdict']}**", fmt_ratio(r), f"{r.get('n_base')} / {r.get('n_cand')}"])
    return _table(["metric", "verdict", "ratio B/A [95% CI]", "processes A / B"], out, {2, 3})


def hardware_lines(records: list[dict]) -> list[str]:
    """One line per hardware class the records were measured on."""
    seen, lines = set(), []
    for rec in records:
        hw, hw_class = rec.get("hardware") or {}, rec.get("hardware_class")
        if hw_class in seen or not hw:
            continue
        seen.add(hw_class)
        cpu, gpus = hw.get("cpu") or {}, (hw.get("gpus") or {}).get("devices") or []
        gpu_text = ", ".join(f"{n}x {name}" for name, n in Counter(g.get("name") for g in gpus).items()) or "none"
        model = f"family {cpu.get('family')} model {cpu.get('model')}" + (f", {cpu['uarch']}" if cpu.get("uarch") else "")
        ram = (hw.get("memory") or {}).get("ram_gb")
        lines.append(f"- **Hardware**: {cpu.get('brand', '?')} ({model}), {cpu.get('cores', '?')} cores / "
                     f"{cpu.get('threads', '?')} threads, {cpu.get('sockets', 1)} socket(s)"
                     + (f", {ram} GB RAM" if ram else "") + f"; GPUs: {gpu_text}; hardware class `{hw_class}`"
                     + (f"; {(hw.get('os') or {}).get('kernel')}" if (hw.get("os") or {}).get("kernel") else ""))
    return lines


def build_lines(records: list[dict], a: str, b: str) -> list[str]:
    """Engine kind, each side's commit, cmake flags and compiler, from an ok record of each side."""
    lines = []
    for ref in (a, b):
        rec = next((r for r in records if r.get("status") == "ok" and r["params"].get("ref") == ref), None)
        if rec is None:
            continue
        engine = rec.get("engine") or {}
        key = (engine.get("build") or {}).get("key") or {}
        commit = (engine.get("commit") or "?")[:12]
        upstream = f" (reports build {engine['upstream_commit']})" if engine.get("upstream_commit") else ""
        flags = " ".join(engine.get("cmake") or []) or "(none)"
        lines.append(f"- **Build {ref}**: {engine.get('kind', '?')} commit `{commit}`{upstream}; cmake flags: "
                     f"`{flags}`; compiler: {key.get('compiler') or '?'}")
    return lines


def paste_block(records: list[dict], rows: list[dict], matrix_path: str, argv: list[str],
                store: str | None = None) -> str:
    """GitHub markdown in a <details> block: ``records`` all of the run's (flat), ``rows`` the
    comparisons of B against A, ``argv`` the `hwmatrix ab` arguments as given."""
    a, b = (rows[0]["baseline"], rows[0]["candidate"]) if rows else (None, None)
    run = ["hwmatrix", "run", matrix_path] + (["--store", store] if store else [])
    parts = [f"<details><summary>hwmatrix A/B: {_esc(a)} vs {_esc(b)}</summary>", "",
             bench_table(records, a, b) if rows else "(no cell measured on both sides)", "",
             verdict_table(rows) if rows else "", "",
             "Ratios > 1: B is faster. Processes are the statistical unit (each the mean of its "
             "repetitions), A and B interleaved on one machine; t/s are means over all repetitions.", "",
             *hardware_lines(records), *build_lines(records, a, b), "",
             "Reproduce:", "", "```sh", shlex.join(run), shlex.join(["hwmatrix", *argv]), "```", "", "</details>"]
    return "\n".join(parts)
