"""`hwmatrix volunteers list` shows what agents sent (names, classes, verdict details)
escaped: a name stored before input checks existed, or put in the ledger by hand, must not
set the admin's terminal title, clear the screen or draw a fake table row. The ledger is the
real SQLite file, the CLI the real process."""
from __future__ import annotations

import json
import sqlite3

import pytest

from coordinator.volunteers.ledger import Ledger
from tests.conftest import hwmatrix

OSC_TITLE = "\x1b]0;you have been owned\x07"
CLEAR = "\x1b[2J\x1b[H"
FAKE_ROW = "\r\nv-admin-000000  trusted   approved"
BIDI = "\u202eevil\u202c"
NAME = f"box{OSC_TITLE}{CLEAR}{FAKE_ROW}{BIDI}"
RAW = ("\x1b", "\x07", "\r", "\u202e", "\u202c", "\x9b")


@pytest.fixture
def state(tmp_path):
    """A ledger with one agent whose name, class and a cross-check hold control characters,
    written straight into the database (the work API refuses them at input)."""
    ledger = Ledger(tmp_path / "vol")
    agent_id, _, _ = ledger.enroll(ledger.invite(), "box", {"hardware_class": "zen4"})
    with sqlite3.connect(ledger.path) as db:
        db.execute("UPDATE agents SET name=?, hardware_class=? WHERE agent_id=?",
                   (NAME, f"zen4{CLEAR}\x9b31m", agent_id))
    ledger.note_check("r1", f"c1{OSC_TITLE}", "zen4", [agent_id, f"b{BIDI}"], "disagree", f"pp{FAKE_ROW}")
    return tmp_path / "vol"


@pytest.mark.timeout(60)
def test_volunteers_list_shows_control_characters_in_names_escaped(state):
    result = hwmatrix("volunteers", "list", "--state", str(state), timeout=50)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert not any(ch in out for ch in RAW), repr(out)
    assert "box\\x1b]0;you have been owned\\x07\\x1b[2J\\x1b[H\\r\\nv-admin" in out   # shown escaped, not dropped
    assert "\\u202eevil\\u202c" in out and "zen4\\x1b[2J\\x1b[H\\x9b31m" in out
    table = out.split("\n\n")[0].splitlines()
    assert len(table) == 3                             # header, rule, the one agent: no forged row
    assert not any(line.startswith("v-admin") for line in out.splitlines())
    assert "cross-check c1\\x1b]0;" in out and "pp\\r\\nv-admin" in out


@pytest.mark.timeout(60)
def test_volunteers_list_json_escapes_control_characters_and_keeps_the_text(state):
    result = hwmatrix("volunteers", "list", "--state", str(state), "--format", "json", timeout=50)
    assert result.returncode == 0, result.stderr
    assert not any(ch in result.stdout for ch in RAW)
    data = json.loads(result.stdout)
    assert data["agents"][0]["name"] == NAME          # the exact text, for a script to judge
    assert data["checks"][0]["detail"] == f"pp{FAKE_ROW}"


def test_printable_escapes_what_steers_a_terminal_and_leaves_text_alone():
    from agent.spec.printable import printable

    assert printable("Ryzen 9 7950X — 2× RTX 3090 日本") == "Ryzen 9 7950X — 2× RTX 3090 日本"
    assert printable("a\x1b[2Jb\r\n\t\x00") == "a\\x1b[2Jb\\r\\n\\t\\x00"
    assert printable("\u202e\u2066\u200f\u2028\ud800\x85") == "\\u202e\\u2066\\u200f\\u2028\\ud800\\x85"
    assert printable("C:\\x1b") == "C:\\\\x1b"          # a typed backslash can't pass for an escape
    assert printable(None) == "None" and printable(42) == "42"
