"""`hwmatrix import`: every real posted output imports, as records marked imported."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.parsers import parse_posted_text
from coordinator.results.importers import ImportFailed, clean_text, import_file, import_text, read_text_file

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "samples"
SAMPLES = _SHARED if _SHARED.is_dir() else Path(__file__).resolve().parent / "data" / "samples"
SAMPLE_FILES = sorted(p for p in SAMPLES.glob("[0-9]*") if p.is_file())
LABEL = "TR 3955WX 2x3090+A4500"


def sample(prefix: str) -> Path:
    return next(p for p in SAMPLE_FILES if p.name.startswith(prefix))


def records_of(prefix: str, **kw) -> list[dict]:
    path = sample(prefix)
    return import_text(read_text_file(str(path)), LABEL, source=path.name, **kw)


def test_samples_folder_is_found():
    assert len(SAMPLE_FILES) >= 10


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name[:2])
def test_every_sample_imports_one_record_per_row_or_sweep_table(path):
    text = read_text_file(str(path))
    outputs = parse_posted_text(clean_text(text))
    expected = sum(len(o.bench_rows) + (1 if o.sweep_rows else 0) for o in outputs)
    records = import_text(text, LABEL, source=path.name)
    assert len(records) >= 1
    assert len(records) == expected
    assert len({r["cell_id"] for r in records}) == len(records)
    for r in records:
        assert r["origin"] == "imported" and r["status"] == "ok"
        assert r["hardware_class"].startswith("imported:")
        assert r["hardware"]["label"] == LABEL
        assert r["agent_id"] == "TR-3955WX-2x3090-A4500"
        assert r["metrics"]


def test_ik_json_keeps_per_repetition_samples_and_tells_fa_off_from_on():
    text = read_text_file(str(sample("03")))
    records = records_of("03")
    pp = [r for r in records if r["params"]["test"] == "pp512"]
    assert len(pp) == 2
    assert {r["params"]["flash_attn"] for r in pp} == {False, True}
    assert pp[0]["cell_id"] != pp[1]["cell_id"]
    first_samples = [float(x) for x in re.search(r'"samples_ts": \[([^\]]*)\]', text)[1].split(",")]
    m = pp[0]["metrics"]["pp_tps"]
    assert m["samples"] == first_samples and m["n"] == len(first_samples) == 5
    for r in records:
        assert r["engine"]["kind"] == "ik_llama.cpp" and r["params"]["engine"] == "ik_llama.cpp"
        assert r["params"]["ref"] == "ddc8eee1" and r["engine"]["build_number"] == 3599
        assert r["hardware"]["cpu_info"].startswith("Intel(R) Xeon(R) CPU E5-2690 v3")
        assert "gpu_info" not in r["hardware"]                     # posted as "" (CPU only)
        assert r["tool"] == {"name": "llama-bench", "imported_format": "json"}
        assert r["timestamps"]["test_time"].startswith("2025-03-21T")
        assert r["bench_rows"][0]["samples_ts"] == r["metrics"][next(iter(r["metrics"]))]["samples"]


def test_md_with_repacked_line_gives_8_records_with_posted_mean_and_sd():
    text = read_text_file(str(sample("07")))
    records = records_of("07")
    assert len(records) == 8
    assert all(r["params"]["repack"] is True for r in records)
    assert all(any("Repacked 225 tensors" in n for n in r["import_notes"]) for r in records)
    mean, sd = map(float, re.search(r"\|\s*pp128\s*\|\s*([\d.]+) ± ([\d.]+)", text).groups())
    assert (mean, sd) == (23.98, 9.64)
    pp128 = next(r for r in records if r["params"]["test"] == "pp128")
    m = pp128["metrics"]["pp_tps"]
    assert (m["mean"], m["sd"], m["samples"], m["n"]) == (mean, sd, [], 0)
    assert next(r for r in records if r["params"]["test"] == "tg64")["metrics"].keys() == {"tg_tps"}


def test_sweep_md_is_one_record_per_table_with_first_n_kv_metrics():
    text = read_text_file(str(sample("01")))
    row = re.search(r"^\|\s*(\d+) \|\s*(\d+) \|\s*0 \|\s*[\d.]+ \|\s*([\d.]+) \|\s*[\d.]+ \|\s*([\d.]+) \|",
                    text, re.M)
    pp_speed, tg_speed = float(row[3]), float(row[4])
    assert (pp_speed, tg_speed) == (255.50, 5.56)
    records = records_of("01")
    first = records[0]
    assert first["tool"] == {"name": "llama-sweep-bench", "imported_format": "sweep-md"}
    assert first["sweep_rows"][0]["n_kv"] == 0 and first["bench_rows"] == []
    assert first["metrics"]["pp_tps"]["samples"] == [pp_speed]
    assert first["metrics"]["tg_tps"]["samples"] == [tg_speed]
    assert first["params"]["n_ubatch"] == 7168                   # from the 'main: n_kv_max = ...' line
    assert len(records[1]["sweep_rows"]) == 2


def test_tab_separated_sweep_paste_imports():
    text = ("results:\nPP\tTG\tN_KV\tT_PP s\tS_PP t/s\tT_TG s\tS_TG t/s\n"
            "512\t128\t0\t1.100\t465.51\t2.311\t55.38\n512\t128\t512\t1.183\t432.97\t1.895\t67.55\n")
    (rec,) = import_text(text, "box")
    assert rec["tool"]["imported_format"] == "sweep-tsv"
    assert rec["metrics"]["pp_tps"]["mean"] == 465.51 and len(rec["sweep_rows"]) == 2


def test_engine_option_overrides_unknown_guess_and_notes_a_conflict():
    recs = import_text(read_text_file(str(sample("10"))), "x", engine="ik_llama.cpp")
    assert recs[0]["engine"]["kind"] == "ik_llama.cpp"
    assert any("looks like llama.cpp" in n for n in recs[0]["import_notes"])


def test_default_run_id_and_records_are_stable_for_the_same_text():
    a, b = records_of("04"), records_of("04")
    assert [r["cell_id"] for r in a] == [r["cell_id"] for r in b]
    assert a[0]["run_id"] == b[0]["run_id"]
    assert re.fullmatch(r"import-TR-3955WX-2x3090-A4500-[0-9a-f]{10}", a[0]["run_id"])
    assert {r["params"]["ref"] for r in a} == {"09764678", "14292913", "24c010b3", "c7ecd4e2"}


def test_import_file_twice_writes_the_same_keys_and_identical_bytes(tmp_path):
    url = (tmp_path / "store").as_uri()
    path = str(sample("11"))
    first = import_file(path, LABEL, None, url, None)
    run1, keys1 = first.run_id, first.keys
    blobs = {k: (tmp_path / "store" / k).read_bytes() for k in keys1}
    second = import_file(path, LABEL, None, url, None)
    run2, keys2 = second.run_id, second.keys
    assert (run1, keys1) == (run2, keys2) and len(keys1) == 6
    assert blobs == {k: (tmp_path / "store" / k).read_bytes() for k in keys2}
    assert all(k.startswith(f"runs/{run1}/results/") for k in keys1)


def test_import_file_with_run_id_clash_fails_in_one_line_and_writes_nothing(tmp_path):
    url = (tmp_path / "store").as_uri()
    a, b = tmp_path / "a.md", tmp_path / "b.md"
    table = ("| model | size | params | backend | threads | test | t/s |\n|---|---:|---:|---|---:|---:|---:|\n"
             "| llama 7B Q4_0 | 3.56 GiB | 6.74 B | CPU | 4 | pp512 | {} ± 0.10 |\n")
    a.write_text(table.format("10.00"))
    b.write_text(table.format("11.00"))
    import_file(str(a), "box", None, url, "shared-run")
    before = sorted(p for p in (tmp_path / "store").rglob("*") if p.is_file())
    with pytest.raises(ImportFailed) as exc:
        import_file(str(b), "box", None, url, "shared-run")
    assert "\n" not in str(exc.value) and "different record" in str(exc.value)
    assert sorted(p for p in (tmp_path / "store").rglob("*") if p.is_file()) == before


def test_prose_only_file_fails_with_one_line(tmp_path):
    path = tmp_path / "prose.md"
    path.write_text("# notes\n\nI ran llama-bench and it was fast, about 30 t/s.\n| not | a bench |\n")
    with pytest.raises(ImportFailed) as exc:
        import_file(str(path), "box", None, (tmp_path / "s").as_uri(), None)
    assert "\n" not in str(exc.value) and "no llama-bench" in str(exc.value)


BAD_INPUTS = [None, b"", b"\x00\x01\x02\xff\xfe garbage \x00" * 20, b"\x89PNG\r\n\x1a\n\xff\xd9"]


@pytest.mark.parametrize("content", BAD_INPUTS, ids=["missing", "empty", "binary", "png"])
def test_unreadable_inputs_fail_with_one_line(tmp_path, content):
    path = tmp_path / "in.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImportFailed) as exc:
        import_file(str(path), "box", None, (tmp_path / "s").as_uri(), None)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_blank_label_is_refused():
    with pytest.raises(ImportFailed):
        import_text("| test | t/s |\n|---|---|\n| pp512 | 1.0 ± 0.1 |\n", "  ")


def test_imported_hardware_class_differs_per_label_and_never_looks_measured():
    text = read_text_file(str(sample("10")))
    a, b = import_text(text, "box A")[0], import_text(text, "box B")[0]
    assert a["hardware_class"] != b["hardware_class"]
    assert a["hardware_class"].startswith("imported:") and b["hardware_class"].startswith("imported:")
    assert a["hardware"]["gpu_info"] == "NVIDIA GeForce RTX 4080"


# ---------------------------------------------------------------- bounded cost (issue 11)

def convert_text(*args, **kw):
    from coordinator.results.importers import convert_text

    return convert_text(*args, **kw)


HEADER = "| model | size | params | backend | threads | test | t/s |\n|---|---:|---:|---|---:|---:|---:|\n"


def bench_row(test: str = "pp512", ts: str = "10.00 ± 0.10") -> str:
    return f"| llama 7B Q4_0 | 3.56 GiB | 6.74 B | CPU | 4 | {test} | {ts} |\n"


def test_identical_rows_are_one_record_and_are_counted_as_duplicates():
    # Before: every copy became its own record (with an ordinal in its cell id).
    table = HEADER + bench_row() * 3 + bench_row("tg128", "5.00 ± 0.01")
    converted = convert_text(table + "\nand again:\n\n" + table, "box")
    assert [r["params"]["test"] for r in converted.records] == ["pp512", "tg128"]
    assert converted.duplicates == 2 + 4          # two repeats in the first table, all four rows of the second


def test_rows_that_differ_in_their_numbers_stay_separate_records():
    records = import_text(HEADER + bench_row() + bench_row(ts="11.00 ± 0.10"), "box")
    assert len(records) == 2 and records[0]["cell_id"] != records[1]["cell_id"]


def test_a_table_row_without_its_leading_pipe_is_read():
    # Before: the row was dropped silently (issue 11: sample 09 imported 1 record of 2).
    text = HEADER + bench_row() + bench_row("tg128", "5.00 ± 0.01").lstrip("|")
    assert [r["params"]["test"] for r in import_text(text, "box")] == ["pp512", "tg128"]


def test_a_pipe_line_that_fits_no_column_is_reported_with_its_line_number():
    text = HEADER + bench_row() + "llama 7B | pp512 | 9.00 ± 0.10\n"
    converted = convert_text(text, "box")
    assert len(converted.records) == 1
    assert converted.notes == ["line 4: skipped row with 3 cells, header has 7"]


def test_a_block_keeps_at_most_twenty_notes_and_counts_the_rest():
    # Before: 1,000 unreadable rows gave every record of the block 1,000 notes.
    bad = "".join(bench_row(f"pp{n}", "fast") for n in range(1000))
    (record,) = import_text(HEADER + bench_row() + bad, "box")
    notes = record["import_notes"]
    assert len(notes) == 21 and notes[-1] == "... and 980 more notes"
    assert notes[0] == "line 4: skipped row, unreadable test 'pp0' or t/s 'fast'"


@pytest.mark.timeout(60)
def test_more_distinct_rows_than_an_import_may_hold_are_refused_before_any_record_is_built():
    from coordinator.results.importers import IMPORT_MAX_RECORDS

    text = HEADER + "".join(bench_row(f"pp{n}") for n in range(1, IMPORT_MAX_RECORDS + 2))
    with pytest.raises(ImportFailed, match=r"^x\.md: 10,001 distinct results, more than the 10,000 one import"):
        convert_text(text, "box", source="x.md")


def test_an_import_over_4_MiB_is_refused_by_its_size_without_reading_it(tmp_path):
    from tests.bounded import run_cli_bounded

    # Before: a 200 MB paste died after 174 s at 7.9 GB; here a sparse file of that size.
    path = tmp_path / "paste.md"
    with open(path, "wb") as f:
        f.write(HEADER.encode())
        f.truncate(200 << 20)
    result = run_cli_bounded("import", str(path), "--as", "box", "--store", (tmp_path / "s").as_uri(),
                             seconds=30, mem_mb=1024)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"hwmatrix: {path}: larger than 4,194,304 bytes, the most one import "
                                     "may hold; split the file")
    assert result.peak_mb < 80 and not (tmp_path / "s").exists()


def test_a_file_that_grows_past_the_cap_while_read_is_cut_off(tmp_path, monkeypatch):
    import coordinator.results.importers as importers

    path = tmp_path / "in.md"
    path.write_text(HEADER + bench_row() * 100)
    monkeypatch.setattr(importers, "IMPORT_MAX_BYTES", 1000)
    monkeypatch.setattr(importers.os, "fstat", lambda fd: type("S", (), {"st_size": 0})())  # a pipe: no size
    with pytest.raises(ImportFailed, match="larger than 1,000 bytes"):
        read_text_file(str(path))


def test_4_MiB_of_one_row_pasted_over_and_over_imports_one_record_in_seconds(tmp_path):
    from tests.bounded import run_cli_bounded

    # Before: 4 MB of one row ran past 60 s and 528 MB, writing a record per copy.
    path = tmp_path / "paste.md"
    row = bench_row()
    copies = (4 << 20) // len(row.encode()) - 2
    path.write_text(HEADER + row * copies)
    result = run_cli_bounded("import", str(path), "--as", "box", "--store", (tmp_path / "s").as_uri(),
                             seconds=60, mem_mb=2048)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"imported 1 records from {re.escape(str(path))} as 'box' into run import-box-\w+; "
                        rf"{copies - 1} duplicate row\(s\) dropped\n", result.stdout), result.stdout
    assert result.peak_mb < 200, result.peak_mb
