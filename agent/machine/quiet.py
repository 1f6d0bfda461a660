"""The busy-machine guard: before each measured engine process, is anyone else using the CPU?

A neighbour only ever takes time away from the engine, so a process that ran next to one is
not a sample like the others. Before each measured process the agent looks at the machine
for WINDOW_S: the CPU time that processes not of this agent used (the machine's busy time
from /proc/stat minus this agent's own), the CPU time a hypervisor stole (/proc/stat steal,
0 where the kernel has none), and the 1-minute load average per core. It waits (bounded)
for quiet, or marks the process disturbed, or fails the cell, as ``hygiene.busy`` says.

This agent's own processes (``family``) are its process group - the agent, and in an
embedded ``hwmatrix run`` the driver with the Ray services it started - and, in a Ray worker,
the Ray node's other processes (raylet's group and its workers). An engine runs in its own
session, but never while the guard looks.

Measured on a 2-core VM (firecracker, shared with other jobs, 2026-12-02): with no other job
running, 0.00-0.02 cores of others per window (5 windows of 0.5 s; per process, the kernel threads and
the VM's init used 0.000 cores at the median and 0.020 at most over 40 windows); under one
busy loop pinned to one core (tests/hog.py), the loop alone 98-102% of a core per 0.25 s
window and 0.87-1.06 cores of others in all (about 50% for the loop when another job shared
its core); steal 0.00% throughout. BUSY_CORES = 0.25 sits well above the first and below the
second; a look costs 0.26 s per process. The load average decides nothing: it is a 1-minute
average that counts this agent's own engine threads (threads=2 processes run back to back
add up to 2.0 to it, 1.0 per core here) and still shows a neighbour a minute after it left; it is recorded
beside the window's figures.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import psutil

from agent.spec.printable import printable

WINDOW_S = 0.25         # one look: a neighbour at full load shows within it, and it adds little per process
BUSY_CORES = 0.25       # other processes using more than this many cores: busy
STEAL_BUSY_PCT = 5.0    # a hypervisor stealing more than this % of CPU time: busy
TOP = 3                 # the biggest other consumers a record names


class BusyMachine(RuntimeError):
    """``hygiene.busy: fail`` and the machine stayed busy for the cell's quiet_wait_s."""


@dataclass
class Look:
    """What one window saw."""
    others_cores: float                 # CPU used by processes not of this agent, in cores
    steal_pct: float                    # % of all CPU time stolen by the hypervisor
    load_per_core: float                # 1-minute load average / CPUs (recorded, not decisive)
    top: list[dict] = field(default_factory=list)       # {pid, name, cpu_pct}, biggest first
    cpu_busy: dict[int, float] = field(default_factory=dict)   # CPU -> busy fraction, for pinning

    def why_busy(self) -> list[str]:
        """Each reason the machine is not quiet; empty when it is."""
        reasons = []
        if self.others_cores > BUSY_CORES:
            reasons.append(f"other processes used {self.others_cores:.2f} cores (> {BUSY_CORES:g})")
        if self.steal_pct > STEAL_BUSY_PCT:
            reasons.append(f"the hypervisor stole {self.steal_pct:.1f}% of CPU time (> {STEAL_BUSY_PCT:g}%)")
        return reasons


def family() -> set[int]:
    """This agent's processes: its process group; in a Ray worker (raylet's child) also the
    Ray node: raylet's process group (the driver and Ray's services) and raylet's workers."""
    me = psutil.Process()
    groups = {os.getpgid(0)}
    extra: set[int] = set()
    try:
        parent = me.parent()
        if parent is not None and parent.name() == "raylet":
            groups.add(os.getpgid(parent.pid))
            extra = {p.pid for p in parent.children(recursive=True)}
    except (psutil.Error, OSError):
        pass
    ours = set(extra)
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) in groups:
                ours.add(proc.pid)
        except OSError:
            continue
    return ours


def _process_times() -> dict[int, tuple[str, float]]:
    times = {}
    for proc in psutil.process_iter(["name"]):
        try:
            t = proc.cpu_times()
            times[proc.pid] = (proc.info["name"] or "?", t.user + t.system)
        except psutil.Error:
            continue
    return times


def _busy(t) -> float:
    return t.user + t.nice + t.system + t.irq + t.softirq


def look(window_s: float = WINDOW_S) -> Look:
    """Watch the machine for ``window_s`` seconds."""
    ours = family()
    cpus0, procs0, started = psutil.cpu_times(percpu=True), _process_times(), time.monotonic()
    time.sleep(window_s)
    cpus1, procs1 = psutil.cpu_times(percpu=True), _process_times()
    elapsed = max(time.monotonic() - started, 1e-3)
    busy = sum(_busy(b) - _busy(a) for a, b in zip(cpus0, cpus1))
    total = sum(sum(b) - sum(a) for a, b in zip(cpus0, cpus1))
    steal = sum(getattr(b, "steal", 0.0) - getattr(a, "steal", 0.0) for a, b in zip(cpus0, cpus1))
    own = sum(t - procs0[pid][1] for pid, (_, t) in procs1.items() if pid in ours and pid in procs0)
    others = sorted(((t - procs0[pid][1], pid, name) for pid, (name, t) in procs1.items()
                     if pid not in ours and pid in procs0 and t > procs0[pid][1]), reverse=True)
    cpu_busy = {i: max(0.0, (_busy(b) - _busy(a)) / max(sum(b) - sum(a), 1e-9))
                for i, (a, b) in enumerate(zip(cpus0, cpus1))}
    return Look(others_cores=round(max(0.0, busy - own) / elapsed, 3),
                steal_pct=round(100 * steal / total, 2) if total > 0 else 0.0,
                load_per_core=round(os.getloadavg()[0] / (os.cpu_count() or 1), 3),
                top=[{"pid": pid, "name": printable(name)[:40], "cpu_pct": round(100 * t / elapsed, 1)}
                     for t, pid, name in others[:TOP]],
                cpu_busy=cpu_busy)


def least_used(seen: Look, threads: int | None) -> list[int]:
    """The ``threads`` CPUs (of those this process may use) the window saw least busy; all of
    them when the engine asks for as many or more (or leaves threads to its default)."""
    allowed = sorted(os.sched_getaffinity(0))
    if threads is None or threads >= len(allowed):
        return allowed
    return sorted(sorted(allowed, key=lambda cpu: (seen.cpu_busy.get(cpu, 0.0), cpu))[:threads])


def settle(hygiene, threads: int | None, earlier: list[dict], waiting: Callable[[str], None] | None = None,
           looker: Callable[[], Look] | None = None, clock: Callable[[], float] = time.monotonic) -> dict:
    """Look, and wait for quiet as ``hygiene.busy`` says, before one measured process; what
    was seen, for the record. ``quiet_wait_s`` is what a cell may wait in all: ``earlier``
    (this cell's processes so far) have used part of it. ``waiting`` hears why, once, when a
    wait begins. Raises BusyMachine under ``busy: fail`` when the machine stayed busy."""
    looker = looker or look
    budget = max(0.0, hygiene.quiet_wait_s - sum(p.get("waited_s", 0.0) for p in earlier))
    seen = looker()
    began = clock()
    if seen.why_busy() and hygiene.busy != "mark" and budget > 0 and waiting:
        waiting(f"waiting up to {budget:.0f} s for a quiet machine: {'; '.join(seen.why_busy())}")
    while seen.why_busy() and hygiene.busy != "mark" and clock() - began < budget:
        seen = looker()
    waited = round(clock() - began, 2)
    reasons = seen.why_busy()
    if reasons and hygiene.busy == "fail":
        names = ", ".join(f"{p['name']} (pid {p['pid']}, {p['cpu_pct']:g}%)" for p in seen.top) or "none named"
        raise BusyMachine(f"the machine stayed busy for {waited:g} s (hygiene.quiet_wait_s {hygiene.quiet_wait_s:g}, "
                          f"busy: fail): {'; '.join(reasons)}; biggest other processes: {names}")
    facts = {"disturbed": bool(reasons), "why": "; ".join(reasons), "waited_s": waited,
             "others_cores": seen.others_cores, "steal_pct": seen.steal_pct,
             "load_per_core": seen.load_per_core, "top": seen.top}
    if hygiene.pin == "auto":
        facts["cpus"] = least_used(seen, threads)
    return facts
