"""`hwmatrix report`: every format renders a small synthetic record set (2 refs x 2 hardware
classes x 2 cells, one sweep-bench record, one imported record) and shows the numbers the
records hold; expected numbers are computed here from the records, never typed in."""
from __future__ import annotations

import csv
import io
import json
import random
import re
import sqlite3
import statistics

import pytest

from agent.spec.record import Metric
from coordinator import reports
from coordinator.reports import model

CLASS_GPU, CLASS_CPU = "a1b2c3d4e5f6", "0f9e8d7c6b5a"
PROFILES = {
    CLASS_GPU: {"cpu": {"brand": "AMD Ryzen 9 7950X 16-Core Processor"},
                "gpus": {"count": 2, "devices": [{"name": "NVIDIA GeForce RTX 3090"},
                                                 {"name": "NVIDIA GeForce RTX 3090"}]}},
    CLASS_CPU: {"cpu": {"brand": "Intel(R) Xeon(R) w5-3435X"}, "gpus": {"count": 0, "devices": []}},
}
IMPORTED_LABEL = "TR 3955WX + 2x3090 (posted in #523)"


def _samples(rng: random.Random, mean: float, n: int = 10) -> list[float]:
    return [round(rng.gauss(mean, mean * 0.02), 3) for _ in range(n)]


def _bench_row(test: str, n_prompt: int, n_gen: int, samples: list[float], ik: bool, commit: str,
               quant: str) -> dict:
    if ik:   # ik's schema: per-backend booleans, a `test` field, no n_depth / backends
        fields = {"build_commit": commit, "build_number": 3900, "cuda": False, "vulkan": False, "blas": True,
                  "metal": False, "sycl": False, "gpu_blas": False, "rpc": "0", "cpu_info": "Xeon w5-3435X",
                  "gpu_info": "", "model_type": f"llama ?B {quant}", "n_threads": 2, "flash_attn": True,
                  "test": test, "n_prompt": n_prompt, "n_gen": n_gen, "test_time": "2026-01-02T03:04:05Z"}
    else:
        fields = {"build_commit": commit, "build_number": 6000, "backends": "CUDA", "n_depth": 0,
                  "cpu_info": "AMD Ryzen 9 7950X", "gpu_info": "NVIDIA GeForce RTX 3090, NVIDIA GeForce RTX 3090",
                  "model_type": f"llama ?B {quant}", "n_threads": 2, "flash_attn": 0, "n_prompt": n_prompt,
                  "n_gen": n_gen, "test_time": "2026-01-02T03:04:05Z"}
    return {"test": test, "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": 0 if not ik else 0,
            "avg_ts": statistics.fmean(samples), "stddev_ts": statistics.stdev(samples), "samples_ts": samples,
            "samples_ns": [int(1e9 * (n_prompt + n_gen) / s) for s in samples], "fields": fields}


def make_records(runs_per_cell: int = 1) -> list[dict]:
    rng = random.Random(7)
    records = []
    for hw_class, profile in PROFILES.items():
        ik = hw_class == CLASS_CPU
        for ref, speedup in (("a", 1.0), ("b", 0.9)):
            for quant, base in (("Q8_0", 100.0), ("Q4_0", 150.0)):
                for run in range(runs_per_cell):
                    pp, tg = _samples(rng, base * speedup * 4), _samples(rng, base * speedup / 5)
                    commit = "abc1234" if ref == "a" else "def5678"
                    records.append({
                        "run_id": f"r{run}", "cell_id": f"{ref}-{quant}", "agent_id": hw_class, "origin": "measured",
                        "params": {"ref": ref, "quant": quant, "threads": 2, "tool": "llama-bench"},
                        "status": "ok", "hardware_class": hw_class, "hardware": profile,
                        "engine": {"kind": "ik_llama.cpp" if ik else "llama.cpp", "commit": commit * 5},
                        "model": {"name": "tiny", "quant": quant, "path": f"/m/tiny-{quant}.gguf"},
                        "metrics": {"pp_tps": Metric.from_samples("pp64", pp).model_dump(),
                                    "tg_tps": Metric.from_samples("tg16", tg).model_dump()},
                        "bench_rows": [_bench_row("pp64", 64, 0, pp, ik, commit, quant),
                                       _bench_row("tg16", 0, 16, tg, ik, commit, quant)],
                        "sweep_rows": [], "timestamps": {"bench_started": "2026-01-02T03:04:05Z"}})
    sweep_rows = [{"rep": rep, "pp": 512, "tg": 128, "n_kv": n_kv, "t_pp": 1.0, "t_tg": 1.0,
                   "speed_pp": 400.0 - n_kv / 10 + rep, "speed_tg": 20.0 - n_kv / 200 + rep / 10}
                  for rep in range(2) for n_kv in (0, 512, 1024)]
    first = [r for r in sweep_rows if r["n_kv"] == 0]
    records.append({
        "run_id": "r0", "cell_id": "sweep", "agent_id": CLASS_GPU, "origin": "measured",
        "params": {"ref": "a", "quant": "Q8_0", "threads": 2, "tool": "llama-sweep-bench"}, "status": "ok",
        "hardware_class": CLASS_GPU, "hardware": PROFILES[CLASS_GPU], "engine": {"commit": "abc1234" * 5},
        "metrics": {"pp_tps": Metric.from_samples("pp512@kv0 (sweep)", [r["speed_pp"] for r in first]).model_dump(),
                    "tg_tps": Metric.from_samples("tg128@kv0 (sweep)", [r["speed_tg"] for r in first]).model_dump()},
        "bench_rows": [], "sweep_rows": sweep_rows, "timestamps": {}})
    records.append({
        "run_id": "import-x", "cell_id": "imp", "agent_id": "posted", "origin": "imported",
        "params": {"ref": "a", "quant": "Q8_0", "threads": 2, "tool": "llama-bench"}, "status": "ok",
        "hardware_class": "imported:5f5f5f5f5f5f", "hardware": {"label": IMPORTED_LABEL},
        "engine": {"kind": "ik_llama.cpp", "commit": "0c1e570"},
        "metrics": {"tg_tps": Metric(test="tg16", samples=[], n=0, mean=5.5, sd=0.12).model_dump()},
        "bench_rows": [{"test": "tg16", "n_prompt": 0, "n_gen": 16, "n_depth": 0, "avg_ts": 5.5, "stddev_ts": 0.12,
                        "samples_ts": [], "samples_ns": [], "fields": {"build_commit": "0c1e570", "test": "tg16"}}],
        "sweep_rows": [], "timestamps": {"imported": "2026-02-01T00:00:00Z"}})
    return records


def make_comparisons(records: list[dict]) -> list[dict]:
    out = []
    for rec in records:
        if rec["params"]["ref"] != "b":
            continue
        base = next(r for r in records if r["hardware_class"] == rec["hardware_class"]
                    and r["params"] == {**rec["params"], "ref": "a"})
        for metric in ("pp_tps", "tg_tps"):
            b, c = base["metrics"][metric], rec["metrics"][metric]
            ratio = c["mean"] / b["mean"]
            out.append({"cell": f"quant={rec['params']['quant']} threads=2", "params": {**rec["params"]},
                        "hardware_class": rec["hardware_class"], "metric": metric, "baseline": "a",
                        "candidate": "b", "ratio": ratio, "ci_low": ratio * 0.98, "ci_high": ratio * 1.02,
                        "p_value": 1e-5, "p_adjusted": 4e-5, "test": "welch", "verdict": "slower",
                        "n_base": b["n"], "n_cand": c["n"],
                        "warnings": ["fewer than 9 samples"] if metric == "tg_tps" else [], "more_runs": None})
    return out


@pytest.fixture(scope="module")
def records():
    return make_records()


@pytest.fixture(scope="module")
def comparisons(records):
    return make_comparisons(records)


@pytest.fixture(scope="module")
def html_text(records, comparisons):
    return reports.render("html", records, comparisons)


def _mean_sd(rec: dict, metric: str) -> str:
    s = rec["metrics"][metric]["samples"]
    return f"{statistics.fmean(s):.2f} ± {statistics.stdev(s):.2f}"


def _bench(records):
    return [r for r in records if r["origin"] == "measured" and r["params"]["tool"] == "llama-bench"]


def test_markdown_shows_every_cell_mean_and_sd_per_hardware_class(records, comparisons):
    md = reports.render("markdown", records, comparisons)
    for rec in _bench(records):
        for metric in ("pp_tps", "tg_tps"):
            assert _mean_sd(rec, metric) in md
    for hw_class in PROFILES:
        assert f"class `{hw_class}`" in md
    assert "| ref " in md and "|:--" in md      # a pipe table with alignment colons


def test_markdown_ab_table_shows_ratio_ci_test_correction_and_warnings(records, comparisons):
    md = reports.render("markdown", records, comparisons, correction="bh")
    for c in comparisons:
        assert f"{c['ratio']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]" in md
    assert "welch" in md and "Benjamini-Hochberg" in md and "95% CI" in md
    assert md.count("fewer than 9 samples") == sum(1 for c in comparisons if c["warnings"])


def test_markdown_sweep_table_shows_s_pp_and_s_tg_per_n_kv(records):
    md = reports.render("md", records, [])
    rows = next(r for r in records if r["sweep_rows"])["sweep_rows"]
    for n_kv in (0, 512, 1024):
        pp = [r["speed_pp"] for r in rows if r["n_kv"] == n_kv]
        assert f"{statistics.fmean(pp):.2f} ± {statistics.stdev(pp):.2f}" in md
    assert "A/B comparisons" not in md          # no comparisons, no empty section


def test_pivot_has_one_row_per_hardware_class_and_one_column_per_cell(records):
    report = model.build(records)
    headers, rows = report.pivot("tg_tps")
    assert [r[0] for r in rows] == list(report.classes.values())
    assert len(rows) == 3                        # two measured classes + the imported one
    tg_cells = {model.params_key(r["params"]) for r in records if "tg_tps" in r["metrics"]}
    assert len(headers) - 1 == len(tg_cells)


def test_repeated_runs_pool_to_the_mean_and_sd_of_all_their_samples():
    recs = make_records(runs_per_cell=3)
    report = model.build(recs)
    group = [r for r in _bench(recs) if r["hardware_class"] == CLASS_GPU and r["params"]["ref"] == "a"
             and r["params"]["quant"] == "Q4_0"]
    samples = [s for r in group for s in r["metrics"]["pp_tps"]["samples"]]
    pooled = report.summaries[(CLASS_GPU, model.params_key(group[0]["params"]))].metrics["pp_tps"]
    assert pooled.n == len(samples) == 30
    assert pooled.mean == pytest.approx(statistics.fmean(samples))
    assert pooled.sd == pytest.approx(statistics.stdev(samples))


def test_class_names_are_cpu_gpus_and_short_hash_or_the_imported_label(records):
    report = model.build(records)
    assert report.classes[CLASS_GPU] == f"AMD Ryzen 9 7950X 16-Core Processor + 2x RTX 3090 ({CLASS_GPU[:6]})"
    assert report.classes[CLASS_CPU] == f"Intel(R) Xeon(R) w5-3435X ({CLASS_CPU[:6]})"
    assert report.classes["imported:5f5f5f5f5f5f"] == IMPORTED_LABEL


def test_imported_mean_keeps_the_posted_sd(records):
    md = reports.render("markdown", records, [])
    assert "5.50 ± 0.12" in md and "imported numbers" in md


def test_csv_has_one_row_per_record_and_metric_with_samples_joined(records):
    rows = list(csv.DictReader(io.StringIO(reports.render("csv", records, []))))
    assert len(rows) == sum(len(r["metrics"]) for r in records)
    for rec in records:
        for metric, m in rec["metrics"].items():
            row = next(x for x in rows if x["run_id"] == rec["run_id"] and x["cell_id"] == rec["cell_id"]
                       and x["hardware_class"] == rec["hardware_class"] and x["metric"] == metric)
            assert [float(s) for s in row["samples"].split(";") if s] == m["samples"]
            assert float(row["mean"]) == pytest.approx(m["mean"])
            assert row["quant"] == rec["params"]["quant"]


def test_json_has_record_summaries_pivot_and_comparisons(records, comparisons):
    data = json.loads(reports.render("json", records, comparisons))
    assert len(data["records"]) == len(records)
    assert data["comparisons"] == comparisons
    assert "samples" not in data["records"][0]["metrics"]["pp_tps"]
    rec = _bench(records)[0]
    summary = next(s for s in data["records"] if s["cell_id"] == rec["cell_id"]
                   and s["hardware_class"] == rec["hardware_class"])
    assert summary["metrics"]["pp_tps"]["mean"] == pytest.approx(statistics.fmean(rec["metrics"]["pp_tps"]["samples"]))
    pp_rows = {r["hardware_class"]: r["values"] for r in data["pivot"]["pp_tps"]["rows"]}
    assert len(pp_rows) == 3 and pp_rows["imported:5f5f5f5f5f5f"] == [None] * len(data["pivot"]["pp_tps"]["columns"])


def test_html_is_one_self_contained_file_with_all_three_plot_kinds(html_text, records, comparisons):
    images = len(re.findall(r'<img [^>]*src="data:image/png;base64,', html_text)) + html_text.count("<svg")
    assert images >= 4                         # pp bars, tg bars, one sweep chart, the forest plot
    assert not re.search(r"https?://", html_text)
    assert not re.search(r"<(script|link)\b", html_text)
    assert html_text.count("How to read this") == images
    assert "Sweep-bench" in html_text and "A/B ratios" in html_text
    for rec in _bench(records):
        assert _mean_sd(rec, "tg_tps") in html_text


def test_html_draws_no_forest_or_sweep_plot_without_their_data(records):
    plain = [r for r in records if not r["sweep_rows"]]
    text = reports.render("html", plain, [])
    assert "A/B ratios" not in text and "Sweep-bench" not in text
    assert text.count("data:image/png;base64,") == 2   # the pp and tg bar charts only


def test_a_sweep_with_a_single_n_kv_point_draws_no_curve(records):
    import copy

    one_point = copy.deepcopy([r for r in records if r["sweep_rows"]])
    for rec in one_point:
        rec["sweep_rows"] = [row for row in rec["sweep_rows"] if row["n_kv"] == 0]
    text = reports.render("html", one_point, [])
    assert "Sweep-bench" not in text
    assert "pp512@kv0 (sweep)" in text                  # still in the tables


def test_sqlite_export_has_llama_bench_row_per_bench_row_with_required_columns(records, tmp_path):
    path = tmp_path / "llama-bench.sqlite"
    reports.render("sqlite", records, [], out_path=path)
    conn = sqlite3.connect(path)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(llama_bench)")]
    assert cols == [name for name, _, _ in reports.sqlite_export.COLUMNS]
    assert conn.execute("SELECT COUNT(*) FROM llama_bench").fetchone()[0] == sum(len(r["bench_rows"]) for r in records)
    required = ["cpu_info", "gpu_info", "backends", "n_gpu_layers", "tensor_buft_overrides", "model_filename",
                "model_type", "n_batch", "n_ubatch", "embeddings", "cpu_mask", "cpu_strict", "poll", "n_threads",
                "type_k", "type_v", "use_mmap", "no_kv_offload", "split_mode", "main_gpu", "tensor_split",
                "flash_attn", "n_prompt", "n_gen", "n_depth", "build_commit", "test_time", "avg_ts"]
    nulls = " OR ".join(f"{c} IS NULL" for c in required)
    assert conn.execute(f"SELECT COUNT(*) FROM llama_bench WHERE {nulls}").fetchone()[0] == 0
    rec = _bench(records)[0]
    avg = conn.execute("SELECT avg_ts FROM llama_bench WHERE build_commit=? AND cpu_info=? AND n_gen=0 "
                       "AND model_type=?", (rec["bench_rows"][0]["fields"]["build_commit"],
                                            rec["bench_rows"][0]["fields"]["cpu_info"], "llama ?B Q8_0")).fetchall()
    assert any(a == pytest.approx(rec["bench_rows"][0]["avg_ts"]) for a, in avg)


def test_sqlite_export_derives_backends_from_ik_booleans_and_defaults_n_depth(records):
    data = reports.render("sqlite", records, [])
    conn = sqlite3.connect(":memory:")
    conn.deserialize(data)
    ik = conn.execute("SELECT DISTINCT backends, n_depth, flash_attn FROM llama_bench WHERE cpu_info=?",
                      ("Xeon w5-3435X",)).fetchall()
    assert ik == [("BLAS", 0, 1)]
    imported = conn.execute("SELECT cpu_info, avg_ts, test_time FROM llama_bench "
                            "WHERE build_commit='0c1e570'").fetchall()
    assert imported == [(IMPORTED_LABEL, 5.5, "2026-02-01T00:00:00Z")]


# compare-llama-bench.py's LLAMA_BENCH_KEY_PROPERTIES: rows of two builds pair when all of these are equal.
KEY_PROPERTIES = ["cpu_info", "gpu_info", "backends", "n_gpu_layers", "tensor_buft_overrides", "model_filename",
                  "model_type", "n_batch", "n_ubatch", "embeddings", "cpu_mask", "cpu_strict", "poll", "n_threads",
                  "type_k", "type_v", "use_mmap", "no_kv_offload", "split_mode", "main_gpu", "tensor_split",
                  "flash_attn", "n_prompt", "n_gen", "n_depth"]


def test_sqlite_rows_pair_the_way_compare_llama_bench_joins_them(records, comparisons):
    """The script self-joins llama_bench on every key property with build_commit = -b / -c and
    divides AVG(avg_ts); that must pair each cell and reproduce our ratio."""
    conn = sqlite3.connect(":memory:")
    conn.deserialize(reports.render("sqlite", records, []))
    on = " AND ".join(f"tb.{p} = tc.{p}" for p in KEY_PROPERTIES)
    group = ", ".join(f"tb.{p}" for p in KEY_PROPERTIES)
    rows = conn.execute(f"SELECT tb.cpu_info, tb.model_type, tb.n_gen, AVG(tb.avg_ts), AVG(tc.avg_ts) "
                        f"FROM llama_bench tb JOIN llama_bench tc ON {on} AND tb.build_commit = 'abc1234' "
                        f"AND tc.build_commit = 'def5678' GROUP BY {group}").fetchall()
    assert len(rows) == len(comparisons)
    for cpu, model_type, n_gen, base, cand in rows:
        rec = next(r for r in _bench(records) if r["params"]["ref"] == "b"
                   and r["bench_rows"][0]["fields"]["cpu_info"] == cpu
                   and r["params"]["quant"] == model_type.split()[-1])
        comp = next(c for c in comparisons if c["hardware_class"] == rec["hardware_class"]
                    and c["params"]["quant"] == rec["params"]["quant"]
                    and c["metric"] == ("tg_tps" if n_gen else "pp_tps"))
        assert cand / base == pytest.approx(comp["ratio"])


def test_render_writes_out_path_and_rejects_unknown_formats(records, tmp_path):
    out = tmp_path / "r.md"
    text = reports.render("markdown", records, [], out_path=out)
    assert out.read_text(encoding="utf-8") == text
    with pytest.raises(ValueError, match="unknown report format"):
        reports.render("pdf", records, [])


@pytest.mark.parametrize("fmt", reports.FORMATS)
def test_every_format_renders_an_empty_record_set(fmt):
    out = reports.render(fmt, [], [])
    assert out and isinstance(out, bytes if fmt == "sqlite" else str)


def test_failed_runs_are_counted_in_the_status_column(records):
    failed = {**_bench(records)[0], "run_id": "retry", "status": "run_failed", "metrics": {}, "bench_rows": []}
    md = reports.render("markdown", [*records, failed], [])
    assert "1 ok, 1 run_failed" in md


def test_html_plots_draw_dollar_signs_in_labels_as_text_not_as_tex(records, comparisons):
    """A class label or params value like `$\\frac{$` passes the record check (it is plain text)
    but made matplotlib's mathtext raise, so the whole HTML report failed."""
    odd = [{**r, "params": {**r["params"], "quant": "$\\frac{$" + r["params"]["quant"]},
            "hardware": {"label": "$x^{$ box"}} for r in records]
    html = reports.render("html", odd, [{**c, "cell": "$\\undefined$"} for c in comparisons])
    assert html.count("data:image/png;base64,") >= 3 and "$x^{$ box" in html
