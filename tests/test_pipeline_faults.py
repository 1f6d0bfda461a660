"""A build failure, a hang, a crash and unparseable output each become a record with its
status and raw log - through the real pipeline (git, cmake, process groups, store)."""
from __future__ import annotations

import os
import time

import pytest

from agent.spec.cellspec import CellSpec, EngineSpec, Hygiene, ModelSpec, RefSpec, Repetitions
from agent.engine.pipeline import run_cell
from agent.store.backends import open_store
from tests.fake_engine import make_fake_engine_repo


@pytest.fixture(scope="module")
def fake_repo(tmp_path_factory):
    return make_fake_engine_repo(tmp_path_factory.mktemp("fake-engine"))


def _spec(repo, branch, store_url, model_path, timeout_s=30.0) -> CellSpec:
    return CellSpec(
        run_id="faults", matrix_name="faults", matrix_hash="0" * 12, cell_id=f"cell-{branch}",
        params={"ref": branch}, engine=EngineSpec(name="fake", kind="llama.cpp", repo=str(repo)),
        ref=RefSpec(name=branch, kind="branch", value=branch),
        model=ModelSpec(name="m", path=str(model_path)), tool="llama-bench",
        repetitions=Repetitions(min=2, max=2, min_process_s=0), hygiene=Hygiene(drop_caches="off"),
        timeout_s=timeout_s, store_url=store_url,
    )


@pytest.fixture
def env(tmp_path, fake_repo):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    return {"repo": fake_repo, "store": (tmp_path / "store").as_uri(), "model": model}


def _load(store_url, record):
    store = open_store(store_url)
    stored = store.get_json(f"runs/{record.run_id}/results/{record.cell_id}/{record.agent_id}.json")
    return store, stored


def test_a_hanging_benchmark_is_killed_with_its_children_and_recorded_as_timeout(env):
    started = time.monotonic()
    record = run_cell(_spec(env["repo"], "hang", env["store"], env["model"], timeout_s=2))
    assert record.status == "timeout"
    assert time.monotonic() - started < 60
    store, stored = _load(env["store"], record)
    assert stored["status"] == "timeout" and "timeout" in stored["error"]
    assert "stdout.txt" in stored["logs"] and "build.log" in stored["logs"]
    # no process of the fake engine survives
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cmd(p).startswith(record.tool["argv"][0][0])]
    assert leftovers == []


def _cmd(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def test_a_crashing_benchmark_is_recorded_as_run_failed_with_its_stderr(env):
    record = run_cell(_spec(env["repo"], "crash", env["store"], env["model"]))
    assert record.status == "run_failed"
    assert "GGML_ASSERT" in record.error
    store, stored = _load(env["store"], record)
    assert b"GGML_ASSERT failed" in store.get(stored["logs"]["stderr.txt"])


def test_a_crash_in_the_calibration_process_is_recorded_with_its_stderr(env):
    spec = _spec(env["repo"], "crash", env["store"], env["model"])
    record = run_cell(spec.model_copy(update={"repetitions": Repetitions(min=2, max=2, min_process_s=0.2)}))
    assert record.status == "run_failed" and record.error.startswith("calibration run: llama-bench exited with")
    assert "GGML_ASSERT" in record.error and record.tool["argv"] == []        # no measured process ran
    store, stored = _load(env["store"], record)
    assert b"GGML_ASSERT failed" in store.get(stored["logs"]["calibration.err"])


@pytest.mark.parametrize("branch", ["garbage"])
def test_unparseable_output_is_recorded_as_parse_error_with_the_raw_text(env, branch):
    record = run_cell(_spec(env["repo"], branch, env["store"], env["model"]))
    assert record.status == "parse_error"
    store, stored = _load(env["store"], record)
    assert b"oops not json" in store.get(stored["logs"]["stdout.txt"])


def test_mainline_lone_bracket_after_a_failed_load_is_a_run_failure_not_a_crash(env):
    record = run_cell(_spec(env["repo"], "lone-bracket", env["store"], env["model"]))
    assert record.status == "run_failed" and "failed to load model" in record.error


def test_a_failing_build_is_recorded_as_build_failed_with_the_build_log(env):
    record = run_cell(_spec(env["repo"], "broken", env["store"], env["model"]))
    assert record.status == "build_failed"
    store, stored = _load(env["store"], record)
    assert b"error" in store.get(stored["logs"]["build.log"]).lower()


def test_an_unknown_ref_is_recorded_as_build_failed_not_raised(env):
    record = run_cell(_spec(env["repo"], "no-such-branch", env["store"], env["model"]))
    assert record.status == "build_failed" and "no-such-branch" in record.error


def test_extra_warmup_runs_are_untimed_and_a_failing_warmup_is_recorded(env):
    spec = _spec(env["repo"], "crash", env["store"], env["model"]).model_copy(
        update={"hygiene": Hygiene(drop_caches="off", warmup=3)})
    record = run_cell(spec)
    assert record.status == "run_failed" and record.error.startswith("warmup run 1")
    assert record.tool["argv"] == []          # no timed run happened
