"""Text that came from someone else, made safe to print on a terminal or into a log line.

A name, reason or key that holds an escape sequence can set the terminal's title, clear the
screen or draw a fake table row; a line break forges a log line; a bidi override reorders
what the reader sees. `printable` shows every such character as an escape (``\\x1b``,
``\\u202e``) instead, and doubles a backslash so an escape can't be faked by typing one.
Use it wherever untrusted text is printed (agent/ and coordinator/ alike).
"""
from __future__ import annotations


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
    and the backslash written as an escape; ordinary text comes back unchanged."""
    text = str(text)
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(ch if ch.isprintable() and ch != "\\" else _escape(ch) for ch in text)


_STEERING = {"Cc", "Cf", "Cs", "Zl", "Zp"}     # controls, format (bidi, zero-width), surrogates, line breaks


def steering_char(text: str) -> str | None:
    """The first character of ``text`` that can steer a terminal or reorder what is read
    (a control, a bidi or other format character, a lone surrogate, a line or paragraph
    separator) as ``U+XXXX``, else None. Spaces and letters of any script pass."""
    if text.isprintable():
        return None
    import unicodedata

    for ch in text:
        if not ch.isprintable() and unicodedata.category(ch) in _STEERING:
            return f"U+{ord(ch):04X}"
    return None
