"""A bounded CPU hog: a busy loop on one core, for the busy-machine guard's tests and bench.

It runs in its own session, so it is a neighbour to the agent (agent.machine.quiet.family
leaves it out of the agent's own processes), and it ends itself after ``limit_s`` even if
nobody stops it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager

LOOP = """import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    pass
"""


@contextmanager
def cpu_hog(core: int | None = None, limit_s: float = 120.0):
    """Keep one core busy (default: the last one this process may use) while the block runs;
    yields the hog's pid."""
    core = max(os.sched_getaffinity(0)) if core is None else core
    proc = subprocess.Popen([sys.executable, "-c", LOOP, str(core), str(limit_s)], start_new_session=True,
                            stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.3)                 # started and spinning before the block looks
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
