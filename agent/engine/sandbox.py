"""A bubblewrap sandbox for building and running code we do not trust (volunteer mode).

Inside: no network (a fresh network namespace), no capabilities, a read-only system
(/usr and friends, a short list of harmless /etc files), a private /tmp, and only the
directories a step needs, bound at their own absolute paths (cmake caches absolute
paths). The owner's home, /root, /home, /etc/shadow and the like are not bound at all,
because a build log or an engine's output is uploaded: whatever the code can read, it
could publish. For the same reason every step starts from an empty environment
(bwrap's --clearenv) plus a short allowlist (``ENV_FIXED``, ``ENV_PASSED``): a token in the
agent's environment never reaches the code.

``with confined():`` turns it on for the build, quantize and engine steps that run in this
context (agent/engine/build.py, agent/engine/models.py, agent/engine/runner.py); nothing runs bare while it is
on, and entering it fails with a user-facing message when the machine cannot sandbox.
"""
from __future__ import annotations

import contextvars
import glob
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`, Fedora: `dnf install "
                "bubblewrap`) or name its binary in HWMATRIX_BWRAP")
# The system, read-only. Merged-/usr distributions make /bin, /lib ... symlinks into /usr.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Only what toolchains and engines read from /etc: Debian's c++ is /etc/alternatives/c++.
# Not the whole of /etc: as root, /etc/shadow or TLS keys would be readable, and logs leave.
ETC_ENTRIES = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone",
               "passwd", "group", "nsswitch.conf", "os-release", "lsb-release", "ccache.conf", "gitconfig")
# Tools a build step runs besides argv[0]; one installed outside the system dirs is bound.
BUILD_TOOLS = ("cmake", "ccache", "c++", "cc", "g++", "gcc", "clang", "clang++", "git", "make", "ninja", "nvcc")
# GPU device nodes an engine needs when the machine has them (the minimal --dev has none).
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri", "/dev/kfd")
# The whole environment inside, besides PATH: set to these values whatever the caller has...
ENV_FIXED = {"HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C", "LC_ALL": "C"}
# ...and only these are taken from the env the caller passes: a build's ccache and nvcc,
# an engine's GPUs and the loader path a CUDA install may need. Nothing else gets in.
ENV_PASSED = ("CCACHE_DIR", "CCACHE_BASEDIR", "CCACHE_REMOTE_STORAGE", "CCACHE_MAXSIZE", "CUDACXX",
              "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH")
# PATH inside: the system's, after the dirs of build tools installed outside it (_tool_dirs).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("hwmatrix_sandbox", default=False)
_PROBLEMS: dict[str, str | None] = {}


class SandboxUnavailable(RuntimeError):
    """This machine cannot sandbox untrusted code, so it must not run any."""


def bwrap_path() -> str | None:
    """The bwrap binary: HWMATRIX_BWRAP (a path or a name on PATH), else bwrap on PATH."""
    name = os.environ.get("HWMATRIX_BWRAP") or "bwrap"
    if "/" in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(name)


def _namespace_options() -> list[str]:
    return ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]


def problem() -> str | None:
    """Why a sandbox cannot be used here (None: it can). A trial run with the same namespace
    options catches kernels that forbid user namespaces, not just a missing binary.
    Cached per binary path: the answer does not change while the agent runs."""
    binary = bwrap_path()
    if binary is None:
        wanted = os.environ.get("HWMATRIX_BWRAP")
        where = f"HWMATRIX_BWRAP={wanted} is not an executable" if wanted else "bwrap is not on PATH"
        return (f"untrusted code runs only inside a bubblewrap sandbox, and {where}: {INSTALL_HINT}")
    if binary not in _PROBLEMS:
        argv = [binary, *_namespace_options(), *_system_binds(), "--proc", "/proc", "--dev", "/dev",
                "--", "true"]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            failed = None if proc.returncode == 0 else (proc.stderr.strip() or f"exit code {proc.returncode}")
        except (OSError, subprocess.SubprocessError) as exc:
            failed = str(exc)
        _PROBLEMS[binary] = None if failed is None else (
            f"bubblewrap ({binary}) cannot create a sandbox on this machine: {failed}. Unprivileged user "
            "namespaces are probably disabled: enable them (sysctl kernel.unprivileged_userns_clone=1; on "
            "Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap), "
            "or use a setuid bwrap from the distribution's bubblewrap package")
    return _PROBLEMS[binary]


def active() -> bool:
    """Whether the steps running in this context must be sandboxed."""
    return _ACTIVE.get()


@contextmanager
def confined() -> Iterator[None]:
    """Sandbox every build, quantize and engine process started in this context.
    Raises SandboxUnavailable up front rather than let anything run bare."""
    reason = problem()
    if reason:
        raise SandboxUnavailable(reason)
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _system_binds() -> list[str]:
    args: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in ETC_ENTRIES:
        path = f"/etc/{name}"
        if os.path.lexists(path):
            args += ["--ro-bind-try", path, path]
    return args


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _tool_folders(names: Iterable[str]) -> list[str]:
    """The directories of tools that resolve outside the system dirs (/opt/cmake/bin/cmake, a
    conda compiler), in the order of ``names``."""
    system = [os.path.realpath(d) for d in SYSTEM_DIRS if os.path.isdir(d)]
    folders: list[str] = []
    for name in names:
        found = shutil.which(name) if "/" not in name else (name if os.path.isfile(name) else None)
        if not found:
            continue
        for candidate in sorted({os.path.abspath(found), os.path.realpath(found)}):
            folder = os.path.dirname(candidate)
            if not _under(candidate, system) and folder not in folders:
                folders.append(folder)
    return folders


def _tool_dirs(names: Iterable[str]) -> list[str]:
    """What a tool outside the system dirs needs bound: its directory, and its prefix's
    lib/libexec/share when it lives in a bin/ that is not straight under the home or root."""
    home = os.path.realpath(os.path.expanduser("~"))
    dirs: list[str] = []
    for folder in _tool_folders(names):
        dirs.append(folder)
        prefix = os.path.dirname(folder)
        if os.path.basename(folder) == "bin" and prefix not in ("/", home):
            dirs += [os.path.join(prefix, sub) for sub in ("lib", "lib64", "libexec", "share")]
    return dirs


def _env_options(env: Mapping[str, str] | None) -> list[str]:
    """--clearenv, then --setenv for the allowlist only: PATH (the build tools' own dirs, then
    the system's), ENV_FIXED, and the ENV_PASSED names that ``env`` holds. bwrap applies it,
    so a caller that hands over its whole environment still leaks nothing."""
    path = ":".join([*_tool_folders(BUILD_TOOLS), SYSTEM_PATH])
    args = ["--clearenv", "--setenv", "PATH", path]
    for name, value in ENV_FIXED.items():
        args += ["--setenv", name, value]
    for name in ENV_PASSED:
        if env is not None and name in env:
            args += ["--setenv", name, env[name]]
    return args


def wrap(argv: list[str], writable: list[Path], readable: Iterable[Path] = (), cwd: Path | None = None,
         env: Mapping[str, str] | None = None) -> list[str]:
    """The bwrap command line that runs ``argv`` with only ``writable`` writable and
    ``readable`` read-only, each bound at its own absolute path, in the allowlisted
    environment (see _env_options; ``env`` is where the passed names are taken from).
    Raises SandboxUnavailable when there is no bwrap binary (callers turn that into a
    failed step, never a bare run)."""
    binary = bwrap_path()
    if binary is None:
        raise SandboxUnavailable(problem() or f"bubblewrap not found: {INSTALL_HINT}")
    args = [binary, *_namespace_options(), *_system_binds(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for pattern in GPU_DEVICES:
        for device in glob.glob(pattern):
            args += ["--dev-bind-try", device, device]
    if any(glob.glob(p) for p in GPU_DEVICES):
        args += ["--ro-bind-try", "/sys", "/sys"]       # NVML and the CUDA driver read it
    binds: list[tuple[int, int, str, str]] = []
    for order, (option, paths) in enumerate((
            ("--ro-bind-try", [*_tool_dirs([argv[0], *BUILD_TOOLS]), *map(str, readable)]),
            ("--bind", list(map(str, writable))))):
        for path in paths:
            path = os.path.abspath(path)
            binds.append((path.rstrip("/").count("/"), order, option, path))
    # parents before children, so a read-only file inside a writable dir stays read-only
    # (and the other way round); at the same path, writable wins.
    seen: set[tuple[str, str]] = set()
    for _, _, option, path in sorted(binds):
        if (option, path) not in seen:
            seen.add((option, path))
            args += [option, path, path]
    # the sandbox's own root (a tmpfs holding the mount points) read-only too: /tmp stays the
    # only scratch space besides ``writable``
    args += ["--remount-ro", "/", *_env_options(env), "--chdir", os.path.abspath(cwd) if cwd else "/", "--", *argv]
    return args
