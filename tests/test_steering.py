"""One definition of the characters that steer a terminal or reorder what is read
(agent.spec.printable), and every check on untrusted text refuses all of them: git refs, model
paths and repo URLs (agent.spec.flags, shared by the coordinator and the agent), volunteers'
names, reasons and profiles, matrix files, stored records. A caller that takes tab and
line feed (YAML block scalars) says so; nothing else widens or narrows the set."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from agent.spec import flags
from agent.spec.cellspec import CellSpec
from coordinator.results.record_check import BadRecord, check_record
from coordinator.volunteers.volunteer_input import InputError, check_text
from agent.spec.yaml_lines import MatrixError, parse_with_lines

# C0, DEL, C1 (CSI, NEL), the bidi override, isolate and marks (RLM, ALM), the line and
# paragraph separators, zero-width space and joiner, the byte order mark
STEERING = ["\x00", "\x1b", "\r", "\x7f", "\x9b", "\x85", "\u202e", "\u2066", "\u200f", "\u061c",
            "\u2028", "\u2029", "\u200b", "\u200d", "\ufeff"]
PLAIN = "Ryzen 9 7950X — 2× RTX 3090 日本 ünïcödé"


def test_the_one_definition_finds_every_steering_character_and_passes_text_of_any_script():
    from agent.spec.printable import find_steering, steering_char, without_steering

    for ch in STEERING:
        assert find_steering(f"ab{ch}c") == 2, ascii(ch)
        assert steering_char(f"ab{ch}c") == f"U+{ord(ch):04X}"
        assert find_steering(without_steering(f"a{ch}b")) is None
    assert find_steering(PLAIN) is None and without_steering(PLAIN) == PLAIN
    assert find_steering("a\tb\nc", allow="\t\n") is None and find_steering("a\tb\nc\rd", allow="\t\n") == 5


@pytest.mark.parametrize("ch", STEERING, ids=[f"U+{ord(c):04X}" for c in STEERING])
def test_every_check_on_untrusted_text_refuses_the_same_steering_character(ch):
    # Before: git refs let C1 and bidi controls through, model paths and repo URLs checked
    # only C0 and DEL, the work API missed the separators and zero-width characters, and
    # matrix files missed the zero-width ones: each place had its own list.
    assert flags.git_ref_problem(f"v1{ch}2") is not None
    assert flags.path_problem(f"/models/tiny{ch}.gguf") is not None
    assert flags.repo_problem(f"https://github.com/ggml-org/llama.cpp{ch}") is not None
    assert flags.repo_problem(f"/src/llama{ch}.cpp") is not None
    with pytest.raises(InputError, match="control character"):
        check_text("name", f"donor{ch}", 100)
    with pytest.raises(MatrixError, match=f"m.yaml:2: description: holds the control character U\\+{ord(ch):04X}"):
        parse_with_lines(f'name: m\ndescription: "a\\u{ord(ch):04x}b"\n', "m.yaml")     # a YAML escape
    with pytest.raises(BadRecord, match="control character"):
        check_record({"run_id": "r", "cell_id": "c", "agent_id": f"a{ch}", "matrix": {}, "params": {},
                      "status": "ok"})


@pytest.mark.parametrize("value", ["v1\u202e2", "v1\x9b2", "v1\u2066x"])
def test_an_agent_refuses_a_spec_whose_ref_holds_a_bidi_or_c1_control(value):
    # Before: git_ref_problem took them, so a coordinator could hand out a tag that shows
    # as another one in the agent's log and the record.
    spec = json.loads(_real_spec())
    spec["ref"].update(kind="tag", value=value)
    with pytest.raises(ValidationError, match="not a valid git ref name"):
        CellSpec.model_validate(spec)


def test_yaml_takes_tab_and_line_feed_in_a_block_scalar_and_nothing_else():
    assert parse_with_lines("name: m\ndescription: |\n  one\ttwo\n  three\n")[0]["description"] == "one\ttwo\nthree\n"
    with pytest.raises(MatrixError, match="U\\+000D"):
        parse_with_lines('name: m\ndescription: "one\\rtwo"\n')
    with pytest.raises(InputError):
        check_text("reason", "one\ttwo", 300)       # the work API takes neither


def _real_spec() -> str:
    import tempfile
    from pathlib import Path

    from coordinator.planning.plan import load_plan
    from tests.test_untrusted_matrix import BASE

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "base.yaml"
        path.write_text(BASE)
        plan = load_plan(str(path))
    return plan.cells[0].to_spec(plan.default_run_id, "file:///tmp/store").model_dump_json()
