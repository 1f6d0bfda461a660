"""Run one engine process: argv only, output to files, a deadline that kills the whole group."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent.engine import sandbox

MAX_OUTPUT_BYTES = 64 * 1024 * 1024   # a runaway tool may not fill the disk
# Only these variables of the agent's environment reach an engine: Ray and others inject
# thread-count variables (OMP_NUM_THREADS=1) that would change what is measured.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LD_LIBRARY_PATH")


@dataclass
class ProcessResult:
    argv: list[str]
    exit_code: int | None
    timed_out: bool
    wall_s: float
    stdout_path: Path
    stderr_path: Path
    truncated: bool = False
    cpu_s: float | None = None      # user + system CPU time of the process and the children it waited for

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def engine_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env.update(extra or {})
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _launcher(argv: list[str]) -> list[str]:
    """Tie the engine's life to ours: if the agent dies (SIGKILL, Ctrl-C of the driver that
    owns it), the kernel kills the engine too (PR_SET_PDEATHSIG via util-linux setpriv)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


def _readable(argv: list[str]) -> list[Path]:
    """What a sandboxed engine may read: its binary's directory (the ggml libs sit beside
    it) and the model file its -m/--model argument names - no other argument's file."""
    paths = [Path(os.path.abspath(argv[0])).parent] if os.sep in argv[0] else []
    return paths + [Path(value) for flag, value in zip(argv[1:], argv[2:])
                    if flag in ("-m", "--model") and os.path.isfile(value)]


@contextmanager
def _pinned(cpus: list[int] | None):
    """A child inherits the CPU set of the thread that forks it: this thread takes ``cpus``
    for the fork and gets its own back (no preexec_fn, which may deadlock in a threaded agent)."""
    if not cpus:
        yield
        return
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)


def run_process(argv: list[str], timeout_s: float, stdout_path: Path, stderr_path: Path,
                env: dict[str, str] | None = None, cwd: Path | None = None,
                readable: list[Path] | None = None, cpus: list[int] | None = None) -> ProcessResult:
    """Run ``argv`` in its own session; on timeout (or our own death) the whole group dies.
    Inside ``sandbox.confined()`` it runs in bubblewrap, with only ``cwd`` writable,
    ``readable`` (default: see _readable) read-only and of ``env`` only the sandbox's
    allowlist (sandbox.ENV_PASSED); bwrap's --die-with-parent and its PID
    namespace take the sandboxed tree down when the group's leader (bwrap) is killed.
    ``cpus`` pins the process (and every thread and child it makes) to those CPUs from its
    first instruction, so no engine thread ever starts elsewhere."""
    stdout_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        try:
            command, env = argv, env if env is not None else engine_env()
            if sandbox.active():    # inside, only the sandbox's allowlist of ``env`` is set
                command = sandbox.wrap(argv, [cwd] if cwd else [], _readable(argv) if readable is None else readable,
                                       cwd=cwd, env=env)
            with _pinned(cpus):
                proc = subprocess.Popen(_launcher(command), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                        env=env, cwd=cwd, start_new_session=True)
        except (OSError, sandbox.SandboxUnavailable) as exc:
            if not sandbox.active():
                raise
            err.write(f"cannot start the sandbox: {exc}\n".encode())   # a failed process, with its log
            return ProcessResult(argv, 127, False, time.monotonic() - started, stdout_path, stderr_path)
        verdict: dict[str, bool] = {"timed_out": False, "truncated": False}
        finished = threading.Event()

        def watchdog() -> None:
            # The main thread blocks in waitpid (no polling delay in the timing); this
            # thread enforces the deadline and the output cap.
            while not finished.wait(0.2):
                if time.monotonic() - started > timeout_s:
                    verdict["timed_out"] = True
                elif out.tell() > MAX_OUTPUT_BYTES or err.tell() > MAX_OUTPUT_BYTES:
                    verdict["truncated"] = True
                else:
                    continue
                _kill_group(proc)
                return

        guard = threading.Thread(target=watchdog, daemon=True)
        guard.start()
        cpu_s = None
        try:
            cpu_s = _wait(proc)
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            finished.set()
            guard.join()
        wall = time.monotonic() - started
        # Children that outlived the leader (rare) go too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        timed_out, truncated = verdict["timed_out"], verdict["truncated"]
    return ProcessResult(argv, None if timed_out else proc.returncode, timed_out, wall,
                         stdout_path, stderr_path, truncated, cpu_s)


def _wait(proc: subprocess.Popen) -> float | None:
    """Wait for ``proc`` with wait4, which also returns its resource use: the CPU time it got
    is a figure a neighbour cannot inflate, beside the wall time it can (bench/README.md)."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:           # reaped elsewhere: the exit code still comes from Popen
        proc.wait()
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return round(usage.ru_utime + usage.ru_stime, 4)
