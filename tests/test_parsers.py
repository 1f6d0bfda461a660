"""Parsers against the real posted outputs in shared/samples; expected values are read from the raw text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent.parsers import (ParseError, parse_llama_bench_csv, parse_llama_bench_json, parse_llama_bench_jsonl,
                           parse_llama_bench_markdown, parse_llama_bench_sql, parse_posted_text, parse_sweep_bench)

# The shared/ folder beside the clone is the source of truth; tests/data/samples is a copy
# so that a clone on its own still runs every parser test.
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "samples"
SAMPLES = _SHARED if _SHARED.is_dir() else Path(__file__).resolve().parent / "data" / "samples"
pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(),
                                reason=f"samples folder {SAMPLES} is absent (repo not cloned beside shared/)")
SAMPLE_FILES = sorted(p for p in SAMPLES.glob("*") if p.name != "README.md") if SAMPLES.is_dir() else []
ALL_PARSERS = [parse_llama_bench_json, parse_llama_bench_jsonl, parse_llama_bench_markdown, parse_llama_bench_csv,
               parse_llama_bench_sql, parse_sweep_bench]

# Independent row counters: one regex per kind of row the tools print.
ROW_PATTERNS = [
    re.compile(r"^\s*\|.*\|\s*[\d.]+ ± [\d.]+\s*\|+\s*$", re.M),  # llama-bench md row
    re.compile(r"^\s*\|\s*\d+\s*\|\s*\d+\s*\|\s*\d+\s*\|", re.M),  # sweep-bench md row
    re.compile(r'"avg_ts":'),  # llama-bench JSON / JSONL object
    re.compile(r'"speed_pp":'),  # sweep-bench JSONL object
    re.compile(r'^"[^"]*","\d+",', re.M),  # llama-bench CSV row
    re.compile(r"^INSERT INTO", re.M),  # llama-bench SQL row
    re.compile(r"^\d+\t\d+\t\d+\t[\d.]+", re.M),  # sweep-bench TAB paste row
]


def sample(prefix: str) -> Path:
    return next(SAMPLES.glob(f"{prefix}_*"))


def blocks(path: Path) -> dict[str, str]:
    """Drop the leading '# ' comment lines, split on '#### <label>' markers: {label: text} ('' = before any)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    while lines and (lines[0].startswith("# ") or lines[0] == "#"):
        lines.pop(0)
    out, label = {"": []}, ""
    for line in lines:
        if line.startswith("#### "):
            label = line[5:].strip()
            out[label] = []
        else:
            out[label].append(line)
    return {k: "\n".join(v) for k, v in out.items() if "\n".join(v).strip()}


def block(path: Path, label_start: str) -> str:
    return next(text for label, text in blocks(path).items() if label.startswith(label_start))


def raw_json_values(text: str, key: str) -> list:
    """Every value of "key" as written in the raw text, decoded on its own."""
    return [json.loads(m) for m in re.findall(rf'"{key}":\s*("[^"]*"|\[[^\]]*\]|[^,\s}}]+)', text)]


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name[:2])
def test_every_sample_parses_with_one_parsed_row_per_row_in_the_file(path):
    outputs = [o for text in blocks(path).values() for o in parse_posted_text(text)]
    assert outputs and all(o.bench_rows or o.sweep_rows for o in outputs)
    text = "\n".join(blocks(path).values())
    expected = sum(len(p.findall(text)) for p in ROW_PATTERNS)
    assert sum(len(o.bench_rows) + len(o.sweep_rows) for o in outputs) == expected


def test_ik_json_sample03_keeps_ik_schema_fields_and_samples():
    text = block(sample("03"), "")
    out = parse_llama_bench_json(text)
    first = out.bench_rows[0]
    assert out.engine == "ik_llama.cpp" and out.format == "json"
    assert first.test == raw_json_values(text, "test")[0] == "pp512"
    assert first.n_depth == 0 and "n_depth" not in text
    assert first.fields["rpc"] == raw_json_values(text, "rpc")[0] == "0"
    assert first.fields["repack"] is raw_json_values(text, "repack")[0] is False
    assert first.fields["fused_moe"] is raw_json_values(text, "fused_moe")[0] is True
    assert first.fields["mla_attn"] == raw_json_values(text, "mla_attn")[0] == 3
    assert first.samples_ts == raw_json_values(text, "samples_ts")[0]
    assert first.samples_ns == raw_json_values(text, "samples_ns")[0]
    assert out.build_commit == raw_json_values(text, "build_commit")[0]
    assert len(out.bench_rows) == 2  # only the first of the two arrays


def test_posted_text_finds_both_json_arrays_of_sample03_between_prose():
    text = block(sample("03"), "")
    outs = parse_posted_text(text)
    assert [o.format for o in outs] == ["json", "json"]
    assert [r.avg_ts for o in outs for r in o.bench_rows] == raw_json_values(text, "avg_ts")


def test_mainline_json_sample10_has_backends_depth_and_samples_ns():
    text = block(sample("10"), "")
    out = parse_llama_bench_json(text)
    assert out.engine == "llama.cpp"
    assert [r.fields["backends"] for r in out.bench_rows] == raw_json_values(text, "backends")
    assert [r.n_depth for r in out.bench_rows] == raw_json_values(text, "n_depth")
    assert [r.samples_ns for r in out.bench_rows] == raw_json_values(text, "samples_ns")
    prompts, gens = raw_json_values(text, "n_prompt"), raw_json_values(text, "n_gen")
    assert [r.test for r in out.bench_rows] == [f"pp{p}" if p else f"tg{g}" for p, g in zip(prompts, gens)]
    assert out.build_number == raw_json_values(text, "build_number")[0]


def test_markdown_sample07_tolerates_repacked_line_inside_table():
    text = block(sample("07"), "")
    out = parse_llama_bench_markdown(text)
    assert len(out.bench_rows) == len(ROW_PATTERNS[0].findall(text))
    assert out.engine == "ik_llama.cpp"  # the rtr column exists only in ik
    assert all(r.fields["repack"] == 1 for r in out.bench_rows)
    repacked = re.search(r"Repacked \d+ tensors", text)[0]
    assert any(repacked in note for note in out.notes)
    avg, std = re.search(r"\|\s*pp128\s*\|\s*([\d.]+) ± ([\d.]+)", text).groups()
    pp128 = next(r for r in out.bench_rows if r.test == "pp128")
    assert (pp128.avg_ts, pp128.stddev_ts) == (float(avg), float(std))
    assert pp128.fields["n_threads"] == int(re.search(r"-t (\d+)", text)[1])


def test_markdown_sample12_old_labels_trailing_pipes_depth_footer_and_loader_lines():
    path = sample("12")
    a1 = parse_llama_bench_markdown(block(path, "A1"))
    raw_labels = re.findall(r"\|\s*((?:pp|tg) \d+)\s*\|", block(path, "A1"))
    assert [r.test for r in a1.bench_rows] == [lab.replace(" ", "") for lab in raw_labels]
    assert a1.bench_rows[0].test == "pp64"
    last_avg = re.search(r"([\d.]+) ± [\d.]+ \|\|", block(path, "A1"))[1]
    assert a1.bench_rows[-1].avg_ts == float(last_avg)

    a2 = parse_llama_bench_markdown(block(path, "A2"))
    deep = [r for r in a2.bench_rows if r.n_depth]
    assert [r.test for r in deep] == ["pp512@d512", "tg128@d512"]
    assert deep[0].n_depth == 512 and deep[0].n_prompt == 512 and deep[0].n_gen == 0
    assert a2.engine == "llama.cpp"

    b_text = block(path, "B")
    commit, number = re.search(r"^build: (\w+) \((\d+)\)", b_text, re.M).groups()
    b = parse_llama_bench_markdown(b_text)
    assert (b.build_commit, b.build_number) == (commit, int(number)) == ("35782aee", 5014)
    assert all(r.fields["build_commit"] == commit for r in b.bench_rows)
    assert len(b.bench_rows) == len(ROW_PATTERNS[0].findall(b_text))  # 'real 687.60' after the footer is prose

    c_text = block(path, "C")
    c = parse_llama_bench_markdown(c_text)
    assert len(c.bench_rows) == len(ROW_PATTERNS[0].findall(c_text))
    assert all(r.stddev_ts == 0.0 for r in c.bench_rows)
    assert all(r.fields["backends"] == "Vulkan" for r in c.bench_rows)

    whole = parse_llama_bench_markdown("\n".join(blocks(path).values()))
    assert len(whole.bench_rows) == sum(len(o.bench_rows) for o in (a1, a2, b, c))
    assert whole.build_commit == commit  # the only footer in the file


def test_markdown_sample04_bisect_loop_gives_each_table_its_own_footer():
    text = block(sample("04"), "")
    footers = re.findall(r"^build: (\w+) \((\d+)\)", text, re.M)
    outs = parse_posted_text(text)
    assert [(o.build_commit, o.build_number) for o in outs] == [(c, int(n)) for c, n in footers]
    combined = parse_llama_bench_markdown(text)
    assert combined.build_commit is None  # tables disagree
    assert [r.fields["build_commit"] for r in combined.bench_rows] == [c for c, _ in footers for _ in range(2)]


def test_markdown_sample08_tells_mainline_from_ik_table_by_table():
    outs = parse_posted_text(block(sample("08"), ""))
    assert outs[0].engine == "llama.cpp"  # 20-wide t/s column
    assert outs[2].engine == "ik_llama.cpp"  # rtr column
    assert outs[1].engine in (None, "ik_llama.cpp")  # default ik columns look like old mainline


def test_sweep_sample14_markdown_and_jsonl_share_the_n_kv_series():
    path = sample("14")
    md = parse_sweep_bench(block(path, "markdown"))
    js = parse_sweep_bench(block(path, "jsonl"))
    assert (md.format, js.format) == ("sweep-md", "sweep-jsonl")
    md_kv, js_kv = [r.n_kv for r in md.sweep_rows], [r.n_kv for r in js.sweep_rows]
    assert js_kv == md_kv[:len(js_kv)] and md_kv[0] == 0
    assert {b - a for a, b in zip(md_kv, md_kv[1:])} == {md.sweep_rows[0].pp}
    first = next(r for r in js.sweep_rows if r.n_kv == 0)
    assert first.speed_pp == raw_json_values(block(path, "jsonl"), "speed_pp")[0] == 468.086884
    assert first.extra["n_kv_max"] == raw_json_values(block(path, "jsonl"), "n_kv_max")[0]


def test_sweep_sample01_tab_paste_parses_to_the_same_numbers_as_its_markdown_table():
    """The file's TAB paste stops after its header, so its rows are rebuilt from the md table it copies."""
    text = block(sample("01"), "")
    lines = text.split("\n")
    tab_header = next(ln for ln in lines if ln.startswith("PP\tTG\tN_KV"))
    md_tables = [o for o in parse_posted_text(text) if o.format == "sweep-md"]
    source = max(md_tables, key=lambda o: len(o.sweep_rows))  # "on main", the run the paste repeats
    md_rows = [ln for ln in lines if ROW_PATTERNS[1].match(ln)]
    main_rows = [ln for ln in md_rows if any(f"{r.t_pp:.3f}" in ln for r in source.sweep_rows)]
    tsv = "\n".join([tab_header] + ["\t".join(c.strip() for c in ln.strip().strip("|").split("|"))
                                    for ln in main_rows])
    pasted = parse_sweep_bench(tsv)
    assert pasted.format == "sweep-tsv"
    strip = lambda rows: [(r.pp, r.tg, r.n_kv, r.t_pp, r.speed_pp, r.t_tg, r.speed_tg) for r in rows]
    assert strip(pasted.sweep_rows) == strip(source.sweep_rows)
    assert all(o.format != "sweep-tsv" for o in parse_posted_text(text))  # header-only paste is no result


def test_sweep_sample01_main_line_fills_extra():
    text = block(sample("01"), "")
    kv_max = int(re.search(r"n_kv_max = (\d+)", text)[1])
    outs = parse_posted_text(text)
    assert outs[0].sweep_rows[0].extra["n_kv_max"] == kv_max
    assert outs[0].sweep_rows[0].extra["n_ubatch"] == outs[0].sweep_rows[0].pp
    assert "n_kv_max" not in outs[-1].sweep_rows[0].extra  # the last table has no 'main:' line of its own


def test_sweep_sample05_header_with_leading_space_is_read():
    text = block(sample("05"), "")
    outs = [o for o in parse_posted_text(text) if o.format == "sweep-md"]
    assert len(outs) == len(re.findall(r"^\s*\|\s*PP\s*\|", text, re.M))


def test_sample11_jsonl_csv_sql_each_parse_and_agree_on_avg_ts():
    """The README's three outputs are separate runs, so avg_ts must agree within their reported stddevs."""
    path = sample("11")
    outs = [parse_llama_bench_jsonl(block(path, "jsonl")), parse_llama_bench_csv(block(path, "csv")),
            parse_llama_bench_sql(block(path, "sql"))]
    assert [o.format for o in outs] == ["jsonl", "csv", "sql"]
    assert all(o.engine == "llama.cpp" and len(o.bench_rows) == 2 for o in outs)
    tests = [[r.test for r in o.bench_rows] for o in outs]
    assert tests[0] == tests[1] == tests[2]
    for a in outs:
        for b in outs:
            for ra, rb in zip(a.bench_rows, b.bench_rows):
                assert abs(ra.avg_ts - rb.avg_ts) <= 3 * (ra.stddev_ts + rb.stddev_ts)
    csv_vals = re.findall(r'"([\d.]+)","[\d.]+"\s*$', block(path, "csv"), re.M)
    assert [r.avg_ts for r in outs[1].bench_rows] == [float(v) for v in csv_vals]
    assert outs[1].bench_rows[0].fields["use_mmap"] is True  # CSV "1" for a JSON bool
    assert outs[2].bench_rows[0].fields["build_number"] == outs[0].bench_rows[0].fields["build_number"]


def test_lone_bracket_is_a_parse_error_not_an_empty_result():
    with pytest.raises(ParseError, match="lone"):
        parse_llama_bench_json("load_backend: loaded CUDA backend\n[\n")
    assert parse_posted_text("[") == []


def test_truncated_json_is_a_parse_error_with_line_number():
    text = block(sample("10"), "")
    cut = text[: len(text) // 2]
    with pytest.raises(ParseError, match=r"truncated.*line \d+") as err:
        parse_llama_bench_json(cut)
    assert err.value.line == 1 + text[: text.index("[")].count("\n")
    assert parse_posted_text(cut) == []
    with pytest.raises(ParseError, match="truncated"):
        parse_llama_bench_jsonl(block(sample("11"), "jsonl")[:-40])


def test_empty_array_is_a_parse_error():
    with pytest.raises(ParseError, match="empty"):
        parse_llama_bench_json("[\n]\n")


@pytest.mark.parametrize("parser", ALL_PARSERS, ids=lambda p: p.__name__)
@pytest.mark.parametrize("text", ["", "Just some prose. PP went up [1] and {tg} did not.\n| not | a | table"],
                         ids=["empty", "prose"])
def test_empty_or_prose_input_raises_parse_error_saying_what_was_expected(parser, text):
    with pytest.raises(ParseError, match="expected"):
        parser(text)
    assert parse_posted_text(text) == []


def test_non_benchmark_markdown_table_is_not_a_result():
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    assert parse_posted_text(readme) == []
    with pytest.raises(ParseError):
        parse_llama_bench_markdown(readme)


def test_markdown_table_without_ts_column_raises_parse_error_naming_it():
    text = block(sample("07"), "")
    table = [ln for ln in text.split("\n") if ln.startswith("|")]
    drop = [c.strip() for c in table[0].strip("|").split("|")].index("t/s")
    cut = "\n".join("|" + "|".join(c for k, c in enumerate(ln.strip("|").split("|")) if k != drop) + "|"
                    for ln in table)
    with pytest.raises(ParseError, match="'t/s'") as err:
        parse_llama_bench_markdown(cut)
    assert err.value.line == 1
    assert parse_posted_text(cut) == []


def test_sql_is_loaded_without_select_attach_or_stacked_statements():
    sql = block(sample("11"), "sql")
    assert len(parse_llama_bench_sql(sql).bench_rows) == len(ROW_PATTERNS[5].findall(sql))
    stacked = "INSERT INTO test (build_commit) VALUES ('x'); ATTACH DATABASE 'x.db' AS x;"
    subquery = "INSERT INTO test (build_commit) VALUES ((SELECT name FROM sqlite_master));"
    for extra in (stacked, subquery):
        with pytest.raises(ParseError, match="SQL statement failed"):
            parse_llama_bench_sql(sql + "\n" + extra)


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name[:2])
def test_truncated_samples_raise_only_parse_error_and_posted_text_never_raises(path):
    text = "\n".join(blocks(path).values())
    step = max(1, len(text) // 25)
    for cut in range(0, len(text), step):
        for piece in (text[:cut], text[cut:]):
            for parser in ALL_PARSERS:
                try:
                    parser(piece)
                except ParseError:
                    pass
            assert isinstance(parse_posted_text(piece), list)


def test_an_infinite_or_unreadable_speed_is_garbage_not_a_measurement():
    """1e999 in JSON is infinity; a 400-digit speed overflows to it too; either would make
    every statistic downstream meaningless (the fuzzer found the importer crashing on it)."""
    import math

    from coordinator.results.importers import import_text

    text = sample("11").read_text()
    jsonl = text.split("#### jsonl")[1].split("####")[0]
    with pytest.raises(ParseError, match="finite"):
        parse_llama_bench_jsonl(jsonl.replace('"samples_ts": [ ', '"samples_ts": [ 1e999, ', 1))
    records = import_text(text.replace('"samples_ts": [ ', '"samples_ts": [ 1e999, '), "box")
    assert all(all(math.isfinite(s) for m in r["metrics"].values() for s in m["samples"]) for r in records)
    table = "| model | size | params | backend | threads | test | t/s |\n| --- | ---: | ---: | --- | ---: | ---: | ---: |\n"
    rows = "| llama 7B Q4_0 | 3.56 GiB | 6.74 B | CPU | 8 | pp512 | {} |\n"
    good = parse_llama_bench_markdown(table + rows.format("12.50 ± 0.10") + rows.format("9" * 400 + " ± 1.0")
                                      + rows.format("1.2.3 ± 0.1")
                                      + rows.format("13.0 ± 0.1").replace("3.56 GiB", "1.5.6 GiB"))
    assert [r.avg_ts for r in good.bench_rows] == [12.5, 13.0]
    assert good.bench_rows[1].fields["model_size"] == "1.5.6 GiB"      # kept as posted, not a number
    assert sum("not a finite number" in note for note in good.notes) == 2
