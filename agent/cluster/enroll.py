"""`hwmatrix agent join`: enroll this machine in a Ray cluster as a benchmark agent.

The agent probes itself, then starts a Ray worker whose node labels are its profile (what
the coordinator's `label_selector` matches) and which holds exactly one benchmark slot.
Token authentication is always on: Ray refuses a worker with a wrong or missing token.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from typing import Callable

from agent.store import spool
from agent.cluster.auth import TokenError, token_env
from agent.machine.labels import profile_labels
from agent.machine.probe import probe
from agent.cluster.worker import BENCH_RESOURCE

ADDRESS = re.compile(r"^[A-Za-z0-9.\-]+:\d{1,5}$")


class EnrollError(RuntimeError):
    """A foreseeable enrollment failure, with a message for the machine's owner."""


def check_address(address: str) -> str:
    if not ADDRESS.match(address):
        raise EnrollError(f"--address must be HOST:PORT, got {address!r}")
    return address


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once, in one line, when nothing listens at HOST:PORT (Ray itself would retry
    for most of a minute, printing its own warnings)."""
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise EnrollError(f"no Ray head answers at {address} ({exc.strerror or exc}): is `hwmatrix cluster up` "
                          "running there, and the port open?") from None


def _wait_listening(address: str, proc: subprocess.Popen, timeout_s: float = 120) -> bool:
    """Whether ``address`` takes connections before ``proc`` exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            check_reachable(address, timeout_s=1)
            return True
        except EnrollError:
            time.sleep(0.2)
    return False


def join_argv(address: str, labels: dict[str, str], block: bool, num_cpus: int | None = None) -> list[str]:
    argv = [shutil.which("ray") or "ray", "start", "--address", address,
            "--resources", json.dumps({BENCH_RESOURCE: 1}),
            "--labels", ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "--disable-usage-stats"]
    if num_cpus is not None:
        argv += ["--num-cpus", str(num_cpus)]
    if block:
        argv.append("--block")
    return argv


def explain_failure(output: str) -> str:
    """Ray's long stack traces, boiled down to what the owner can act on."""
    if "InvalidAuthToken" in output or "AuthenticationError" in output or "Authentication token" in output:
        return "the cluster refused this agent's token (wrong or missing): use the head's token file"
    if "Failed to connect" in output or "Unable to connect" in output or "timed out" in output.lower():
        return "no Ray head answers at that address (is `hwmatrix cluster up` running, port open?)"
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "ray start failed"


def join(address: str, token_file: str | None = None, block: bool = False) -> int:
    """Probe, deliver anything a crash left in the spool, start the Ray worker."""
    try:
        env = {**os.environ, **token_env(token_file)}
    except TokenError as exc:
        raise EnrollError(str(exc)) from None
    check_address(address)
    check_reachable(address)
    profile = probe()
    labels = profile_labels(profile)
    delivered, errors = spool.flush()
    if delivered or errors:
        print(f"spool: delivered {len(delivered)} record(s) left from an earlier run, {len(errors)} still waiting")
    print(f"joining {address} as {profile.hostname} (class {profile.hardware_class}, {profile.cpu.uarch}, "
          f"{profile.gpus.count} GPU(s))")
    code = ray_start(join_argv(address, labels, block), env, block)
    if not block:
        print("joined: this machine now takes benchmark cells (one at a time). `ray stop` leaves the cluster.")
    return code


def ray_start(argv: list[str], env: dict[str, str], block: bool, ready_at: str | None = None,
              on_ready: Callable[[], None] | None = None) -> int:
    """Run `ray start`: in the foreground with --block (its exit code), else to completion,
    raising EnrollError with Ray's failure boiled down to one line. ``on_ready`` runs once
    ``ready_at`` (HOST:PORT) takes connections, so a join command printed then works at once."""
    if block:
        proc = subprocess.Popen(argv, env=env)
        if on_ready and ready_at and _wait_listening(ready_at, proc):
            on_ready()
        return proc.wait()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise EnrollError(explain_failure(result.stdout + result.stderr))
    return 0
