"""When the owner lets cells start: daily time windows, and the hours already used today.

Both are local wall-clock matters and free of policy parsing, so the policy (agent/volunteer/policy.py)
reads them from here.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

# ---------------------------------------------------------------- time windows

_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WINDOW = re.compile(r"^(?:(?P<days>\S+)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$")


@dataclass(frozen=True)
class Window:
    """A daily span in local time; it belongs to the day it starts on (``Fri 22:00-07:00``
    includes Saturday 03:00, not Friday 03:00)."""
    days: frozenset[int]      # weekday() numbers, Monday = 0
    start: int                # minutes after midnight
    end: int                  # minutes after midnight, 1..1440; <= start: ends the next day
    text: str

    @property
    def minutes(self) -> int:
        return (self.end - self.start) % 1440 or 1440


def _minutes(text: str, what: str, allow_24: bool) -> int:
    hours, minutes = (int(x) for x in text.split(":"))
    if minutes > 59:
        raise ValueError(f"bad {what} time {text!r} (minutes 00-59)")
    if hours > 23 and not (allow_24 and hours == 24 and minutes == 0):
        raise ValueError(f"bad {what} time {text!r} (hours 00-23{', or 24:00' if allow_24 else ''})")
    return hours * 60 + minutes


def _day(name: str, text: str) -> int:
    key = name.strip().lower()[:3]
    if key not in _DAYS or len(name.strip()) < 3:
        raise ValueError(f"bad day {name!r} in {text!r} (use Mon Tue Wed Thu Fri Sat Sun)")
    return _DAYS.index(key)


def parse_window(text: str) -> Window:
    """``"HH:MM-HH:MM"``, optionally after days such as ``Mon-Fri`` or ``Sat,Sun``."""
    match = _WINDOW.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"bad window {text!r}: expected 'HH:MM-HH:MM', optionally after days "
                         "('Mon-Fri 22:00-07:00', 'Sat,Sun 00:00-24:00')")
    start = _minutes(match["start"], "start", allow_24=False)
    end = _minutes(match["end"], "end", allow_24=True)
    if start == end:
        raise ValueError(f"window {text!r} is empty; for all day write 00:00-24:00")
    days: set[int] = set()
    for part in (match["days"] or "Mon-Sun").split(","):
        if "-" in part:
            first, last = (_day(x, text) for x in part.split("-", 1))
            days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
        else:
            days.add(_day(part, text))
    return Window(frozenset(days), start, end, text.strip())


def local_time(now: datetime | None) -> datetime:
    """Naive local wall-clock time; an aware ``now`` is converted to the local zone first."""
    if now is None:
        return datetime.now()
    return now.astimezone().replace(tzinfo=None) if now.tzinfo else now


def _open_spans(window: Window, now: datetime, days_ahead: int):
    """Start and end of each occurrence of ``window`` from yesterday to ``days_ahead``."""
    for offset in range(-1, days_ahead + 1):
        day = now.date() + timedelta(days=offset)
        if day.weekday() in window.days:
            start = datetime.combine(day, dtime()) + timedelta(minutes=window.start)
            yield start, start + timedelta(minutes=window.minutes)


def in_windows(windows: list[str], now: datetime | None = None) -> bool:
    """True when ``now`` lies in one of the windows; no windows means any time."""
    now = local_time(now)
    if not windows:
        return True
    return any(start <= now < end for w in map(parse_window, windows) for start, end in _open_spans(w, now, 0))


def next_window_start(windows: list[str], now: datetime | None = None) -> datetime | None:
    """The first window opening after ``now`` (None when there are no windows)."""
    now = local_time(now)
    starts = [start for w in map(parse_window, windows) for start, _ in _open_spans(w, now, 7) if start > now]
    return min(starts, default=None)


def duration_text(seconds: float) -> str:
    """3 h 10 min: how long a human waits, rounded up to the minute."""
    minutes = max(1, math.ceil(seconds / 60))
    days, rest = divmod(minutes, 1440)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(p for p in parts if p)



# ---------------------------------------------------------------- hours used

class Ledger:
    """Seconds of cell work per local day, so max_hours_per_day holds across restarts.

    A JSON file ``{"days": {"YYYY-MM-DD": seconds}}``; the last 8 days are kept. A missing
    or corrupt file starts over: losing a day's count must never stop the agent.
    """
    KEEP_DAYS = 8

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> dict[str, float]:
        try:
            days = json.loads(self.path.read_text()).get("days", {})
            return {k: float(v) for k, v in days.items() if date.fromisoformat(k) and float(v) >= 0}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def _write(self, days: dict[str, float]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.path.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump({"days": dict(sorted(days.items()))}, handle)
        os.replace(tmp, self.path)

    def add(self, seconds: float, now: datetime | None = None) -> None:
        """Count ``seconds`` of work that ended at ``now``; work spanning midnight is split."""
        now = local_time(now)
        lock = self.path.with_name(self.path.name + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            days = self._read()
            cursor = now - timedelta(seconds=min(max(0.0, float(seconds)), self.KEEP_DAYS * 86400.0))
            while cursor < now:
                segment_end = min(now, datetime.combine(cursor.date() + timedelta(days=1), dtime()))
                key = cursor.date().isoformat()
                days[key] = days.get(key, 0.0) + (segment_end - cursor).total_seconds()
                cursor = segment_end
            oldest = (now.date() - timedelta(days=self.KEEP_DAYS - 1)).isoformat()
            self._write({k: v for k, v in days.items() if k >= oldest})

    def used_today(self, now: datetime | None = None) -> float:
        """Seconds counted for ``now``'s local day."""
        return self._read().get(local_time(now).date().isoformat(), 0.0)

