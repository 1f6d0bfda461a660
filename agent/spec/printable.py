"""Text that came from someone else: refused when it could steer, escaped when printed,
quoted with a bound. One module for agent/ and coordinator/ alike.

A name, reason, tag or key that holds an escape sequence can set the terminal's title,
clear the screen or draw a fake table row; a line break forges a log line; a bidi override
or a zero-width character makes text read as something it is not. These are the
*steering* characters (`find_steering`): every control (C0, DEL, C1), every format
character (the bidi embeddings, overrides, isolates and marks, zero-width ones), lone
surrogates and the line and paragraph separators. Checks refuse them at input; a caller
that takes tab or line feed (a YAML block scalar) says so with ``allow``.

On output, `printable` escapes whatever ``str.isprintable`` refuses (a wider set), and
`shown` quotes a value with ``repr`` cut short, so a value of a megabyte (or an alias
bomb's list of a billion items) never becomes a message of a megabyte.
"""
from __future__ import annotations

import reprlib
import unicodedata

# controls, format characters (bidi, zero-width), surrogates, line and paragraph separators
STEERING_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def is_steering(ch: str) -> bool:
    """Whether the character ``ch`` can steer a terminal or reorder what is read."""
    return not ch.isprintable() and unicodedata.category(ch) in STEERING_CATEGORIES


def find_steering(text: str, allow: str = "") -> int | None:
    """The index of the first steering character in ``text`` that is not in ``allow``, else
    None. Spaces and letters of any script pass."""
    if text.isprintable():             # the common case, in C: nothing steering in it
        return None
    for i, ch in enumerate(text):
        if ch not in allow and is_steering(ch):
            return i
    return None


def steering_char(text: str, allow: str = "") -> str | None:
    """The first steering character of ``text`` (not in ``allow``) as ``U+XXXX``, else None."""
    i = find_steering(text, allow)
    return None if i is None else f"U+{ord(text[i]):04X}"


def without_steering(text: str, replacement: str = " ") -> str:
    """``text`` with each steering character replaced (for text this side sends, so that the
    other side's check never refuses it)."""
    if find_steering(text) is None:
        return text
    return "".join(replacement if is_steering(ch) else ch for ch in text)


_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """``text`` with every character str.isprintable() refuses (controls, format characters
    such as bidi marks, line and paragraph separators, lone surrogates, non-ASCII spaces)
    and the backslash written as an escape; ordinary text comes back unchanged. An escape
    can't be faked by typing one: a typed backslash is doubled."""
    text = str(text)
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(ch if ch.isprintable() and ch != "\\" else _escape(ch) for ch in text)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = 4
_REPR.maxdict = 3
_REPR.maxlevel = 2


def shown(value) -> str:
    """``repr(value)`` on one line, a few hundred characters at most; only as much of the
    value is looked at."""
    return _REPR.repr(value)
