"""Machine hygiene before a measurement: page-cache drop, idle wait, cool-down, and the facts."""
from __future__ import annotations

import os
import subprocess
import time

from agent.machine import readers


class HygieneError(RuntimeError):
    """``drop_caches: require`` could not be honoured."""


def drop_page_cache() -> tuple[bool, str]:
    """sync + echo 3 > /proc/sys/vm/drop_caches; (done, how or why not)."""
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return True, "wrote 3 to /proc/sys/vm/drop_caches"
    except OSError as exc:
        return False, f"cannot write /proc/sys/vm/drop_caches: {exc.strerror}"


def wait_until_idle(max_load: float, limit_s: float = 300.0) -> tuple[float, float]:
    """Wait until the 1-minute load per core is under ``max_load``; (load, seconds waited)."""
    cores = os.cpu_count() or 1
    started = time.monotonic()
    while True:
        load = os.getloadavg()[0] / cores
        if load <= max_load or time.monotonic() - started > limit_s:
            return load, time.monotonic() - started
        time.sleep(2.0)


def machine_state() -> dict:
    """Facts that change between runs and move numbers: governor, boost, THP (read as the
    profile reads them), load."""
    return {
        "governor": readers.cpu_governor(),
        "boost": readers.cpu_boost(),
        "thp": readers.transparent_hugepages(),
        "load_1m": os.getloadavg()[0],
    }


def prepare(drop_caches: str, max_load: float | None, cooldown_s: float) -> dict:
    """Apply the cell's hygiene; returns what was done, for the record."""
    facts: dict = {"drop_caches": drop_caches}
    if cooldown_s > 0:
        time.sleep(cooldown_s)
        facts["cooldown_s"] = cooldown_s
    if max_load is not None:
        load, waited = wait_until_idle(max_load)
        facts.update(idle_wait_s=round(waited, 2), load_per_core=round(load, 3))
    if drop_caches != "off":
        done, how = drop_page_cache()
        facts.update(caches_dropped=done, caches_note=how)
        if not done and drop_caches == "require":
            raise HygieneError(f"drop_caches: require, but {how}")
    facts.update(machine_state())
    return facts
