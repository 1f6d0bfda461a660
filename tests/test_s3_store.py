"""The s3:// store against a real S3 server (SeaweedFS on 127.0.0.1, boto3 as in production):
conditional writes, checksums the server verifies, multipart logs, presigned grants that
can write nothing else, delivery through outages, and a per-run index safe under
concurrent writers."""
from __future__ import annotations

import base64
import json
import threading
import time

import pytest

from agent.store import s3 as s3store

from agent.store import spool
from agent.store.backends import open_store
from agent.store.keys import Clash, StoreError, result_key
from agent.store.upload import put_url
from coordinator.results.index import CATALOG_KEY, index_key, refresh_index
from coordinator.results.records import load_records
from coordinator.cluster.uploads import Granter


def _record(run="r1", cell="c1", agent="a1", status="ok", **extra) -> dict:
    return {"run_id": run, "cell_id": cell, "agent_id": agent, "status": status, "params": {"ref": "A"},
            "hardware_class": "zen3", "matrix": {"name": "m"}, "timestamps": {"finished": "2026-11-27T09:00:00"},
            **extra}


def _bytes(rec: dict) -> bytes:
    return json.dumps(rec, indent=1, sort_keys=True).encode()


def test_the_s3_store_keeps_the_file_store_key_layout_under_its_prefix(s3_store_url, seaweed):
    store = open_store(s3_store_url)
    key = result_key("r1", "c1", "a1")
    assert store.put(key, b'{"x": 1}') == key
    assert store.get_json(key) == {"x": 1} and store.exists(key) and not store.exists(key + "x")
    assert store.list("runs/r1/results/") == [key] and store.run_ids() == ["r1"]
    prefix = s3_store_url.split("/", 3)[3]
    raw = seaweed.client().list_objects_v2(Bucket=seaweed.bucket, Prefix=prefix)["Contents"]
    assert [o["Key"] for o in raw] == [f"{prefix}/{key}"]
    with pytest.raises(KeyError):
        store.get("runs/r1/results/c1/nobody.json")


def test_a_conditional_write_is_refused_on_a_clash_and_the_policy_decides(s3_store_url):
    store = open_store(s3_store_url)
    key = result_key("r1", "c1", "a1")
    store.put(key, b"first")
    assert store.put(key, b"first") == key                      # an identical retry is no clash
    with pytest.raises(Clash):
        store.put(key, b"second")
    assert store.get(key) == b"first"
    assert store.put(key, b"second", on_clash="keep-both") == "runs/r1/results/c1/a1.1.json"
    assert store.put(key, b"third", on_clash="replace") == key and store.get(key) == b"third"


def test_the_server_refuses_an_object_whose_sha256_does_not_match(s3_store_url, monkeypatch):
    store = open_store(s3_store_url)
    monkeypatch.setattr(s3store, "sha256_b64", lambda data: base64.b64encode(b"\0" * 32).decode())
    with pytest.raises(StoreError, match="BadDigest"):
        store.put("runs/r1/results/c1/a1.json", b"payload")
    monkeypatch.undo()
    assert not store.exists("runs/r1/results/c1/a1.json")


def test_a_log_over_the_multipart_threshold_goes_up_in_checksummed_parts_with_its_tag(s3_store_url, seaweed,
                                                                                         tmp_path):
    store = open_store(s3_store_url)
    big = tmp_path / "build.log"
    big.write_bytes(b"x" * (s3store.MULTIPART_THRESHOLD + 1024 * 1024))
    key = "runs/r1/logs/c1/a1/build.log"
    store.put_file(key, big)
    full = f"{store.prefix}/{key}"
    head = seaweed.client().head_object(Bucket=seaweed.bucket, Key=full, PartNumber=1)
    assert head["PartsCount"] == 2
    assert store.get(key) == big.read_bytes()
    tags = seaweed.client().get_object_tagging(Bucket=seaweed.bucket, Key=full)["TagSet"]
    assert {"Key": "hwmatrix-kind", "Value": "log"} in tags


def _granter(store, **kw) -> Granter:
    return Granter(store, "r1", {"c1", "c2"}, **kw)


def _ask(granter, key: str, data: bytes, agent="a1", kind="record") -> dict:
    return granter.grant(agent, [{"key": key, "sha256": s3store.sha256_b64(data), "size": len(data),
                                  "kind": kind}])[0]


def test_a_presigned_grant_writes_exactly_its_key_and_content_once(s3_store_url):
    store = open_store(s3_store_url)
    granter, data = _granter(store), b'{"status": "ok"}'
    key = result_key("r1", "c1", "a1")
    grant = _ask(granter, key, data)
    other = grant["url"].replace("/results/c1/a1.json", "/results/c2/a1.json")
    assert put_url(other, grant["headers"], data)[0] == 403                       # key A's URL on key B
    assert put_url(grant["url"], grant["headers"], b'{"status": "evil"}')[0] == 400  # other content
    assert put_url(grant["url"], {}, data)[0] == 403                              # the signed headers left out
    signature = grant["url"].rsplit("=", 1)[1]
    tampered = grant["url"][:-len(signature)] + ("0" if signature[0] != "0" else "1") + signature[1:]
    assert put_url(tampered, grant["headers"], data)[0] == 403
    anonymous = grant["url"].split("?")[0] + "?"
    assert put_url(anonymous, {}, data)[0] == 403
    assert put_url(grant["url"], grant["headers"], data)[0] == 200
    assert put_url(grant["url"], grant["headers"], data)[0] == 412                # once: If-None-Match is signed
    assert store.get(key) == data and not store.exists(result_key("r1", "c2", "a1"))
    assert _ask(granter, key, data) == {"key": key, "done": True}                  # a lost answer, retried


def test_an_expired_grant_is_refused(s3_store_url):
    store = open_store(s3_store_url)
    grant = _ask(_granter(store, expires_s=1), result_key("r1", "c1", "a1"), b"late")
    time.sleep(2.5)
    assert put_url(grant["url"], grant["headers"], b"late")[0] == 403
    assert not store.exists(result_key("r1", "c1", "a1"))


def test_the_granter_signs_nothing_outside_the_cells_it_handed_out(s3_store_url):
    granter = _granter(open_store(s3_store_url))
    for key, agent in [(result_key("r2", "c1", "a1"), "a1"),           # another run
                       (result_key("r1", "c9", "a1"), "a1"),           # a cell not handed out
                       (result_key("r1", "c1", "a2"), "a1"),           # another agent's key
                       ("runs/r1/manifest.json", "a1"), ("catalog.json", "a1"),
                       ("runs/r1/results/c1/../../x.json", "a1")]:
        assert "refused" in _ask(granter, key, b"x", agent=agent), key


def test_a_clash_under_presigned_uploads_follows_the_policy(s3_store_url):
    store = open_store(s3_store_url)
    key = result_key("r1", "c1", "a1")
    store.put(key, _bytes(_record()))
    answer = _ask(_granter(store), key, b"other")
    assert answer["clash"] and "refused" in answer
    keep = _ask(_granter(store, on_clash="keep-both"), key, b"other")
    assert keep["key"] == "runs/r1/results/c1/a1.1.json"
    store.put(result_key("r1", "c2", "a1"), _bytes(_record(cell="c2", status="timeout")))
    supersede = _ask(_granter(store), result_key("r1", "c2", "a1"), b"better")   # a failure record is replaced
    assert put_url(supersede["url"], supersede["headers"], b"better")[0] == 200


def test_a_spooled_record_survives_a_store_outage_and_is_delivered_once_after(s3_store_url, seaweed,
                                                                              isolated_spool, tmp_path):
    log = tmp_path / "stdout.txt"
    log.write_text("pp 512 | 100.0 t/s")
    entry = spool.spool_record(s3_store_url, _record(), {"stdout.txt": log})
    seaweed.stop()
    try:
        with pytest.raises(StoreError):
            spool.deliver(entry, delays=(0.2,))
        assert spool.pending() == [entry]
    finally:
        seaweed.start()
    delivered, errors = spool.flush()
    assert delivered == [result_key("r1", "c1", "a1")] and not errors and not spool.pending()
    store = open_store(s3_store_url)
    assert store.get_json(result_key("r1", "c1", "a1")) == _record()
    assert store.get("runs/r1/logs/c1/a1/stdout.txt") == log.read_bytes()
    assert spool.flush() == ([], [])


def test_the_run_index_loses_no_entry_when_writers_finish_at_once(s3_store_url):
    store = open_store(s3_store_url)
    errors = []

    def writer(n: int) -> None:
        try:
            for i in range(3):
                rec = _record(cell=f"c{n}-{i}", agent=f"a{n}")
                store.put(result_key("r1", rec["cell_id"], rec["agent_id"]), _bytes(rec))
                refresh_index(store, "r1")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    index = json.loads(store.get(index_key("r1")))
    assert len(index["records"]) == 18
    assert json.loads(store.get(CATALOG_KEY))["runs"]["r1"]["records"] == 18


def test_a_report_query_reads_the_catalog_and_indexes_not_every_record(s3_store_url, monkeypatch):
    store = open_store(s3_store_url)
    for run, cls, ref in [("r1", "zen3", "A"), ("r1", "zen3", "B"), ("r2", "zen4", "A")]:
        rec = _record(run=run, cell=f"c-{ref}", agent=f"a-{cls}", params={"ref": ref}, hardware_class=cls)
        store.put(result_key(run, rec["cell_id"], rec["agent_id"]), _bytes(rec))
    assert len(load_records(store)) == 3                 # builds the indexes and the catalog
    gets = []
    original = store.get_versioned
    monkeypatch.setattr(store, "get_versioned", lambda key: gets.append(key) or original(key))
    monkeypatch.setattr(store, "get_json", lambda key: pytest.fail(f"fetched a record: {key}"))
    assert {r["hardware_class"] for r in load_records(store, hw_class="zen4")} == {"zen4"}
    assert gets == [CATALOG_KEY, index_key("r2")]        # r1 was never opened
    assert [r["params"]["ref"] for r in load_records(store, ref="B")] == ["B"]
    assert load_records(store, since="2027-01-01") == []


def test_an_unreachable_endpoint_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    from tests.conftest import hwmatrix

    closed = "http://127.0.0.1:9"
    result = hwmatrix("report", "--store", "s3://b/p", "--endpoint-url", closed, timeout=120)
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().splitlines() == [f"hwmatrix: store: the S3 endpoint {closed} does not answer (s3://b/p)"]


def test_no_credentials_is_one_clear_error(monkeypatch, seaweed, tmp_path):
    from tests.conftest import hwmatrix

    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    result = hwmatrix("report", "--store", f"s3://{seaweed.bucket}/p", "--endpoint-url", seaweed.endpoint, env=env,
                      timeout=120)
    assert result.returncode == 3 and "no S3 credentials" in result.stderr and "Traceback" not in result.stderr


def test_a_wrong_secret_is_refused_by_the_server(s3_store_url, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0123456789")
    with pytest.raises(StoreError, match="refused access"):
        open_store(s3_store_url).put("runs/r1/results/c1/a1.json", b"x")

