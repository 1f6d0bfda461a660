"""Inputs that random-seed runs of tests/test_fuzz.py found crashing, pinned as plain tests.

Each is the minimal example hypothesis printed (the last few, beyond the fuzzers' size limits,
came from probing the same code paths by hand); each asserts the documented clean error
(MatrixError naming file, line and key; ParseError; ImportFailed), so the bug cannot return
unnoticed while the fuzz tests themselves stay derandomized.
"""
from __future__ import annotations

import pytest
import yaml

from agent.parsers import (
    ParseError,
    parse_llama_bench_csv,
    parse_llama_bench_json,
    parse_llama_bench_jsonl,
    parse_llama_bench_markdown,
    parse_llama_bench_sql,
    parse_posted_text,
    parse_sweep_bench,
)
from coordinator.results.importers import ImportFailed, import_text
from agent.spec.yaml_lines import MatrixError
from coordinator.matrix.loading import validate_matrix
from agent.spec.yaml_lines import parse_with_lines
from tests.test_untrusted_matrix import BASE


def _matrix_error(text: str) -> str:
    data, lines = parse_with_lines(text, "fuzz.yaml")
    with pytest.raises(MatrixError) as exc:
        validate_matrix(data, lines, "fuzz.yaml")
    return str(exc.value)


# ---------------------------------------------------------------- matrix files

def test_a_null_top_level_key_gives_missing_name_not_key_error():
    # '&aname:' parses as {None: None}; the alias lookup SHORT.get('name') (None) matched the null key.
    assert _matrix_error("&aname:") == "fuzz.yaml:1: missing required key 'name'"


@pytest.mark.parametrize("axis", ["quant", "tool", "b"])
def test_an_axis_left_empty_in_yaml_is_a_matrix_error_not_a_type_error(axis):
    # "quant:" with nothing under it is null, which pydantic let through and axes() then iterated.
    text = BASE.replace("  quant:\n    - Q8_0\n", f"  {axis}:\n")
    assert _matrix_error(text) == (f"fuzz.yaml:18: matrix.{axis}: "
                                   "an axis needs at least 1 value, got nothing (null)")


def test_a_key_with_a_line_break_is_quoted_so_the_error_stays_one_line():
    # format_key joined the raw key 'a\nb' into the error, splitting it over two lines.
    data = yaml.safe_load(BASE)
    data["engines"]["a\nb"] = ""
    with pytest.raises(MatrixError) as exc:
        validate_matrix(data, {}, "fuzz.yaml")
    assert str(exc.value) == ("fuzz.yaml: engines['a\\nb']: 'a\\nb' is not a valid name "
                              "(letters, digits, '.', '_', '-')")


# ---------------------------------------------------------------- posted tool output

def test_a_csv_line_with_a_lone_carriage_return_is_a_parse_error():
    # csv.reader raises _csv.Error (not a ValueError) on a '\r' inside an unquoted field.
    with pytest.raises(ParseError, match=r"^line 1: unreadable CSV line: new-line character"):
        parse_llama_bench_csv("build_commit,a\rb")


def test_a_csv_block_with_a_lone_carriage_return_is_skipped_by_the_posted_text_scanner_and_import():
    assert parse_posted_text("build_commit,a\rb") == []
    with pytest.raises(ImportFailed, match="no llama-bench or llama-sweep-bench output found"):
        import_text("build_commit,a\rb", "Ryzen 9 + 4090", source="fuzz.md")


def test_a_nul_character_in_sql_is_a_parse_error_not_sqlite_value_error():
    # sqlite3.complete_statement raises ValueError("embedded null character") on NUL.
    with pytest.raises(ParseError, match=r"^line 1: NUL character in SQL text$"):
        parse_llama_bench_sql("CREATE TABLE a\x00b")


DEEP = "[" * 100_000            # past the json module's recursion limit
HUGE = "9" * 5000               # past Python's 4300-digit cap on str -> int


def test_json_nested_past_the_recursion_limit_is_a_parse_error_not_recursion_error():
    with pytest.raises(ParseError, match=r"^line 1: unreadable JSON array starting here: maximum recursion"):
        parse_llama_bench_json('[{"a": ' + DEEP)
    with pytest.raises(ParseError, match=r"^line 1: truncated or invalid JSON object: maximum recursion"):
        parse_llama_bench_jsonl('{"avg_ts": ' + DEEP)
    with pytest.raises(ParseError, match=r"^line 1: truncated or invalid sweep-bench JSONL line$"):
        parse_sweep_bench('{"n_kv": ' + DEEP)


MD_HEAD = "| model | size | params | backend | threads | test | t/s |\n| --- | --- | --- | --- | --- | --- | --- |\n"
SWEEP_HEAD = "| PP | TG | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s |\n|---|---|---|---|---|---|---|\n"


def test_an_integer_past_pythons_digit_cap_is_a_parse_error_not_value_error():
    with pytest.raises(ParseError, match=r"^line 1: unreadable JSON array starting here: Exceeds the limit"):
        parse_llama_bench_json('[{"n_prompt": ' + HUGE + "}]")
    with pytest.raises(ParseError, match=r"^a number of 5000 digits is too long$"):
        parse_llama_bench_markdown(MD_HEAD + f"| m | 1 GiB | 1 B | CPU | 1 | pp{HUGE} | 1.0 ± 0.1 |\n")
    with pytest.raises(ParseError, match=r"^sweep-bench row has no usable pp in line 3$"):
        parse_sweep_bench(SWEEP_HEAD + f"| {HUGE} | 128 | 0 | 0.1 | 100 | 1 | 1 |\n")


def test_a_huge_count_in_a_markdown_cell_stays_text():
    out = parse_llama_bench_markdown(MD_HEAD + f"| m | 1 GiB | 1 B | CPU | {HUGE} | pp512 | 1.0 ± 0.1 |\n")
    assert out.bench_rows[0].fields["n_threads"] == HUGE


def test_a_huge_value_on_a_sweep_main_line_is_dropped_not_raised_by_the_posted_text_scanner():
    # main_line_extra runs outside the scanner's try, so it must not raise at all.
    outputs = parse_posted_text(f"main: n_kv_max = {HUGE}, n_batch = 2\n" + SWEEP_HEAD + "| 512 | 128 | 0 | 0.1 | 100 | 1 | 1 |\n")
    assert [out.sweep_rows[0].extra for out in outputs] == [{"n_batch": 2}]
