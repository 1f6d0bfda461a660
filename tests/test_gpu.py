"""GPUs: CUDA build flags from the probed GPUs, their place in the build cache key, the
visible GPUs of a cell, and a clear build_failed where no CUDA build can be made.

Without an NVIDIA GPU and nvcc these run on injected profiles; the real CUDA build and run
(the last test) is skipped with the reason."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

import agent.engine.build as build_mod
from agent.engine.build import BuildError, build_flags, cuda_architectures, make_key, needs_cuda
from agent.spec.cellspec import (CellSpec, EngineSpec, Hygiene, ModelSpec, RefSpec, Repetitions, SdistSource,
                            ToolArgs)
from agent.engine.pipeline import _gpu_env, run_cell
from agent.machine.override import PROFILE_ENV
from agent.machine.profile import GpuDevice, GpuInfo, HardwareProfile
from agent.engine.runner import engine_env
from agent.engine.sources import ResolvedSource
from coordinator.planning.plan import load_plan

GPU = {"RTX 3090": "8.6", "RTX A4500": "8.6", "H100": "9.0", "RTX 4090": "8.9"}
FAKE_RELEASE = "Cuda compilation tools, release 12.4, V12.4.131"


def devices(*names: str) -> list[GpuDevice]:
    return [GpuDevice(index=i, name=f"NVIDIA {name}", compute_capability=GPU[name]) for i, name in enumerate(names)]


def profile_with(*names: str) -> HardwareProfile:
    found = devices(*names)
    return HardwareProfile(gpus=GpuInfo(count=len(found), devices=found))


@pytest.fixture
def nvcc_on_path(tmp_path, monkeypatch) -> Path:
    """A stand-in nvcc that only answers --version, first on PATH (flags, not compiling)."""
    bin_dir = tmp_path / "cuda-bin"
    bin_dir.mkdir()
    nvcc = bin_dir / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\necho '{FAKE_RELEASE}'\n")
    nvcc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return nvcc


@pytest.fixture
def no_nvcc(tmp_path, monkeypatch):
    """No nvcc on PATH and none at the toolkit's default place, even on a CUDA machine."""
    keep = [d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "nvcc").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join(keep))
    monkeypatch.setattr(build_mod, "NVCC_FALLBACK", tmp_path / "no-cuda" / "bin" / "nvcc")


# ---------------------------------------------------------------- flags from the probed GPUs

@pytest.mark.parametrize("gpus, archs", [
    (["RTX 3090"], "86"),
    (["RTX 3090", "RTX 3090", "RTX A4500"], "86"),        # TR 3955WX 2x3090 + A4500: one arch
    (["H100"], "90"),
    (["RTX 4090", "RTX 3090"], "86;89"),                   # deduplicated and sorted, not in probe order
], ids=["1x3090", "2x3090+A4500", "H100", "4090+3090"])
def test_a_gpu_cell_builds_with_cuda_for_exactly_this_machines_architectures(nvcc_on_path, gpus, archs):
    flags = build_flags(["-DGGML_NATIVE=ON"], 1, profile_with(*gpus).gpus.devices)
    assert flags == ["-DGGML_NATIVE=ON", "-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={archs}"]


def test_architectures_come_from_the_profile_dicts_a_record_carries_too():
    as_dicts = profile_with("RTX 4090", "H100", "RTX 3090").model_dump()["gpus"]["devices"]
    assert cuda_architectures(as_dicts) == ["86", "89", "90"]


def test_a_gpu_without_a_known_compute_capability_adds_no_architecture():
    unknown = GpuDevice(index=1, name="NVIDIA mystery", compute_capability=None)
    assert cuda_architectures([*devices("H100"), unknown]) == ["90"]


@pytest.mark.parametrize("gpus", [None, 0])
def test_a_cpu_cell_gets_its_flags_unchanged_and_needs_no_nvcc(no_nvcc, gpus):
    flags = build_flags(["-DGGML_NATIVE=ON"], gpus, devices("RTX 3090"))
    assert flags == ["-DGGML_NATIVE=ON"]
    assert not any("CUDA" in flag for flag in flags)


def test_cuda_on_in_the_engine_flags_makes_a_cuda_build_without_a_gpus_setting(nvcc_on_path):
    assert build_flags(["-DGGML_CUDA=ON"], None, devices("H100")) == [
        "-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90"]


def test_the_matrix_own_cuda_architectures_are_kept(nvcc_on_path):
    given = ["-DCMAKE_CUDA_ARCHITECTURES=80;90"]
    assert build_flags(given, 2, devices("RTX 3090")) == [*given, "-DGGML_CUDA=ON"]
    # ... and then no probed GPU is needed at all (a cross build)
    assert build_flags(given, None, []) == given and not needs_cuda(None, given)
    assert build_flags(["-DGGML_CUDA=ON", *given], None, []) == ["-DGGML_CUDA=ON", *given]


def test_an_explicit_cuda_off_in_the_matrix_wins_over_the_gpus_setting(no_nvcc):
    assert build_flags(["-DGGML_CUDA:BOOL=OFF"], 2, devices("RTX 3090")) == ["-DGGML_CUDA:BOOL=OFF"]


def test_a_cuda_build_without_nvcc_fails_with_the_message_that_says_where_it_looked(no_nvcc):
    with pytest.raises(BuildError) as err:
        build_flags([], 1, devices("RTX 3090"))
    assert str(err.value) == "CUDA build needs nvcc: not found on PATH or /usr/local/cuda/bin"


def test_nvcc_at_the_toolkit_default_place_counts_when_it_is_not_on_path(no_nvcc, nvcc_on_path, monkeypatch):
    keep = [d for d in os.environ["PATH"].split(os.pathsep) if d != str(nvcc_on_path.parent)]
    monkeypatch.setenv("PATH", os.pathsep.join(keep))
    monkeypatch.setattr(build_mod, "NVCC_FALLBACK", nvcc_on_path)
    assert build_flags([], 1, devices("H100"))[-1] == "-DCMAKE_CUDA_ARCHITECTURES=90"


def test_a_cuda_build_on_a_machine_whose_probe_found_no_gpu_fails_clearly(nvcc_on_path):
    with pytest.raises(BuildError, match="probe found none on this machine; give -DCMAKE_CUDA_ARCHITECTURES"):
        build_flags(["-DGGML_CUDA=ON"], None, [])


# ---------------------------------------------------------------- the build cache key

RESOLVED = ResolvedSource(repo_id="sdist:llama-cpp-python@0.3.35,0.3.36", mirror=Path("/nonexistent"),
                          commit="0" * 40)


def test_cuda_and_cpu_builds_of_one_commit_are_different_cache_entries(nvcc_on_path):
    cpu = make_key(RESOLVED, build_flags([], 0, devices("RTX 3090")))
    cuda = make_key(RESOLVED, build_flags([], 1, devices("RTX 3090")))
    other_gpus = make_key(RESOLVED, build_flags([], 1, devices("RTX 4090", "RTX 3090")))
    assert len({cpu.digest(), cuda.digest(), other_gpus.digest()}) == 3
    assert cpu.nvcc is None and cuda.nvcc == FAKE_RELEASE


def test_another_nvcc_release_is_another_cuda_build(nvcc_on_path):
    flags = build_flags([], 1, devices("H100"))
    first = make_key(RESOLVED, flags)
    nvcc_on_path.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.8, V12.8.93'\n")
    assert make_key(RESOLVED, flags).digest() != first.digest()


def test_cpu_build_keys_keep_the_digest_they_had_before_cuda_so_cached_builds_stay_valid():
    key = make_key(RESOLVED, ["-DGGML_NATIVE=ON"])
    before = {k: v for k, v in asdict(key).items() if k != "nvcc"}
    assert key.digest() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:20]


# ---------------------------------------------------------------- visible GPUs and the plan

def test_gpus_2_shows_the_engine_the_first_two_gpus_only():
    assert engine_env(_gpu_env(2))["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert engine_env(_gpu_env(0))["CUDA_VISIBLE_DEVICES"] == ""       # none: a CPU run
    assert "CUDA_VISIBLE_DEVICES" not in _gpu_env(None)


def test_the_agent_environment_does_not_leak_its_visible_gpus_into_an_engine(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")       # what Ray gives a task that asked for no GPU
    assert "CUDA_VISIBLE_DEVICES" not in engine_env(_gpu_env(None))
    assert engine_env(_gpu_env(1))["CUDA_VISIBLE_DEVICES"] == "0"


def test_the_plan_lists_the_cuda_build_of_a_ref_apart_from_its_cpu_build(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("""
name: g
engines: {mainline: {kind: llama.cpp, sdist: {package: llama-cpp-python, versions: ["0.3.36"]}}}
models: {tiny: {generate: tiny-llama}}
args: {ngl: 99, ts: "3/1", sm: layer}
matrix:
  ref: [{name: m, tag: v0.3.36}]
  gpus: [0, 1, 2]
""")
    plan = load_plan(str(path))
    assert len({c.build_order for c in plan.cells}) == 2
    labels = {c.settings["gpus"]: c.build_label for c in plan.cells}
    assert labels[0].endswith("(tag v0.3.36)") and labels[1] == labels[2] == labels[0] + " +CUDA"
    spec = next(c for c in plan.cells if c.settings["gpus"] == 2).to_spec("r", "file:///tmp/x")
    assert spec.gpus == 2 and (spec.args.ngl, spec.args.ts, spec.args.sm) == (99, "3/1", "layer")


# ---------------------------------------------------------------- through the real pipeline

def _gpu_cell(store_url: str, gpus: int = 1) -> CellSpec:
    return CellSpec(
        run_id="gpu", matrix_name="gpu", matrix_hash="0" * 12, cell_id=f"gpu-cell-{gpus}", params={"ref": "m36"},
        engine=EngineSpec(name="mainline", kind="llama.cpp",
                          sdist=SdistSource(package="llama-cpp-python", versions=["0.3.35", "0.3.36"])),
        ref=RefSpec(name="m36", kind="tag", value="v0.3.36"),
        model=ModelSpec(name="tiny", generate="tiny-llama"), quant="Q8_0", tool="llama-bench",
        args=ToolArgs(n_prompt=64, n_gen=16, ngl=99), gpus=gpus,
        repetitions=Repetitions(min=3, max=3, min_process_s=0), hygiene=Hygiene(drop_caches="off"),
        timeout_s=300, store_url=store_url)


def test_a_gpu_cell_on_a_machine_without_nvcc_is_a_build_failed_record_not_a_traceback(
        tmp_path, monkeypatch, isolated_spool, no_nvcc):
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({"gpus": {"devices": [
        {"index": 0, "name": "NVIDIA GeForce RTX 3090", "compute_capability": "8.6"}]}}))
    monkeypatch.setenv(PROFILE_ENV, str(profile))
    store = (tmp_path / "store").as_uri()
    record = run_cell(_gpu_cell(store))
    assert record.status == "build_failed"
    assert record.error == "CUDA build needs nvcc: not found on PATH or /usr/local/cuda/bin"
    assert "commit" not in record.engine          # it failed before any checkout or compile
    stored = json.loads((tmp_path / "store" / "runs/gpu/results/gpu-cell-1" / f"{record.agent_id}.json").read_text())
    assert stored["status"] == "build_failed" and stored["error"] == record.error
    assert stored["hardware"]["gpus"]["devices"][0]["compute_capability"] == "8.6"


@pytest.mark.engines
def test_the_derived_cuda_flags_reach_cmake_in_a_build_of_their_own(tmp_path, monkeypatch, isolated_spool,
                                                                     nvcc_on_path):
    """Real mainline tree and cmake, with an nvcc that cannot compile: cmake's CUDA toolkit
    search fails, and the build log shows the flags it was given and the nvcc it was pointed at."""
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({"gpus": {"devices": [
        {"index": 0, "name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"},
        {"index": 1, "name": "NVIDIA GeForce RTX 3090", "compute_capability": "8.6"}]}}))
    monkeypatch.setenv(PROFILE_ENV, str(profile))
    monkeypatch.delenv("CUDACXX", raising=False)
    store = tmp_path / "store"
    record = run_cell(_gpu_cell(store.as_uri(), gpus=2))
    assert record.status == "build_failed" and record.error.startswith("cmake -S exited with")
    assert record.engine["commit"]                # resolved, then configured
    assert record.engine["build_flags"] == ["-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=86;89"]
    stored = json.loads(next(store.glob("runs/gpu/results/gpu-cell-2/*.json")).read_text())
    log = (store / stored["logs"]["build.log"]).read_text()
    configure = next(line for line in log.splitlines() if line.startswith("$ cmake -S"))
    assert configure.endswith("-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=86;89")
    build_dirs = {p.parent.name for p in build_mod.cache_dir("builds").glob("*/build.log")
                  if configure in p.read_text()}
    assert len(build_dirs) == 1
    cpu_key = make_key(ResolvedSource(record.engine["repo_id"], Path("."), record.engine["commit"]), [])
    assert cpu_key.digest() not in build_dirs
    for name in build_dirs:          # a failed configure with its tree: nothing to reuse
        shutil.rmtree(build_mod.cache_dir("builds") / name, ignore_errors=True)


def _real_gpu_skip_reason() -> str | None:
    from agent.machine.readers import probe_gpus

    if build_mod.find_nvcc() is None:
        return "no nvcc on PATH or in /usr/local/cuda/bin: the real CUDA build is checked on a GPU machine"
    found = probe_gpus()
    if found.count == 0:
        return f"no NVIDIA GPU here ({found.error or 'NVML lists none'}): checked on a GPU machine"
    return None


NO_REAL_GPU = _real_gpu_skip_reason()


@pytest.mark.engines
@pytest.mark.skipif(NO_REAL_GPU is not None, reason=str(NO_REAL_GPU))
@pytest.mark.timeout(1800)
def test_a_real_cuda_build_runs_llama_bench_on_the_first_gpu(tmp_path, monkeypatch, isolated_spool):
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    record = run_cell(_gpu_cell((tmp_path / "store").as_uri(), gpus=1))
    assert record.status == "ok", record.error
    flags = record.engine["build"]["key"]["cmake_flags"]
    archs = ";".join(cuda_architectures(record.hardware["gpus"]["devices"]))
    assert flags[-2:] == ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={archs}"]
    assert "CUDA" in str(record.bench_rows[0]["fields"].get("backends"))
    assert len(record.metrics["tg_tps"].samples) == 3
