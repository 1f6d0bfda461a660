"""The file:// store and the spool: conditional writes, clash policies, nothing lost."""
from __future__ import annotations

import json

import pytest

from agent import spool
from agent.store import Clash, FileStore, StoreError, open_store, result_key


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
