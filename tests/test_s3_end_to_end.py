"""`hwmatrix run --store s3://...` with real llama.cpp builds and a real S3 server: the agent
holds no credentials (its uploads go through URLs the coordinator signs), and neither an
endpoint stopped mid-run nor an agent killed with SIGKILL mid-upload loses or duplicates a
record."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, hwmatrix

pytestmark = pytest.mark.engines


def _matrix(tmp_path, name: str, reps: int = 3) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""name: {name}
engines:
  mainline: {{kind: llama.cpp, sdist: {{package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}}}
models:
  tiny: {{generate: tiny-llama}}
args: {{n_prompt: 16, n_gen: 4, threads: 1}}
repetitions: {reps}
hygiene: {{drop_caches: off}}
timeout_s: 300
matrix:
  ref: [{{name: A, engine: mainline, tag: v0.3.35}}, {{name: B, engine: mainline, tag: v0.3.36}}]
  quant: [Q8_0, Q4_0]
""")
    return str(path)


def _objects(seaweed, store_url: str) -> dict[str, bytes]:
    client, prefix = seaweed.client(), store_url.split("/", 3)[3] + "/"
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=seaweed.bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {k[len(prefix):]: client.get_object(Bucket=seaweed.bucket, Key=k)["Body"].read() for k in keys}


def _one_complete_record_per_cell(seaweed, store_url: str, n_cells: int) -> list[dict]:
    objects = _objects(seaweed, store_url)
    results = {k: json.loads(v) for k, v in objects.items() if "/results/" in k}
    cells = [r["cell_id"] for r in results.values()]
    assert len(results) == n_cells and len(set(cells)) == n_cells, sorted(results)
    for key, rec in results.items():
        assert rec["status"] == "ok", (key, rec.get("error"))
        assert all(m["samples"] and len(m["samples"]) == sum(m["process_sizes"]) for m in rec["metrics"].values())
        assert rec["logs"] and all(log in objects for log in rec["logs"].values())   # its logs went up first
    return list(results.values())


def _start(matrix: str, store_url: str, spool, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", matrix, "--store", store_url], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HWMATRIX_SPOOL": str(spool), **env})


def _wait(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _spooled(spool) -> list:
    return list(spool.glob("*/*/*/record.json"))


def test_a_run_to_s3_uploads_through_granted_urls_and_reports_from_the_endpoint(s3_store_url, seaweed, tmp_path):
    spool = tmp_path / "spool"
    result = hwmatrix("run", _matrix(tmp_path, "s3run"), "--store", s3_store_url, env={"HWMATRIX_SPOOL": str(spool)})
    assert result.returncode == 0, result.stderr[-3000:]
    records = _one_complete_record_per_cell(seaweed, s3_store_url, 4)
    assert not _spooled(spool)
    manifest = next(json.loads(v) for k, v in _objects(seaweed, s3_store_url).items() if k.endswith("manifest.json"))
    assert manifest["state"] == "complete" and {c["state"] for c in manifest["cells"]} == {"recorded"}
    secret = seaweed.secret_key
    objects = _objects(seaweed, s3_store_url)
    assert not any(secret.encode() in data for data in objects.values())     # no credential in any record or log
    report = hwmatrix("report", "--store", s3_store_url)
    assert report.returncode == 0, report.stderr
    assert "4 records" in report.stdout
    only_b = hwmatrix("report", "--store", s3_store_url, "--class", records[0]["hardware_class"], "--ref", "v0.3.36",
                      "--format", "json")
    assert only_b.returncode == 0, only_b.stderr
    assert {r["params"]["ref"] for r in json.loads(only_b.stdout)["records"]} == {"B"}


def test_an_endpoint_stopped_mid_run_and_restarted_later_leaves_one_record_per_cell_and_an_empty_spool(
        s3_store_url, seaweed, tmp_path):
    spool = tmp_path / "spool"
    proc = _start(_matrix(tmp_path, "outage"), s3_store_url, spool)
    try:
        _wait(lambda: any(k.endswith("manifest.json") for k in _objects(seaweed, s3_store_url)), 300, "the manifest")
        seaweed.stop()
        _wait(lambda: _spooled(spool), 300, "a record spooled while the store is down")
        time.sleep(15)                                 # down for a while: uploads keep failing
        seaweed.start()
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        if not seaweed.running():
            seaweed.start()
    assert proc.returncode == 0, err[-3000:]
    _one_complete_record_per_cell(seaweed, s3_store_url, 4)
    assert not _spooled(spool)


def test_an_agent_killed_with_sigkill_mid_upload_loses_and_duplicates_nothing(s3_store_url, seaweed, tmp_path):
    spool = tmp_path / "spool"
    proc = _start(_matrix(tmp_path, "kill9"), s3_store_url, spool)
    try:
        _wait(lambda: any(k.endswith("manifest.json") for k in _objects(seaweed, s3_store_url)), 300, "the manifest")
        seaweed.stop()
        _wait(lambda: _spooled(spool), 300, "a record spooled while the store is down")
        worker = subprocess.run(["pgrep", "-f", "ray::benchmark_group"], capture_output=True, text=True).stdout.split()
        assert worker, "no benchmark worker to kill"
        for pid in worker:
            os.kill(int(pid), signal.SIGKILL)          # mid-upload: its record is spooled, not yet stored
        seaweed.start()
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        if not seaweed.running():
            seaweed.start()
    assert proc.returncode == 0, err[-3000:]
    assert "retrying" in err
    _one_complete_record_per_cell(seaweed, s3_store_url, 4)
    assert not _spooled(spool)
