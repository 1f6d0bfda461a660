"""How an axis value reads in a table: the one spelling plans and reports share."""
from __future__ import annotations


def display(value) -> str:
    """One axis value as a table shows it (bools as on/off, dicts as k=v)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
