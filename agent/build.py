"""Build cache: one cmake build per BuildKey, built once, reused by every later cell.

The key is (repo, commit, cmake flags, compiler, cmake version, and the CPU's ISA when
GGML_NATIVE is on), because -march=native binaries are not portable between CPUs.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agent.paths import cache_dir
from agent.sources import ResolvedSource, cache_lock, export_tree

# Keep builds offline and small; mainline reads LLAMA_BUILD_APP/OPENSSL only in newer trees.
OFFLINE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
]


class BuildError(RuntimeError):
    def __init__(self, message: str, log_path: Path | None = None):
        super().__init__(message)
        self.log_path = log_path


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def toolchain_versions() -> dict:
    return {"compiler": _first_line(["c++", "--version"]), "cmake": _first_line(["cmake", "--version"]),
            "ccache": _first_line(["ccache", "--version"]) if shutil.which("ccache") else None}


def native_isa() -> str:
    """What -march=native sees: the CPU model and its full flag list, as one short digest."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    first = text.split("\n\n", 1)[0]
    wanted = [line.split(":", 1)[1].strip() for line in first.splitlines()
              if line.split(":", 1)[0].strip() in ("vendor_id", "cpu family", "model", "flags")]
    return hashlib.sha256("|".join(wanted).encode()).hexdigest()[:16]


def native_enabled(cmake_flags: list[str]) -> bool:
    for flag in cmake_flags:
        name, _, value = flag[2:].partition("=")
        if name.split(":")[0] == "GGML_NATIVE":
            return value.upper() in ("ON", "1", "TRUE", "YES")
    return True   # ggml's default when not cross-compiling


@dataclass(frozen=True)
class BuildKey:
    repo_id: str
    commit: str
    cmake_flags: tuple[str, ...]
    compiler: str | None
    cmake: str | None
    isa: str | None          # the ISA flags the binary was tuned for (GGML_NATIVE), else None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]


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

    def bin(self, target: str) -> Path:
        return Path(self.binaries[target])


def make_key(resolved: ResolvedSource, cmake_flags: list[str]) -> BuildKey:
    tools = toolchain_versions()
    isa = native_isa() if native_enabled(cmake_flags) else None
    return BuildKey(resolved.repo_id, resolved.commit, tuple(cmake_flags), tools["compiler"], tools["cmake"], isa)


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


def _needs_examples(src: Path, targets: list[str]) -> bool:
    """ik (and mainline before mid-2025) keep the benchmark tools under examples/."""
    names = {"llama-bench": "llama-bench", "llama-quantize": "quantize", "llama-sweep-bench": "sweep-bench"}
    return any((src / "examples" / names.get(t, t)).is_dir() for t in targets)


def build(resolved: ResolvedSource, cmake_flags: list[str], targets: list[str], jobs: int | None = None, timeout_s: float = 7200) -> BuildResult:
    """Build ``targets`` at ``resolved``; free when the key was built before with those targets."""
    key = make_key(resolved, cmake_flags)
    root = cache_dir("builds") / key.digest()
    state_file = root / "build.json"
    log_path = root / "build.log"
    with cache_lock(root.with_suffix(".lock")):
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            if set(targets) <= set(state["targets"]) and all(Path(p).is_file() for p in state["binaries"].values()):
                return BuildResult(key, root / "build", state["binaries"], state["binary_hash"], log_path,
                                   state.get("seconds", 0.0), True, state["targets"])
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
        flags += list(cmake_flags)
        env = dict(os.environ)
        # Same relative paths in every build dir and one ccache per ISA: warm hits across commits.
        env["CCACHE_BASEDIR"] = str(cache_dir("builds"))
        env["CCACHE_DIR"] = str(cache_dir("ccache", key.isa or "portable"))
        env.setdefault("CCACHE_MAXSIZE", "5G")
        jobs = jobs or os.cpu_count() or 2
        steps = [
            ["cmake", "-S", str(src), "-B", str(build_dir), *flags],
            ["cmake", "--build", str(build_dir), "--config", "Release", "-j", str(jobs), "--target", *targets],
        ]
        deadline = started + timeout_s
        with open(log_path, "a") as log:
            for argv in steps:
                log.write(f"$ {' '.join(argv)}\n")
                log.flush()
                try:
                    proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise BuildError(f"build timed out after {timeout_s:.0f} s", log_path)
                if proc.returncode != 0:
                    raise BuildError(f"{argv[0]} {argv[1]} exited with {proc.returncode} "
                                     f"(see {log_path.name})", log_path)
        bin_dir = build_dir / "bin"
        binaries, hashes = {}, {}
        for target in targets:
            path = bin_dir / target
            if not path.is_file():
                raise BuildError(f"target {target} built but {path} is missing", log_path)
            binaries[target] = str(path)
            hashes[target] = _hash_binary(bin_dir, target)
        seconds = time.monotonic() - started
        if state_file.is_file():          # an incremental build for more targets: keep the total
            seconds += json.loads(state_file.read_text()).get("seconds", 0.0)
        state_file.write_text(json.dumps({"key": asdict(key), "targets": targets, "binaries": binaries,
                                          "binary_hash": hashes, "seconds": seconds}, indent=2))
        return BuildResult(key, build_dir, binaries, hashes, log_path, seconds, False, targets)
