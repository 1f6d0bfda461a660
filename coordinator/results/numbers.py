"""How result numbers are printed where people read them: every report's tables and the
cross-check details print a p-value the same way."""
from __future__ import annotations


def fmt_p(p) -> str:
    return "-" if p is None else f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"
