"""Engine processes: deadlines kill the whole group, and an engine never outlives its agent."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from agent.engine.runner import engine_env, run_process


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False


def test_deadline_kills_the_process_and_its_children(tmp_path):
    marker = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {marker}; sleep 60"
    result = run_process(["sh", "-c", script], 1.0, tmp_path / "o", tmp_path / "e")
    assert result.timed_out and result.exit_code is None and result.wall_s < 5
    time.sleep(0.2)
    assert not _alive(int(marker.read_text()))


def test_an_engine_dies_with_its_agent(tmp_path):
    """kill -9 of the agent process (what a cancelled Ray worker gets) leaves no engine behind."""
    pidfile = tmp_path / "engine.pid"
    agent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from pathlib import Path
        from agent.engine.runner import run_process
        run_process(["sh", "-c", "echo $$ > {pidfile}; exec sleep 60"], 120, Path("{tmp_path}/o"), Path("{tmp_path}/e"))
    """)])
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    engine = int(pidfile.read_text())
    assert _alive(engine)
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait()
    deadline = time.monotonic() + 5
    while _alive(engine) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(engine)


def test_engine_environment_drops_thread_count_variables(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = engine_env({"CUDA_VISIBLE_DEVICES": "0,1"})
    assert "OMP_NUM_THREADS" not in env and env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_a_quick_process_reports_its_exit_code_and_output(tmp_path):
    result = run_process(["sh", "-c", "echo hi; echo oops >&2; exit 3"], 10, tmp_path / "o", tmp_path / "e")
    assert (result.exit_code, result.stdout(), result.stderr()) == (3, "hi\n", "oops\n")


def test_run_process_reports_the_cpu_time_a_process_used_not_its_wall_time(tmp_path):
    """wait4's rusage: a busy loop's CPU seconds track its wall time; a sleeper's stay near 0."""
    busy = [sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"]
    sleeper = [sys.executable, "-c", "import time; time.sleep(0.4)"]
    spin = run_process(busy, 30, tmp_path / "b.out", tmp_path / "b.err")
    rest = run_process(sleeper, 30, tmp_path / "s.out", tmp_path / "s.err")
    assert spin.exit_code == rest.exit_code == 0
    assert spin.cpu_s >= 0.4 and rest.cpu_s < 0.2 <= rest.wall_s
    failing = run_process([sys.executable, "-c", "raise SystemExit(3)"], 30, tmp_path / "f.out", tmp_path / "f.err")
    assert failing.exit_code == 3 and failing.cpu_s is not None
