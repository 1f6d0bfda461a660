"""The file:// store and the spool: conditional writes, clash policies, nothing lost."""
from __future__ import annotations

import json

import pytest

from agent.store import spool
from agent.store.backends import open_store
from agent.store.file import FileStore
from agent.store.keys import Clash, StoreError, result_key


def test_conditional_write_rejects_a_different_record_at_the_same_key(tmp_path):
    store = FileStore(tmp_path)
    store.put("runs/r/results/c/a.json", b"one")
    with pytest.raises(Clash):
        store.put("runs/r/results/c/a.json", b"two")
    assert store.get("runs/r/results/c/a.json") == b"one"


def test_identical_retry_is_not_a_clash(tmp_path):
    store = FileStore(tmp_path)
    assert store.put("runs/r/x.json", b"same") == store.put("runs/r/x.json", b"same")


def test_keep_both_writes_a_second_key_and_replace_overwrites(tmp_path):
    store = FileStore(tmp_path)
    store.put("runs/r/results/c/a.json", b"one")
    other = store.put("runs/r/results/c/a.json", b"two", on_clash="keep-both")
    assert other != "runs/r/results/c/a.json" and store.get(other) == b"two"
    store.put("runs/r/results/c/a.json", b"three", on_clash="replace")
    assert store.get("runs/r/results/c/a.json") == b"three"
    assert sorted(store.list("runs/r/results/")) == sorted(["runs/r/results/c/a.json", other])


@pytest.mark.parametrize("bad", ["../etc", "a b", "", ".."])
def test_key_parts_with_traversal_or_odd_characters_are_refused(bad):
    with pytest.raises(StoreError):
        result_key("run", bad, "agent")


def test_open_store_accepts_file_urls_and_refuses_unknown_schemes(tmp_path):
    assert isinstance(open_store(tmp_path.as_uri()), FileStore)
    with pytest.raises(StoreError, match="unknown store URL scheme"):
        open_store("ftp://x/y")


def test_spooled_record_survives_a_store_outage_and_flush_delivers_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    blocked = tmp_path / "store"
    blocked.write_text("not a directory")            # the store is unusable for now
    record = {"run_id": "r1", "cell_id": "c1", "agent_id": "a1", "status": "ok"}
    log = tmp_path / "stdout.txt"
    log.write_text("raw output")
    entry = spool.spool_record(blocked.as_uri(), record, {"stdout.txt": log})
    with pytest.raises(Exception):
        spool.deliver(entry)
    assert spool.pending() == [entry]
    blocked.unlink()                                   # the store comes back
    delivered, errors = spool.flush()
    assert errors == [] and delivered == ["runs/r1/results/c1/a1.json"]
    store = FileStore(blocked)
    assert json.loads(store.get("runs/r1/results/c1/a1.json"))["status"] == "ok"
    assert store.get("runs/r1/logs/c1/a1/stdout.txt") == b"raw output"
    assert spool.pending() == []


def test_a_failed_record_is_replaced_by_a_later_good_one_and_a_clash_stays_spooled_until_a_policy_says(
        tmp_path, monkeypatch):
    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HWMATRIX_SPOOL", raising=False)
    url = (tmp_path / "store").as_uri()
    base = {"run_id": "r", "cell_id": "c", "agent_id": "a"}
    spool.deliver(spool.spool_record(url, {**base, "status": "timeout"}, {}))
    spool.deliver(spool.spool_record(url, {**base, "status": "ok", "n": 1}, {}))
    store = open_store(url)
    assert store.get_json("runs/r/results/c/a.json")["status"] == "ok"
    with pytest.raises(Clash):                 # default policy: reject, and keep the new one
        spool.deliver(spool.spool_record(url, {**base, "status": "ok", "n": 2}, {}))
    assert [store.get_json(k)["n"] for k in store.list("runs/r/results/")] == [1]
    assert len(spool.pending()) == 1
    delivered, errors = spool.flush()          # a marked clash waits for an explicit policy
    assert not delivered and "clash policy" in errors[0]
    delivered, errors = spool.flush(policy="keep-both")
    assert delivered == ["runs/r/results/c/a.1.json"] and not errors and not spool.pending()
    kept = [store.get_json(k)["n"] for k in store.list("runs/r/results/")]
    assert sorted(kept) == [1, 2]


@pytest.mark.parametrize("junk", [b"[1, 2]", b'"ok"', b"null", b"{oops", b"[" * 100_000])
def test_junk_at_a_record_key_is_no_ok_record_and_a_real_record_replaces_it(tmp_path, monkeypatch, junk):
    # Before: recorded_ok and the spool's settle_clash called .get on whatever JSON was
    # stored, so an array there (or bytes that are no JSON, or JSON nested too deep) ended
    # in a traceback.
    from agent.store.keys import recorded_ok

    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HWMATRIX_SPOOL", raising=False)
    url = (tmp_path / "store").as_uri()
    store = open_store(url)
    store.put("runs/r/results/c/a.json", junk)
    store.put("runs/r/results/c/b.json", junk)
    assert recorded_ok(store, "r", "c", "class-1", "a", others=True) is None
    record = {"run_id": "r", "cell_id": "c", "agent_id": "a", "status": "ok", "hardware_class": "class-1"}
    assert spool.deliver(spool.spool_record(url, record, {}), delays=()) == "runs/r/results/c/a.json"
    assert store.get_json("runs/r/results/c/a.json") == record
    assert recorded_ok(store, "r", "c", "class-1", "b", others=True) == "a"


# ---------------------------------------------------------------- a writer killed mid-write

# A child that writes one key and stops where the temp file is written but not yet linked
# (os.link for a conditional write, os.replace for a replacing one): it says "ready", then
# waits for a line on stdin before it goes on.
_PAUSED_WRITER = """
import os, sys
from pathlib import Path
from agent.store.file import FileStore
store = FileStore(Path(sys.argv[1]))
def paused(real):
    def call(*args, **kwargs):
        print("ready", flush=True)
        sys.stdin.readline()
        return real(*args, **kwargs)
    return call
os.link, os.replace = paused(os.link), paused(os.replace)
print(store.put(sys.argv[2], sys.argv[3].encode(), on_clash=sys.argv[4]), flush=True)
"""


def _paused_writer(root, key: str, data: str, on_clash: str):
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.Popen([sys.executable, "-c", _PAUSED_WRITER, str(root), key, data, on_clash], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"       # the temp file is written, the key is not
    return proc


def _temp_files(root) -> list:
    return [p for p in root.rglob("*") if p.is_file() and p.name.startswith(".tmp-")]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("key, on_clash", [("runs/r/logs/c/a/stdout.txt", "replace"),
                                           ("runs/r/results/c/a.json", "reject")])
def test_a_writer_killed_between_write_and_link_leaves_no_temp_file_in_the_store_or_its_report(
        tmp_path, key, on_clash):
    import signal

    from agent.spec.record import Metric, ResultRecord
    from tests.conftest import hwmatrix

    root = tmp_path / "store"
    good = ResultRecord(run_id="r0", matrix={"name": "m", "hash": "h"}, cell_id="c0", agent_id="a", status="ok",
                        params={"ref": "A", "quant": "Q4_0"}, hardware_class="zen4",
                        hardware={"cpu": {"brand": "AMD Ryzen 9 7950X"}, "gpus": {"count": 0, "devices": []}},
                        engine={"kind": "llama.cpp", "commit": "abc1234" * 5},
                        metrics={"tg_tps": Metric.from_samples("tg16", [41.0, 41.5, 40.8], process_sizes=[1, 1, 1])},
                        timestamps={"finished": "2026-11-27T09:00:00"}).model_dump(mode="json")
    FileStore(root).put(result_key(good["run_id"], good["cell_id"], good["agent_id"]), json.dumps(good).encode())
    victim = _paused_writer(root, key.replace("runs/r/", f"runs/{good['run_id']}/"), "half a record", on_clash)
    assert _temp_files(root)                          # the debris a kill leaves behind
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    store = FileStore(root)                           # the next run (or writer) opens the store
    assert not _temp_files(root), _temp_files(root)
    assert not [k for k in store.list("") if ".tmp" in k]
    report = hwmatrix("report", "--store", root.as_uri(), "--format", "json", timeout=60)
    assert report.returncode == 0, report.stderr
    assert ".tmp" not in report.stdout + report.stderr
    assert [r["cell_id"] for r in json.loads(report.stdout)["records"]] == [good["cell_id"]]


@pytest.mark.timeout(60)
def test_opening_the_store_leaves_a_live_writers_temp_file_alone_and_its_write_completes(tmp_path):
    root = tmp_path / "store"
    writer = _paused_writer(root, "runs/r/results/c/a.json", "a whole record", "reject")
    before = _temp_files(root)
    assert FileStore(root).sweep_temp_files() == 0
    assert _temp_files(root) == before and before
    out, _ = writer.communicate("go\n", timeout=30)
    assert writer.returncode == 0 and out.strip() == "runs/r/results/c/a.json"
    assert FileStore(root).get("runs/r/results/c/a.json") == b"a whole record"
    assert not _temp_files(root)
