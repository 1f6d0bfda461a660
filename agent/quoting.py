"""Quote a user's value in a message with a bounded length.

Messages quote what the user wrote so they can find it, but a value of a megabyte (or an
alias bomb's list of a billion items) must not become a message of a megabyte: ``shown``
is ``repr`` cut to a few dozen characters, and only as much of the value is looked at.
"""
from __future__ import annotations

import reprlib

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = 4
_REPR.maxdict = 3
_REPR.maxlevel = 2


def shown(value) -> str:
    """``repr(value)`` on one line, a few hundred characters at most."""
    return _REPR.repr(value)

