"""What a volunteer sends besides records: names, reasons, hardware profiles.

These end up in the ledger, the server log and the admin's terminal, so they are refused
at the door when they hold control characters (an escape sequence, a line break that forges
a log line, a bidi override that reorders what the admin reads) or are unreasonably large.
Refused, not cleaned: an honest agent never sends them, and a cleaned name would hide that
someone tried.

A profile is also compared with the one the agent enrolled with: the hardware class and the
facts that cells are matched on. The enrolled one decides what an agent may lease; a
different one needs the admin's approval again.
"""
from __future__ import annotations

import json
import math

from agent.spec.printable import find_steering
from agent.volunteer.workclient import REASON_MAX

NAME_MAX = 100
PROFILE_STRING_MAX = 256
PROFILE_BYTES_MAX = 64 << 10
PROFILE_DEPTH_MAX = 6
PROFILE_ITEMS_MAX = 2000


class InputError(ValueError):
    """Why a text or profile is refused (one line, safe to print)."""


def control_problem(text: str) -> str | None:
    """Where ``text`` holds a steering character (agent.spec.printable: tab and line feed too)."""
    i = find_steering(text)
    return None if i is None else f"holds a control character (U+{ord(text[i]):04X}) at {i}"


def check_text(what: str, text: object, limit: int) -> str:
    """``text`` as it may be stored and shown, else InputError."""
    if not isinstance(text, str):
        raise InputError(f"{what}: a string, not {type(text).__name__}")
    if len(text) > limit:
        raise InputError(f"{what}: longer than {limit} characters")
    problem = control_problem(text)
    if problem:
        raise InputError(f"{what}: {problem}; control characters are not allowed")
    return text


def check_reason(reason: object) -> str:
    """Why an agent gave a cell back, as the ledger keeps it and the log shows it."""
    return check_text("reason", reason, REASON_MAX)


def check_profile(profile: object) -> dict:
    """A hardware profile as sent (a JSON object): bounded, and no string in it, key or value,
    holds a control character."""
    if not isinstance(profile, dict):
        raise InputError("profile: a JSON object")
    if len(json.dumps(profile)) > PROFILE_BYTES_MAX:
        raise InputError(f"profile: larger than {PROFILE_BYTES_MAX >> 10} KiB")
    count = 0

    def walk(value, where: str, depth: int) -> None:
        nonlocal count
        count += 1
        if count > PROFILE_ITEMS_MAX:
            raise InputError(f"profile: more than {PROFILE_ITEMS_MAX} values")
        if depth > PROFILE_DEPTH_MAX:
            raise InputError(f"{where}: nested deeper than {PROFILE_DEPTH_MAX} levels")
        if isinstance(value, str):
            check_text(where, value, PROFILE_STRING_MAX)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{where}: not a finite number")
        elif isinstance(value, dict):
            for key, item in value.items():
                check_text(f"{where}: a key", key, PROFILE_STRING_MAX)
                walk(item, f"{where}.{key}", depth + 1)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]", depth + 1)

    walk(profile, "profile", 0)
    return profile


def hardware_identity(profile: dict) -> dict:
    """What makes a profile the same machine for the work API: its hardware class and every
    fact a cell's hardware requirement is matched on (coordinator/planning/hardware_match.py).
    Hostname, kernel, drivers and the like are left out: they change on the same hardware."""
    cpu = profile.get("cpu") if isinstance(profile.get("cpu"), dict) else {}
    gpus = profile.get("gpus") if isinstance(profile.get("gpus"), dict) else {}
    memory = profile.get("memory") if isinstance(profile.get("memory"), dict) else {}
    devices = [d for d in gpus.get("devices") or [] if isinstance(d, dict)]
    ram = memory.get("ram_gb")
    return {
        "class": str(profile.get("hardware_class") or "unknown"),
        "cpu": {k: cpu.get(k) for k in ("vendor", "brand", "uarch", "line", "cores", "threads", "sockets")},
        "cpu flags": sorted(map(str, cpu.get("flags") or [])),
        "ram_gb": round(ram) if isinstance(ram, (int, float)) else None,
        "gpu count": gpus.get("count"),
        "gpus": sorted((str(d.get("name")), str(d.get("vram_mb"))) for d in devices),
    }


def profile_change(enrolled: dict, claimed: dict) -> str | None:
    """How ``claimed`` differs from the enrolled profile, in words, or None when it is the
    same machine."""
    before, after = hardware_identity(enrolled), hardware_identity(claimed)
    if before["class"] != after["class"]:
        return f"class {before['class']} -> {after['class']}"
    changed = [name for name in before if before[name] != after[name]]
    return f"class {before['class']}, {', '.join(changed)} changed" if changed else None
