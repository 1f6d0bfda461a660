"""Hostile records in a store: every reader (the index and through it reports, compare and
the run table; the sqlite export) skips a record that is not usable with a one-line note
naming its key, and still shows the good ones. Stores are real (a directory, SeaweedFS);
the CLI runs as a user runs it."""
from __future__ import annotations

import json
import math

import pytest

from agent.spec.record import Metric, ResultRecord
from agent.store.backends import open_store
from agent.store.keys import result_key
from coordinator import reports
from coordinator.results.index import CATALOG_KEY, index_key
from coordinator.results.record_check import MAX_DEPTH, BadRecord, check_record, parse_record
from coordinator.results.records import load_checked, load_records
from tests.conftest import hwmatrix

GOOD_TG = [41.0, 41.5, 40.8]


def _record(run="r1", cell="c1", agent="a1", **extra) -> dict:
    rec = ResultRecord(run_id=run, matrix={"name": "m", "hash": "h"}, cell_id=cell, agent_id=agent,
                       params={"ref": "A", "quant": "Q4_0"}, status="ok", hardware_class="zen4",
                       hardware={"cpu": {"brand": "AMD Ryzen 9 7950X"}, "gpus": {"count": 0, "devices": []}},
                       engine={"kind": "llama.cpp", "commit": "abc1234" * 5},
                       metrics={"tg_tps": Metric.from_samples("tg16", GOOD_TG, process_sizes=[1, 1, 1])},
                       timestamps={"finished": "2026-11-27T09:00:00"}).model_dump(mode="json")
    rec.update(extra)
    return rec


def _with(path: str, value) -> bytes:
    """The good record of cell c2 with one value (dotted path) replaced."""
    rec = _record(cell="c2")
    *parents, last = path.split(".")
    node = rec
    for p in parents:
        node = node[p]
    node[last] = value
    return json.dumps(rec).encode()


# what an attacker or a broken writer can leave at runs/r1/results/c2/a1.json, and the words
# the one-line note must hold
HOSTILE = {
    "array": (b"[1,2]", "an array, not a JSON object"),
    "string": (b'"x"', "a string"),
    "null": (b"null", "null"),
    "invalid JSON": (b'{"run_id": ', "not JSON"),
    "missing fields": (b'{"run_id": "r1", "cell_id": "c2", "agent_id": "a1"}', "Field required"),
    "samples text": (_with("metrics.tg_tps.samples", "abc"), "metrics.tg_tps.samples"),
    "sample strings": (_with("metrics.tg_tps.samples", ["41.0", "x"]), "valid number"),
    "sample NaN": (_with("metrics.tg_tps.samples", [41.0, math.nan]), "finite"),
    "sample inf": (_with("metrics.tg_tps.samples", [math.inf, 41.0]), "finite"),
    "sample 1e308": (_with("metrics.tg_tps.samples", [1e308, 1e308, 1e308]), "finite"),
    "sample negative": (_with("metrics.tg_tps.samples", [-41.0, 41.0]), "finite"),
    "mean text": (_with("metrics.tg_tps.mean", "fast"), "metrics.tg_tps.mean"),
    "params list": (_with("params", [1, 2]), "params"),
    "cpu a string": (_with("hardware.cpu", "Ryzen"), "hardware.cpu"),
    "commit a number": (_with("engine.commit", 1234), "engine.commit"),
    "finished a number": (_with("timestamps.finished", 17), "timestamps.finished"),
    "sweep speed text": (_with("sweep_rows", [{"n_kv": 0, "speed_pp": "x"}]), "sweep_rows"),
    "bench samples text": (_with("bench_rows", [{"test": "tg16", "samples_ts": ["x"]}]), "bench_rows"),
    "escape in a name": (_with("hardware.cpu.brand", "\x1b]0;owned\x07\x1b[2J"), "control character"),
    "bidi in a params value": (_with("params.ref", "A\u202eevil"), "control character"),
    "control key": (_with("params", {"re\x1bf": "A"}), "control character"),
    "50 MB string": (_with("error", "x" * (50 << 20)), "MiB"),
    "long params value": (_with("params.ref", "A" * 5000), "longer than"),
    "nested deep": (_with("tool", json.loads("[" * 200 + "]" * 200)), f"deeper than {MAX_DEPTH}"),
    "foreign agent id": (json.dumps(_record(cell="c2", agent="someone-else")).encode(), "store key"),
}


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


def _fill(store, bad: bytes) -> str:
    store.put(result_key("r1", "c1", "a1"), json.dumps(_record()).encode())
    key = result_key("r1", "c2", "a1")
    store.put(key, bad)
    return key


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_a_hostile_record_is_skipped_with_a_note_and_the_good_one_is_kept(store, case):
    bad, words = HOSTILE[case]
    key = _fill(store, bad)
    loaded = load_checked(store)
    assert [r["cell_id"] for r in loaded.records] == ["c1"]
    (skipped,) = loaded.skipped
    assert skipped.key == key and words in skipped.reason
    note = skipped.note()
    assert key in note and "\n" not in note and len(note) < 400 and note.isprintable()


@pytest.mark.parametrize("fmt", ["markdown", "csv", "json", "html", "sqlite"])
def test_every_report_format_renders_the_good_records_and_lists_the_skipped(store, fmt):
    hostile = [bad for case, (bad, _) in HOSTILE.items() if case != "50 MB string"]    # a size case, not a shape
    for i, bad in enumerate(hostile):
        store.put(result_key("r1", f"bad{i}", "a1"), bad)
    store.put(result_key("r1", "c1", "a1"), json.dumps(_record()).encode())
    loaded = load_checked(store)
    assert len(loaded.records) == 1 and len(loaded.skipped) == len(hostile)
    out = reports.render(fmt, loaded.records, [], skipped=loaded.skipped)
    if fmt == "json":
        data = json.loads(out)
        assert [r["cell_id"] for r in data["records"]] == ["c1"]
        assert {s["key"] for s in data["skipped"]} == {s.key for s in loaded.skipped}
    elif fmt in ("markdown", "html"):
        assert "Skipped records" in out and f"{len(hostile)} stored object(s)" in out
        assert all(s.key in out for s in loaded.skipped)
        assert f"{sum(GOOD_TG) / 3:.2f}" in out
    elif fmt == "csv":
        assert [line.split(",")[1] for line in out.splitlines()[1:]] == ["c1"]
    else:
        assert out[:16] == b"SQLite format 3\x00"


def test_a_skipped_record_is_not_fetched_again_until_it_changes(store, monkeypatch):
    key = _fill(store, b"[1,2]")
    assert len(load_checked(store).skipped) == 1
    fetched = []
    original = store.get
    monkeypatch.setattr(store, "get", lambda k: ("/results/" in k and fetched.append(k)) or original(k))
    again = load_checked(store)
    assert [s.key for s in again.skipped] == [key] and fetched == []
    store.put(key, json.dumps(_record(cell="c2")).encode(), on_clash="replace")     # repaired
    repaired = load_checked(store)
    assert fetched == [key] and not repaired.skipped
    assert sorted(r["cell_id"] for r in repaired.records) == ["c1", "c2"]


def test_a_read_only_reader_sees_the_records_and_the_skips_but_writes_no_index_or_catalog(store):
    from coordinator.results.index import catalog, read_run
    key = _fill(store, b"[1,2]")
    before = set(store.list(""))
    found = read_run(store, "r1", write=False)
    runs = catalog(store, write=False)
    assert [r["cell_id"] for r in found.records] == ["c1"] and [s.key for s in found.skipped] == [key]
    assert set(runs) == {"r1"} and runs["r1"]["records"] == 1
    assert set(store.list("")) == before and not store.exists(index_key("r1")) and not store.exists(CATALOG_KEY)
    read_run(store, "r1")                       # a writing reader (report) still writes both
    assert store.exists(index_key("r1")) and store.exists(CATALOG_KEY)


def test_an_index_written_by_the_old_code_with_a_bad_record_in_it_is_rebuilt(store):
    key = _fill(store, b"[1,2]")
    versions = store.list_versions("runs/r1/results/")
    old = {"run_id": "r1", "records": {k: [v, [1, 2] if k == key else _record()] for k, v in versions.items()}}
    store.put(index_key("r1"), json.dumps(old).encode(), on_clash="replace")
    store.put(CATALOG_KEY, b"[1,2]", on_clash="replace")
    loaded = load_checked(store)
    assert [r["cell_id"] for r in loaded.records] == ["c1"] and [s.key for s in loaded.skipped] == [key]
    assert load_records(store, hw_class="zen4", ref="A") == loaded.records


def test_a_file_with_control_characters_in_its_name_is_skipped_with_its_name_escaped(store, tmp_path):
    store.put(result_key("r1", "c1", "a1"), json.dumps(_record()).encode())
    evil = tmp_path / "store" / "runs" / "r1" / "results" / "c1" / "\x1b]0;owned\x07.json"
    evil.write_bytes(json.dumps(_record()).encode())
    loaded = load_checked(store)
    assert len(loaded.records) == 1
    (skipped,) = loaded.skipped
    assert "not a valid store key" in skipped.reason and "\\x1b]0;owned\\x07" in skipped.note()
    assert skipped.note().isprintable()


@pytest.mark.timeout(200)
def test_hwmatrix_report_on_a_store_holding_an_array_lists_it_and_exits_0(store, tmp_path):
    key = _fill(store, b"[1,2]")
    for fmt in ("markdown", "csv"):
        result = hwmatrix("report", "--store", store.url, "--format", fmt, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert f"skipped {key}: an array, not a JSON object" in result.stderr      # one line per record
        if fmt == "markdown":
            assert f"{sum(GOOD_TG) / 3:.2f}" in result.stdout and "### Skipped records" in result.stdout
        else:
            assert [line.split(",")[1] for line in result.stdout.splitlines()[1:] if line] == ["c1"]
    result = hwmatrix("compare", "--store", store.url, "--baseline", "ref=A", "--candidate", "ref=B", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr and f"skipped {key}" in result.stderr


@pytest.mark.timeout(120)
def test_the_s3_index_skips_an_array_record_with_a_note(s3_store_url):
    store = open_store(s3_store_url)
    key = _fill(store, b"[1,2]")
    loaded = load_checked(store)
    assert [r["cell_id"] for r in loaded.records] == ["c1"] and [s.key for s in loaded.skipped] == [key]
    assert [s.key for s in load_checked(store, "r1").skipped] == [key]      # from the index, warm


def test_check_record_takes_what_the_agent_writes_and_refuses_what_it_never_does():
    rec = _record()
    assert check_record(rec) is rec
    assert parse_record(json.dumps(rec).encode(), result_key("r1", "c1", "a1")) == rec
    assert parse_record(json.dumps(rec).encode(), result_key("r1", "c1", "a1.2")) == rec      # a kept copy
    for bad in ([1, 2], "x", None, 3):
        with pytest.raises(BadRecord, match="not a JSON object"):
            check_record(bad)
    with pytest.raises(BadRecord, match="its run_id r1 does not match its store key"):
        parse_record(json.dumps(rec).encode(), result_key("r2", "c1", "a1"))
