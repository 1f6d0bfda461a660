"""bench/report: how long does `hwmatrix report` take on 100,000 records?

Synthetic records in the stored shape (10 samples per metric, two llama-bench rows with
their JSON fields, a hardware profile each; some sweep-bench records with 16 N_KV rows;
a few imported classes) plus A/B comparisons for every candidate ref, then every format
is rendered once and timed. Targets: markdown under 5 s, HTML with plots under 30 s.

    python bench/report.py [N_RECORDS] [OUT_DIR]
"""
from __future__ import annotations

import itertools
import math
import random
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coordinator import reports  # noqa: E402

REFS = ["b6000", "b6010", "b6020", "pr-518"]
QUANTS = {"Q8_0": 1.0, "Q6_K": 1.2, "Q4_K_M": 1.6, "IQ4_XS": 1.7, "IQ3_XXS": 2.0}
THREADS = [8, 16, 32, 64]
UBATCH = [512, 2048]
CPUS = ["AMD Ryzen Threadripper 3955WX 16-Cores", "AMD EPYC 9115 16-Core Processor", "AMD Ryzen 9 7950X",
        "Intel(R) Xeon(R) Platinum 8480+", "Intel(R) Core(TM) i7-1185G7", "AMD Ryzen 7 7800X3D 8-Core Processor"]
GPUS = [[], ["NVIDIA GeForce RTX 3090"] * 2, ["NVIDIA GeForce RTX 4080"], ["NVIDIA H100 80GB HBM3"]]
N_MEASURED, N_IMPORTED = 18, 2
SWEEP_CLASSES, SWEEP_ROWS, SAMPLES = 3, 16, 10


def hardware_classes(rng: random.Random) -> list[dict]:
    out = []
    for i, (cpu, gpus) in enumerate(itertools.islice(itertools.cycle(itertools.product(CPUS, GPUS)), N_MEASURED)):
        out.append({"id": f"{rng.getrandbits(48):012x}", "origin": "measured", "speed": rng.uniform(0.3, 3.0),
                    "hardware": {"cpu": {"brand": cpu, "cores": 16, "threads": 32},
                                 "gpus": {"count": len(gpus), "devices": [{"name": g, "vram_mib": 24576}
                                                                          for g in gpus]},
                                 "memory": {"ram_gb": 256}}})
    for i in range(N_IMPORTED):
        out.append({"id": f"imported:{rng.getrandbits(48):012x}", "origin": "imported", "speed": 1.0,
                    "hardware": {"label": f"posted report #{500 + i}: TR 3955WX + 2x3090"}})
    return out


def _fields(cls: dict, ref: str, quant: str, threads: int, ub: int, n_prompt: int, n_gen: int) -> dict:
    return {"build_commit": f"{zlib.crc32(ref.encode()):08x}"[:7], "build_number": 6000 + REFS.index(ref),
            "cpu_info": cls["hardware"].get("cpu", {}).get("brand", ""), "gpu_info": "", "backends": "CPU",
            "model_filename": f"/models/m-{quant}.gguf", "model_type": f"llama 8B {quant}",
            "model_size": 8_000_000_000, "model_n_params": 8_030_000_000, "n_batch": 2048, "n_ubatch": ub,
            "n_threads": threads, "cpu_mask": "0x0", "cpu_strict": False, "poll": 50, "type_k": "f16",
            "type_v": "f16", "n_gpu_layers": 99, "split_mode": "layer", "main_gpu": 0, "no_kv_offload": False,
            "flash_attn": 0, "tensor_split": "0.00", "tensor_buft_overrides": "none", "use_mmap": True,
            "embeddings": False, "no_op_offload": 0, "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": 0,
            "test_time": "2026-03-01T12:00:00Z"}


def _metric(test: str, samples: list[float]) -> dict:
    mean = statistics.fmean(samples)
    return {"test": test, "unit": "t/s", "samples": samples, "n": len(samples), "mean": mean,
            "sd": statistics.stdev(samples), "median": statistics.median(samples)}


def make_records(n: int, seed: int = 1) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    classes = hardware_classes(rng)
    cells = list(itertools.product(REFS, QUANTS, THREADS, UBATCH))
    sweep_cells = [(c, ref, q) for c in classes[:SWEEP_CLASSES] for ref in REFS for q in QUANTS]
    per_group = max(1, n // (len(classes) * len(cells) + len(sweep_cells)))
    records: list[dict] = []
    groups = [("bench", c, cell) for c in classes for cell in cells] + \
             [("sweep", c, (ref, q, 16, 512)) for c, ref, q in sweep_cells]
    for kind, cls, (ref, quant, threads, ub) in itertools.cycle(groups):
        if len(records) >= n:
            break
        for run in range(per_group if len(records) + per_group <= n else n - len(records)):
            regress = 0.93 if ref == "pr-518" else 1.0
            base_pp = 300 * cls["speed"] * QUANTS[quant] * math.log2(threads) / 4 * (1.1 if ub == 2048 else 1.0)
            base_tg = 12 * cls["speed"] * QUANTS[quant] * regress
            params = {"ref": ref, "quant": quant, "threads": threads, "ub": ub,
                      "tool": "llama-sweep-bench" if kind == "sweep" else "llama-bench"}
            rec = {"schema_version": 1, "origin": cls["origin"], "run_id": f"run-{run}",
                   "matrix": {"name": "bench", "hash": "0" * 12}, "cell_id": f"{ref}-{quant}-{threads}-{ub}",
                   "agent_id": f"agent-{cls['id'][:6]}", "params": params, "status": "ok", "error": None,
                   "engine": {"kind": "llama.cpp", "ref": ref, "commit": f"{zlib.crc32(ref.encode()):08x}" * 5},
                   "model": {"name": "m", "quant": quant}, "hardware": cls["hardware"],
                   "hardware_class": cls["id"], "timestamps": {"bench_started": "2026-03-01T12:00:00Z"},
                   "bench_rows": [], "sweep_rows": []}
            if rng.random() < 0.01:
                rec.update(status="run_failed", error="llama-bench exited with 1", metrics={})
                records.append(rec)
                continue
            if kind == "sweep":
                rows = [{"rep": rep, "pp": ub, "tg": 128, "n_kv": k * ub, "t_pp": 1.0, "t_tg": 1.0,
                         "speed_pp": base_pp * 3 / (1 + k / 8) * rng.gauss(1, 0.01),
                         "speed_tg": base_tg / (1 + k / 16) * rng.gauss(1, 0.01)}
                        for rep in range(2) for k in range(SWEEP_ROWS)]
                first = [r for r in rows if r["n_kv"] == 0]
                rec["sweep_rows"] = rows
                rec["metrics"] = {"pp_tps": _metric(f"pp{ub}@kv0 (sweep)", [r["speed_pp"] for r in first]),
                                  "tg_tps": _metric("tg128@kv0 (sweep)", [r["speed_tg"] for r in first])}
            else:
                pp = [base_pp * rng.gauss(1, 0.02) for _ in range(SAMPLES)]
                tg = [base_tg * rng.gauss(1, 0.03) for _ in range(SAMPLES)]
                rec["metrics"] = {"pp_tps": _metric("pp512", pp), "tg_tps": _metric("tg128", tg)}
                for test, n_prompt, n_gen, s in (("pp512", 512, 0, pp), ("tg128", 0, 128, tg)):
                    rec["bench_rows"].append({
                        "test": test, "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": 0,
                        "avg_ts": rec["metrics"]["pp_tps" if n_gen == 0 else "tg_tps"]["mean"],
                        "stddev_ts": rec["metrics"]["pp_tps" if n_gen == 0 else "tg_tps"]["sd"],
                        "samples_ts": s, "samples_ns": [int(1e9 * (n_prompt + n_gen) / x) for x in s],
                        "fields": _fields(cls, ref, quant, threads, ub, n_prompt, n_gen)})
            records.append(rec)
    comparisons = []
    verdicts = ["same"] * 6 + ["slower", "faster", "unknown", "same binary"]
    for cls in classes[:N_MEASURED]:
        for quant, threads, ub in itertools.product(QUANTS, THREADS, UBATCH):
            for cand in REFS[1:]:
                for metric in ("pp_tps", "tg_tps"):
                    ratio = rng.gauss(0.93 if cand == "pr-518" and metric == "tg_tps" else 1.0, 0.01)
                    half = abs(rng.gauss(0.01, 0.004))
                    p = rng.random() ** 3
                    comparisons.append({
                        "cell": f"quant={quant} threads={threads} ub={ub}",
                        "params": {"quant": quant, "threads": threads, "ub": ub, "tool": "llama-bench"},
                        "hardware_class": cls["id"], "metric": metric, "baseline": REFS[0], "candidate": cand,
                        "ratio": ratio, "ci_low": ratio - half, "ci_high": ratio + half, "p_value": p,
                        "p_adjusted": min(1.0, p * 10), "test": rng.choice(["welch", "mann-whitney"]),
                        "verdict": "slower" if ratio < 0.95 else rng.choice(verdicts), "n_base": SAMPLES,
                        "n_cand": SAMPLES, "warnings": ["coefficient of variation 6.1% is high"]
                        if rng.random() < 0.05 else [], "more_runs": None})
    return records, comparisons


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    out_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="hwmatrix-report-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    records, comparisons = make_records(n)
    print(f"generated {len(records)} records, {len(comparisons)} comparisons in {time.perf_counter() - t0:.1f} s")
    targets = {"markdown": 5.0, "html": 30.0}
    failed = False
    for fmt, spec in reports.FORMATS.items():       # every registered format, with its file suffix
        path = out_dir / f"report{spec.suffix}"
        t = time.perf_counter()
        reports.render(fmt, records, comparisons, out_path=path)
        dt = time.perf_counter() - t
        target = targets.get(fmt)
        verdict = "" if target is None else (f"  (target < {target:g} s: {'ok' if dt < target else 'MISSED'})")
        failed |= target is not None and dt >= target
        print(f"{fmt:>8}: {dt:6.2f} s  {path.stat().st_size / 1e6:7.1f} MB  {path}{verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
