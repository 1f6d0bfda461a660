"""Token buckets for the work API: per address for failures, per agent for its calls.

A bucket holds ``burst`` tokens and gains ``per_s`` a second; a call that finds it empty is
told how long to wait (429 with Retry-After). Buckets only ever slow down whoever drains
them: failed attempts from one address throttle that address's further *failures*, never
a valid code or key (80-bit codes and 256-bit keys cannot be guessed at any rate a network
allows, so locking out a NAT full of donors would buy nothing).
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

from coordinator.volunteers.ledger import Refused


class Throttled(Refused):
    """429: this address or agent spent its bucket; ``retry_after`` in whole seconds."""

    def __init__(self, wait_s: float, message: str):
        self.retry_after = max(1, math.ceil(wait_s))
        super().__init__(429, f"{message}; retry in {self.retry_after} s")


class Buckets:
    """One bucket per key (an address, an agent id), at most ``max_keys`` of them: the
    least recently used go first (a forgotten bucket is a full one, so that only forgives)."""

    def __init__(self, burst: float, per_s: float, max_keys: int = 50_000):
        self.burst, self.per_s, self.max_keys = burst, per_s, max_keys
        self._tokens: OrderedDict[str, tuple[float, float]] = OrderedDict()   # key -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend a token: 0 if there was one, else the seconds until there is (nothing spent)."""
        now = time.monotonic()
        with self._lock:
            tokens, when = self._tokens.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - when) * self.per_s)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.per_s
            self._tokens[key] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._tokens) > self.max_keys:
                self._tokens.popitem(last=False)
        return wait
