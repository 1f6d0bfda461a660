"""Every environment fact, read one way: /sys, /proc, /etc/os-release, NVML and the tools'
--version lines (pyperf's `_collect_metadata.py` style: one function per fact, named for
what it reads). The profile (agent.machine.probe), the hygiene facts of each record
(agent.machine.hygiene) and the build key (agent.engine.build) all read through here.

Every source may be missing (containers, VMs, no NVIDIA driver, non-Linux): a missing fact
becomes None or a safe default, never an exception.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from agent.machine.profile import GpuDevice, GpuInfo

# Roots of the pseudo-filesystems read below; module globals so tests can point them at
# a fake (or empty) tree.
SYS = Path("/sys")
PROC = Path("/proc")
OS_RELEASE = Path("/etc/os-release")


# ---------------------------------------------------------------- small readers

def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except (OSError, ValueError):
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _cpu_dirs() -> list[Path]:
    base = SYS / "devices/system/cpu"
    try:
        return sorted(p for p in base.iterdir() if re.fullmatch(r"cpu\d+", p.name))
    except OSError:
        return []


# ---------------------------------------------------------------- CPU

_CPUINFO: dict | None = None


def cpuinfo_raw() -> dict:
    """py-cpuinfo's answer, fetched once per process: each call sleeps about a second."""
    global _CPUINFO
    if _CPUINFO is None:
        try:
            import cpuinfo
            _CPUINFO = dict(cpuinfo.get_cpu_info())
        except Exception:  # py-cpuinfo fails on some exotic platforms; /proc still answers
            _CPUINFO = {}
        if not _CPUINFO.get("brand_raw"):
            _CPUINFO = {**proc_cpuinfo(), **{k: v for k, v in _CPUINFO.items() if v}}
    return _CPUINFO


def cpuinfo_fields() -> dict[str, str] | None:
    """The first processor block of /proc/cpuinfo as written there (None: unreadable)."""
    text = _read_text(PROC / "cpuinfo")
    if text is None:
        return None
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def proc_cpuinfo() -> dict:
    """The first processor block of /proc/cpuinfo, in py-cpuinfo's key names (fallback)."""
    fields = cpuinfo_fields() or {}
    out: dict[str, Any] = {}
    if "model name" in fields:
        out["brand_raw"] = fields["model name"]
    if "vendor_id" in fields:
        out["vendor_id_raw"] = fields["vendor_id"]
    for ours, theirs in (("family", "cpu family"), ("model", "model"), ("stepping", "stepping")):
        try:
            out[ours] = int(fields[theirs])
        except (KeyError, ValueError):
            pass
    if "flags" in fields:
        out["flags"] = fields["flags"].split()
    return out


def cpu_vendor(vendor_id_raw: str) -> str:
    """'AMD' / 'Intel' for the CPUID vendor strings, the raw string otherwise."""
    raw = (vendor_id_raw or "").strip()
    if raw == "AuthenticAMD":
        return "AMD"
    if raw == "GenuineIntel":
        return "Intel"
    return raw or "unknown"


def cpu_caches() -> dict[str, int]:
    """Per-instance cache sizes in KiB from cpu0's sysfs cache index (py-cpuinfo's are wrong)."""
    caches: dict[str, int] = {}
    base = SYS / "devices/system/cpu/cpu0/cache"
    try:
        indexes = sorted(p for p in base.iterdir() if p.name.startswith("index"))
    except OSError:
        return caches
    for index in indexes:
        level = _read_text(index / "level")
        kind = (_read_text(index / "type") or "").lower()
        size = _parse_size_kb(_read_text(index / "size"))
        if not level or size is None:
            continue
        suffix = {"data": "d", "instruction": "i"}.get(kind, "")
        caches[f"l{level}{suffix}_kb"] = size
    return caches


def _parse_size_kb(text: str | None) -> int | None:
    match = re.fullmatch(r"(\d+)\s*([KMG]?)B?", (text or "").strip(), re.I)
    if not match:
        return None
    scale = {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024 * 1024}[match.group(2).upper()]
    return int(int(match.group(1)) * scale)


def cpu_topology() -> tuple[int, int, int]:
    """(cores, threads, sockets) of the online CPUs, from /sys topology; os.cpu_count() otherwise."""
    packages: set[int] = set()
    cores: set[tuple[int, int, int]] = set()
    threads = 0
    for cpu in _cpu_dirs():
        topo = cpu / "topology"
        package = _read_int(topo / "physical_package_id")
        core = _read_int(topo / "core_id")
        if package is None or core is None:     # offline CPUs have no topology
            continue
        threads += 1
        packages.add(package)
        cores.add((package, _read_int(topo / "die_id") or 0, core))
    if threads == 0:
        count = os.cpu_count() or 1
        return count, count, 1
    return len(cores), threads, max(1, len(packages))


def numa_node_count() -> int:
    try:
        nodes = [p for p in (SYS / "devices/system/node").iterdir() if re.fullmatch(r"node\d+", p.name)]
    except OSError:
        return 1
    return max(1, len(nodes))



# ---------------------------------------------------------------- memory

def ram_gb() -> float:
    """MemTotal in GiB (one decimal); sysconf when /proc/meminfo is absent; 0.0 if neither."""
    text = _read_text(PROC / "meminfo") or ""
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.M)
    if match:
        return round(int(match.group(1)) / 1024 / 1024, 1)
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return 0.0


# ---------------------------------------------------------------- GPUs

def _nvml_reason(exc: BaseException) -> str:
    """A person's explanation for an NVML failure."""
    name = type(exc).__name__
    reasons = {
        "NVMLError_LibraryNotFound": "no NVIDIA driver (libnvidia-ml.so not found)",
        "NVMLError_DriverNotLoaded": "NVIDIA driver installed but not loaded",
        "NVMLError_NoPermission": "no permission to query the NVIDIA driver",
        "NVMLError_LibRmVersionMismatch":
            "NVIDIA driver and libnvidia-ml.so versions differ (reload the driver or reboot)",
        "NVMLError_GpuIsLost": "an NVIDIA GPU fell off the bus (GPU is lost)",
    }
    return reasons.get(name, f"NVML error: {exc}")


def _nvml_optional(call, *args):
    """One device attribute; drivers and boards legitimately lack some (NotSupported)."""
    import pynvml
    try:
        return call(*args)
    except pynvml.NVMLError:
        return None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def probe_gpus() -> GpuInfo:
    """NVIDIA GPUs through NVML; on any NVML failure count is 0 and `error` says why."""
    try:
        import pynvml
    except ImportError:
        return GpuInfo(error="nvidia-ml-py (pynvml) is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return GpuInfo(error=_nvml_reason(exc))
    except OSError as exc:
        return GpuInfo(error=f"NVML could not be loaded: {exc}")
    try:
        driver = _nvml_optional(pynvml.nvmlSystemGetDriverVersion)
        driver = _text(driver) if driver is not None else None
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = _nvml_optional(pynvml.nvmlDeviceGetMemoryInfo, handle)
            cc = _nvml_optional(pynvml.nvmlDeviceGetCudaComputeCapability, handle)
            power_mw = _nvml_optional(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            devices.append(GpuDevice(
                index=index,
                name=_text(pynvml.nvmlDeviceGetName(handle)),
                vram_mb=int(memory.total) // 2**20 if memory is not None else None,
                driver=driver,
                compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
                pcie_gen=_nvml_optional(pynvml.nvmlDeviceGetMaxPcieLinkGeneration, handle),
                pcie_width=_nvml_optional(pynvml.nvmlDeviceGetMaxPcieLinkWidth, handle),
                power_limit_w=round(power_mw / 1000, 1) if power_mw is not None else None,
            ))
        return GpuInfo(count=len(devices), devices=devices)
    except pynvml.NVMLError as exc:
        return GpuInfo(error=_nvml_reason(exc))
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


# ---------------------------------------------------------------- OS, governor, boost, THP, toolchain

def os_release() -> str | None:
    """PRETTY_NAME from /etc/os-release, else NAME + VERSION_ID."""
    fields: dict[str, str] = {}
    for line in (_read_text(OS_RELEASE) or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"').strip("'")
    if fields.get("PRETTY_NAME"):
        return fields["PRETTY_NAME"]
    name = " ".join(v for v in (fields.get("NAME"), fields.get("VERSION_ID")) if v)
    return name or None


def cpu_governor() -> str | None:
    return _read_text(SYS / "devices/system/cpu/cpu0/cpufreq/scaling_governor") or None


def cpu_boost() -> bool | None:
    """Whether turbo/boost is on; None when the kernel exposes no switch (VMs, containers)."""
    cpu = SYS / "devices/system/cpu"
    for path in (cpu / "cpufreq/boost", cpu / "cpu0/cpufreq/boost"):
        value = _read_int(path)
        if value is not None:
            return value == 1
    no_turbo = _read_int(cpu / "intel_pstate/no_turbo")
    if no_turbo is not None:
        return no_turbo == 0
    return None


def transparent_hugepages() -> str | None:
    """The bracketed (active) THP mode, e.g. 'madvise'."""
    text = _read_text(SYS / "kernel/mm/transparent_hugepage/enabled") or ""
    match = re.search(r"\[(\w+)\]", text)
    return match.group(1) if match else None


def tool_version(argv: list[str]) -> str | None:
    """First line of `argv` (a --version call); None when the tool is missing or fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def compiler_version() -> str | None:
    """`c++`, the compiler cmake builds the engines with: part of every BuildKey."""
    return tool_version(["c++", "--version"])


def gcc_version() -> str | None:
    """`gcc`, as the profile has always reported it (its `toolchain.gcc`)."""
    return tool_version(["gcc", "--version"])


def cmake_version() -> str | None:
    return tool_version(["cmake", "--version"])


def ccache_version() -> str | None:
    return tool_version(["ccache", "--version"])
