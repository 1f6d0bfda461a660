"""A record read back has typed parts (agent.spec.record.StoredRecord): the same JSON when
dumped again, a nested part of the wrong type refused by the record check with one line
naming the field, and readers get attributes instead of indexing dicts."""
from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import pytest

from agent.spec.record import Metric, ResultRecord, StoredRecord
from coordinator.reports import model
from coordinator.results import crosscheck, numbers
from coordinator.results.importers import convert_text
from coordinator.results.record_check import BadRecord, check_record, parse_record, stored_record

SAMPLES = Path(__file__).parent / "data" / "samples"
COMMIT = "0c1e57098" + "a" * 31
PROFILE = {"schema_version": 1, "hostname": "box",
           "cpu": {"brand": "AMD Ryzen 9 7950X 16-Core Processor", "vendor": "AMD", "family": 25, "model": 97,
                   "stepping": 2, "uarch": "zen4", "line": "ryzen", "cores": 16, "threads": 32, "sockets": 1,
                   "numa_nodes": 1, "caches": {"l3_kb": 65536}, "flags": ["avx2", "avx512f"]},
           "memory": {"ram_gb": 62.5, "channels": None},
           "gpus": {"count": 1, "driver": "550.54", "devices": [
               {"index": 0, "name": "NVIDIA GeForce RTX 4090", "vram_mib": 24564, "compute_capability": "8.9"}]},
           "os": {"system": "Linux", "kernel": "6.8.0", "governor": "performance", "boost": True, "thp": "madvise"},
           "toolchain": {"gcc": "13.2.0", "cmake": "3.28.3", "ccache": None}, "hardware_class": "zen4-4090-abcdef"}


def pipeline_record() -> dict:
    """A record filled in the way agent.engine.pipeline fills one, as it is stored."""
    rec = ResultRecord(
        run_id="r1", matrix={"name": "m", "hash": "0" * 12}, cell_id="c1", agent_id="a1",
        agent_key_fingerprint="f" * 16, params={"ref": "A", "quant": "Q4_0", "threads": 8}, status="ok",
        engine={"name": "mainline", "kind": "llama.cpp", "source": {"repo": "https://github.com/ggml-org/llama.cpp"},
                "ref": {"name": "A", "kind": "tag", "value": "b6000"}, "cmake": ["-DGGML_NATIVE=ON"]},
        model={"name": "tiny", "quant": "Q4_0"},
        tool={"name": "llama-bench", "argv": [], "exit_codes": [], "wall_s": [], "started": []},
        hardware=PROFILE, hardware_class=PROFILE["hardware_class"], timestamps={"started": "2026-03-01T12:00:00"})
    rec.engine["build_flags"] = ["-DGGML_NATIVE=ON", "-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=89"]
    rec.engine["sandboxed"] = False
    rec.engine.update(repo_id="github.com/ggml-org/llama.cpp", commit=COMMIT, upstream_commit=None)
    rec.engine["build"] = {"key": {"repo_id": "github.com/ggml-org/llama.cpp", "commit": COMMIT,
                                   "cmake_flags": rec.engine["build_flags"], "compiler": "c++ 13.2.0",
                                   "cmake": "3.28.3", "isa": None, "nvcc": "12.4", "isa_off": ("amx",)},
                           "digest": "d" * 20, "cached": True, "seconds": 0.25}
    rec.engine["binary_hash"] = "b" * 64
    rec.model.update(path="/cache/tiny-Q4_0.gguf", sha256="5" * 64, source_sha256=None)
    rec.hygiene = {"load": 0.1, "warmup": True, "extra_warmup_runs": 0}
    rec.tool["argv"].append(["/cache/bin/llama-bench", "-m", "/cache/tiny-Q4_0.gguf", "-r", "3"])
    rec.tool["exit_codes"].append(0)
    rec.tool["wall_s"].append(1.2345)
    rec.tool["started"].append("2026-03-01T12:00:01")
    rec.bench_rows.append({"process": 1, "test": "tg16", "n_prompt": 0, "n_gen": 16, "n_depth": 0, "avg_ts": 41.1,
                           "stddev_ts": 0.3, "samples_ts": [41.0, 41.5, 40.8], "samples_ns": [390243902, 385542168],
                           "fields": {"n_threads": 8, "use_mmap": True, "backends": "CUDA"}})
    rec.sweep_rows.append({"rep": 1, "pp": 512, "tg": 128, "n_kv": 0, "t_pp": 0.5, "speed_pp": 1024.0,
                           "t_tg": 3.2, "speed_tg": 40.0})
    rec.repetitions = {"min": 3, "max": 3, "done": 3, "processes": 1, "ci_half_width_pct": {"tg_tps": 1.2}}
    rec.metrics = {"tg_tps": Metric.from_samples("tg16", [41.0, 41.5, 40.8], process_sizes=[3])}
    rec.timestamps["finished"] = "2026-03-01T12:00:09"
    rec.logs = {"stdout.txt": "runs/r1/logs/c1/a1/stdout.txt"}
    return rec.model_dump(mode="json")


def stored_bytes(rec: dict) -> bytes:
    """How the spool and the importer store a record."""
    return json.dumps(rec, indent=1, sort_keys=True).encode()


def imported_records() -> list[dict]:
    names = ["05_ik_llama-bench+sweep-bench_md_Ryzen7950X_RTX4080_issue490.md",
             "03_ik_llama-bench_json_cpu-only_XeonE5-2690v3_pr273.txt",
             "11_mainline_llama-bench_jsonl_csv_sql_7800X3D_RTX4080_README.txt"]
    return [rec for name in names for rec in convert_text((SAMPLES / name).read_text(), "TR 3955WX + 2x3090").records]


# ---------------------------------------------------------------- the same JSON again

@pytest.mark.parametrize("rec", [pipeline_record(), *imported_records()],
                         ids=lambda rec: f"{rec['origin']}-{rec['cell_id']}")
def test_a_stored_record_read_typed_and_dumped_again_is_byte_identical(rec):
    blob = stored_bytes(rec)
    typed = StoredRecord.model_validate(json.loads(blob))
    assert stored_bytes(typed.model_dump(mode="json")) == blob


def test_a_record_written_before_newer_keys_existed_still_loads_and_gains_none():
    old = pipeline_record()
    for key in ("agent_key_fingerprint", "origin", "hygiene", "repetitions", "logs"):
        del old[key]
    del old["metrics"]["tg_tps"]["process_sizes"]
    del old["engine"]["build_flags"]
    typed = stored_record(old)
    assert typed.origin == "measured" and typed.metrics["tg_tps"].process_sizes == []
    assert typed.engine.build_flags is None
    assert typed.model_dump(mode="json") == old


def test_the_writers_record_keeps_its_parts_as_it_was_given_them():
    rec = pipeline_record()
    assert rec["hardware"] == PROFILE
    assert rec["engine"]["build"]["key"]["isa_off"] == ["amx"]
    assert ResultRecord.model_validate(rec).model_dump(mode="json") == rec


# ---------------------------------------------------------------- a part of the wrong type

def _with(path: str, value) -> dict:
    rec = pipeline_record()
    *parents, last = path.split(".")
    node = rec
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[int(last) if isinstance(node, list) else last] = value
    return rec


WRONG = {
    "engine.build": "fast",
    "engine.build.key": ["abc"],
    "engine.build.key.cmake_flags": "-DGGML_NATIVE=ON",
    "engine.build_flags": "-DGGML_NATIVE=ON",
    "engine.source": "https://github.com/ggml-org/llama.cpp",
    "tool.argv": "llama-bench -r 3",
    "tool.argv.0.4": 3,
    "model.source_sha256": 5,
    "hardware.hardware_class": 7,
    "hardware.gpus.devices.0.name": None,
    "bench_rows.0.samples_ns.1": "385542168",
    "sweep_rows.0.speed_tg": True,
}


@pytest.mark.parametrize("path", WRONG)
def test_a_nested_part_of_the_wrong_type_is_refused_with_one_line_naming_it(path):
    rec = _with(path, WRONG[path])
    with pytest.raises(BadRecord) as caught:
        check_record(rec)
    reason = str(caught.value)
    assert reason.startswith(f"{path}: ") and "\n" not in reason and len(reason) < 300, reason
    with pytest.raises(BadRecord, match=path.replace(".", r"\.")):
        parse_record(stored_bytes(rec), "runs/r1/results/c1/a1.json")


# ---------------------------------------------------------------- readers

def test_readers_get_typed_attributes_defaults_for_what_is_absent_and_the_rest_kept():
    rec = stored_record(pipeline_record())
    assert rec.engine.build.key.commit == COMMIT and rec.engine.build.key.cmake_flags[-1].endswith("=89")
    assert rec.engine.build.digest == "d" * 20                    # a key the part does not type is kept
    assert rec.engine.ref == {"name": "A", "kind": "tag", "value": "b6000"}
    assert rec.hardware.cpu.uarch == "zen4" and rec.hardware.gpus.devices[0].name == "NVIDIA GeForce RTX 4090"
    assert rec.tool.argv[0][0].endswith("llama-bench") and rec.model.source_sha256 is None
    assert rec.metrics["tg_tps"].samples == [41.0, 41.5, 40.8] and rec.sweep_rows[0].speed_tg == 40.0
    imported = stored_record(imported_records()[0])
    assert imported.hardware.label == "TR 3955WX + 2x3090" and imported.hardware.cpu is None
    assert imported.tool.argv is None and imported.engine.build is None
    assert "cpu" not in imported.model_dump()["hardware"]


def test_a_readers_output_is_the_same_from_the_typed_hardware():
    measured, imported = pipeline_record(), imported_records()[0]
    assert model.class_name(measured) == "AMD Ryzen 9 7950X 16-Core Processor + RTX 4090 (zen4-4)"
    assert model.class_name(imported) == "TR 3955WX + 2x3090"
    no_gpu = {**measured, "hardware": {"cpu": {"brand": " Xeon "}, "gpus": {"count": 0}}}
    assert model.class_name(no_gpu) == "Xeon (zen4-4)"
    assert model.class_name({**measured, "hardware": {}}) == "unknown CPU (zen4-4)"


# ---------------------------------------------------------------- how a p-value is printed

def test_the_cross_check_and_the_reports_print_p_values_from_one_place_below_both():
    assert model.fmt_p is numbers.fmt_p
    assert [numbers.fmt_p(p) for p in (None, 0.0123, 1e-5)] == ["-", "0.012", "1.0e-05"]
    tree = ast.parse(inspect.getsource(crosscheck))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(m.startswith("coordinator.reports") for m in imported), imported
