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

from tests.conftest import REPO, hwmatrix, two_ref_matrix, wait_for

pytestmark = pytest.mark.engines


def _matrix(tmp_path, name: str) -> str:
    return two_ref_matrix(tmp_path, name, quants=("Q8_0", "Q4_0"))


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


def _spooled(spool) -> list:
    return list(spool.glob("*/*/*/record.json"))


def _run_through_an_outage(seaweed, store_url: str, matrix: str, spool, while_down=lambda: None):
    """Start a run, stop the endpoint once the run's manifest is in, wait until a record is
    spooled (its upload failing), do ``while_down``, start the endpoint again; the run's
    (returncode, stderr)."""
    proc = _start(matrix, store_url, spool)
    try:
        assert wait_for(lambda: any(k.endswith("manifest.json") for k in _objects(seaweed, store_url)), 300, 0.3), \
            "the manifest never landed"
        seaweed.stop()
        assert wait_for(lambda: _spooled(spool), 300, 0.3), "no record was spooled while the store was down"
        while_down()
        seaweed.start()
        _, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        if not seaweed.running():
            seaweed.start()
    return proc.returncode, err


def test_a_run_to_s3_uploads_through_granted_urls_and_reports_from_the_endpoint(s3_store_url, seaweed, tmp_path):
    spool = tmp_path / "spool"
    result = hwmatrix("run", _matrix(tmp_path, "s3run"), "--store", s3_store_url, env={"HWMATRIX_SPOOL": str(spool)})
    assert result.returncode == 0, result.stderr[-3000:]
    records = _one_complete_record_per_cell(seaweed, s3_store_url, 4)
    assert not _spooled(spool)
    objects = _objects(seaweed, s3_store_url)
    manifest = next(json.loads(v) for k, v in objects.items() if k.endswith("manifest.json"))
    assert manifest["state"] == "complete" and {c["state"] for c in manifest["cells"]} == {"recorded"}
    assert not any(seaweed.secret_key.encode() in data for data in objects.values())   # no credential stored
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
    returncode, err = _run_through_an_outage(seaweed, s3_store_url, _matrix(tmp_path, "outage"), spool,
                                             while_down=lambda: time.sleep(15))   # uploads keep failing meanwhile
    assert returncode == 0, err[-3000:]
    _one_complete_record_per_cell(seaweed, s3_store_url, 4)
    assert not _spooled(spool)


def test_an_agent_killed_with_sigkill_mid_upload_loses_and_duplicates_nothing(s3_store_url, seaweed, tmp_path):
    spool = tmp_path / "spool"

    def kill_the_benchmark_worker() -> None:          # mid-upload: its record is spooled, not yet stored
        worker = subprocess.run(["pgrep", "-f", "ray::benchmark_group"], capture_output=True, text=True).stdout.split()
        assert worker, "no benchmark worker to kill"
        for pid in worker:
            os.kill(int(pid), signal.SIGKILL)

    returncode, err = _run_through_an_outage(seaweed, s3_store_url, _matrix(tmp_path, "kill9"), spool,
                                             while_down=kill_the_benchmark_worker)
    assert returncode == 0, err[-3000:]
    assert "retrying" in err
    _one_complete_record_per_cell(seaweed, s3_store_url, 4)
    assert not _spooled(spool)
