"""A policy file is read as a matrix is (agent.spec.yaml_lines): a hostile key gets the
same one-line error, with the key quoted, never a line break or a bidi override in it."""
from __future__ import annotations

import pytest

from agent.spec.printable import find_steering
from agent.volunteer.policy import PolicyError, load_policy

BASE = "repos:\n  - https://github.com/ggml-org/llama.cpp\n"


def refusal(tmp_path, text: str) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ") and "\n" not in message and find_steering(message) is None
    return message[len(f"{path}:3: "):]


def test_a_key_with_a_line_break_is_quoted_on_one_line(tmp_path):
    assert refusal(tmp_path, BASE + '"gpus\\n1.2.3.4 enrolled": 1\n').startswith(
        "['gpus\\n1.2.3.4 enrolled']: unknown key (allowed: repos,")


def test_a_key_with_a_bidi_override_is_refused_where_it_stands(tmp_path):
    assert refusal(tmp_path, BASE + "\"gpus\u202e\": 1\n") == (
        "['gpus\\u202e']: holds the control character U+202E (RIGHT-TO-LEFT OVERRIDE); control and "
        "bidi characters are refused, as they can make text show as something it is not")


def test_a_huge_value_makes_a_bounded_message(tmp_path):
    message = refusal(tmp_path, BASE + f"gpus: {'x' * 100_000}\n")
    assert message.startswith("gpus: Input should be a valid integer, got str 'xxxx") and len(message) < 200


def test_an_oversized_policy_file_is_refused_unread_as_a_policy_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(BASE + "# " + "x" * (300 << 10) + "\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}: larger than 262,144 bytes, the most a policy file may hold"
