"""Machine hygiene before a measurement: page-cache drop, idle wait, cool-down, and the facts."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


class HygieneError(RuntimeError):
    """``drop_caches: require`` could not be honoured."""


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


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
    """Facts that change between runs and move numbers: governor, boost, THP, load."""
    thp = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp and "[" in thp:
        thp = thp.split("[", 1)[1].split("]", 1)[0]
    boost = _read("/sys/devices/system/cpu/cpufreq/boost")
    no_turbo = _read("/sys/devices/system/cpu/intel_pstate/no_turbo")
    return {
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "boost": (boost == "1") if boost is not None else ((no_turbo == "0") if no_turbo is not None else None),
        "thp": thp,
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
