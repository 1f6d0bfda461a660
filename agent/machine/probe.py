"""The machine's hardware profile: every fact an agent advertises and every result carries.

All facts are gathered here, each by a function named for what it reads (pyperf's
`_collect_metadata.py` style). Every source may be missing (containers, VMs, no NVIDIA
driver, non-Linux): a missing fact becomes None or a safe default, never an exception.

Override for tests and operations: when the environment variable `HWMATRIX_PROFILE` names
a JSON or YAML file, its content is deep-merged over the probed profile (mappings merge
key by key, lists and scalars replace), and `hardware_class` is recomputed unless the file
sets it. A file that gives `gpus.devices` without `gpus.count` gets the count from the list.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import re
import socket
import subprocess
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.machine.uarch import cpu_uarch, isa_flags, product_line

SCHEMA_VERSION = 1
PROFILE_ENV = "HWMATRIX_PROFILE"

# Roots of the pseudo-filesystems read below; module globals so tests can point them at
# a fake (or empty) tree.
SYS = Path("/sys")
PROC = Path("/proc")
OS_RELEASE = Path("/etc/os-release")


class ProfileError(ValueError):
    """A profile override file that cannot be used; the message names the file and the fault."""


class _Model(BaseModel):
    # Ignore unknown keys so a coordinator can read profiles from newer agents; override
    # files are checked key by key instead (_check_keys), where a typo must not pass.
    model_config = ConfigDict(extra="ignore")


class CpuInfo(_Model):
    brand: str = ""
    vendor: str = "unknown"
    family: int | None = None
    model: int | None = None
    stepping: int | None = None
    uarch: str | None = None
    line: str | None = None
    cores: int = 1
    threads: int = 1
    sockets: int = 1
    numa_nodes: int = 1
    caches: dict[str, int] = Field(default_factory=dict)   # l1d_kb, l1i_kb, l2_kb, l3_kb per instance
    flags: list[str] = Field(default_factory=list)          # the isa_flags() subset


class MemoryInfo(_Model):
    ram_gb: float = 0.0     # GiB of MemTotal (what the kernel can use, e.g. 62.7 on a 64 GB box)


class GpuDevice(_Model):
    index: int
    name: str
    vram_mb: int | None = None
    driver: str | None = None
    compute_capability: str | None = None   # "8.6"
    pcie_gen: int | None = None             # max link generation (current drops when idle)
    pcie_width: int | None = None
    power_limit_w: float | None = None


class GpuInfo(_Model):
    count: int = 0
    devices: list[GpuDevice] = Field(default_factory=list)
    error: str | None = None    # why no GPU could be listed, in words


class OsInfo(_Model):
    system: str = ""
    distro: str | None = None
    kernel: str | None = None
    governor: str | None = None
    boost: bool | None = None
    thp: str | None = None


class Toolchain(_Model):
    gcc: str | None = None
    cmake: str | None = None
    ccache: str | None = None


class HardwareProfile(_Model):
    schema_version: int = SCHEMA_VERSION
    hostname: str = ""
    cpu: CpuInfo = Field(default_factory=CpuInfo)
    memory: MemoryInfo = Field(default_factory=MemoryInfo)
    gpus: GpuInfo = Field(default_factory=GpuInfo)
    os: OsInfo = Field(default_factory=OsInfo)
    toolchain: Toolchain = Field(default_factory=Toolchain)
    hardware_class: str = ""


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


def proc_cpuinfo() -> dict:
    """The first processor block of /proc/cpuinfo, in py-cpuinfo's key names (fallback)."""
    text = _read_text(PROC / "cpuinfo") or ""
    block = text.split("\n\n", 1)[0]
    fields: dict[str, str] = {}
    for line in block.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
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


def probe_cpu() -> CpuInfo:
    raw = cpuinfo_raw()
    vendor = cpu_vendor(str(raw.get("vendor_id_raw", "")))
    brand = " ".join(str(raw.get("brand_raw", "")).split())
    family, model, stepping = (_as_int(raw.get(k)) for k in ("family", "model", "stepping"))
    cores, threads, sockets = cpu_topology()
    return CpuInfo(
        brand=brand,
        vendor=vendor,
        family=family,
        model=model,
        stepping=stepping,
        uarch=cpu_uarch(vendor, family, model, stepping),
        line=product_line(vendor, brand),
        cores=cores,
        threads=threads,
        sockets=sockets,
        numa_nodes=numa_node_count(),
        caches=cpu_caches(),
        flags=isa_flags(list(raw.get("flags") or [])),
    )


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


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


# ---------------------------------------------------------------- OS and toolchain

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


def probe_os() -> OsInfo:
    return OsInfo(
        system=platform.system(),
        distro=os_release(),
        kernel=platform.release() or None,
        governor=cpu_governor(),
        boost=cpu_boost(),
        thp=transparent_hugepages(),
    )


def probe_toolchain() -> Toolchain:
    return Toolchain(
        gcc=tool_version(["gcc", "--version"]),
        cmake=tool_version(["cmake", "--version"]),
        ccache=tool_version(["ccache", "--version"]),
    )


# ---------------------------------------------------------------- profile

def probe() -> HardwareProfile:
    """This machine's profile, with the HWMATRIX_PROFILE override applied when set.

    Raises ProfileError (message names the file) when the override cannot be used.
    """
    profile = HardwareProfile(
        hostname=socket.gethostname(),
        cpu=probe_cpu(),
        memory=MemoryInfo(ram_gb=ram_gb()),
        gpus=probe_gpus(),
        os=probe_os(),
        toolchain=probe_toolchain(),
    )
    profile = profile.model_copy(update={"hardware_class": hardware_class(profile)})
    override = os.environ.get(PROFILE_ENV)
    if override:
        profile = apply_profile_override(profile, override)
    return profile


def hardware_class(profile: HardwareProfile) -> str:
    """12 hex chars of sha256 over the reboot-stable facts that make two boxes 'the same'.

    The subset, and nothing else: the CPU brand string (whitespace collapsed), the socket
    count, RAM rounded to the nearest 8 GB (62.7 and 64 are one class), and the GPU count
    with the sorted GPU names. Hostname, kernel, driver, governor, toolchain and the like
    are deliberately left out: they change without the hardware changing.
    """
    subset = {
        "cpu_brand": " ".join(profile.cpu.brand.split()),
        "sockets": profile.cpu.sockets,
        "ram_gb_nearest_8": int(math.floor(profile.memory.ram_gb / 8 + 0.5)) * 8,
        "gpu_count": profile.gpus.count,
        "gpu_names": sorted(d.name for d in profile.gpus.devices),
    }
    blob = json.dumps(subset, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# ---------------------------------------------------------------- override

def load_profile_override(path: str | os.PathLike) -> dict:
    """The override file as a mapping (JSON for *.json, YAML otherwise); ProfileError if unusable."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ProfileError(f"{path}: profile override file does not exist ({PROFILE_ENV})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read profile override: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ProfileError(f"{path}{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile override must be a mapping, not {type(data).__name__}")
    _check_keys(path, data, HardwareProfile, "")
    return data


def _check_keys(path: Path, data: dict, model: type[BaseModel], prefix: str) -> None:
    """Name unknown keys early, so a typo in an override is not silently ignored."""
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            known = ", ".join(model.model_fields)
            raise ProfileError(f"{path}: unknown key '{prefix}{key}' (known here: {known})")
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(value, dict):
            _check_keys(path, value, sub, f"{prefix}{key}.")
        item = (get_args(sub) or (None,))[0] if get_origin(sub) is list else None
        if isinstance(item, type) and issubclass(item, BaseModel) and isinstance(value, list):
            for i, entry in enumerate(value):
                if isinstance(entry, dict):
                    _check_keys(path, entry, item, f"{prefix}{key}[{i}].")


def _deep_merge(base: dict, over: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_profile_override(profile: HardwareProfile, path: str | os.PathLike) -> HardwareProfile:
    """`profile` with the file's content merged over it (see the module docstring)."""
    over = load_profile_override(path)
    gpus = over.get("gpus")
    if isinstance(gpus, dict) and isinstance(gpus.get("devices"), list):
        gpus = dict(gpus)
        gpus.setdefault("count", len(gpus["devices"]))
        if gpus["devices"]:
            gpus.setdefault("error", None)
        over = {**over, "gpus": gpus}
    merged = _deep_merge(profile.model_dump(mode="json"), over)
    try:
        result = HardwareProfile.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ProfileError(f"{path}: invalid profile override: {problems}") from None
    if "hardware_class" not in over:
        result = result.model_copy(update={"hardware_class": hardware_class(result)})
    return result


# ---------------------------------------------------------------- labels

_LABEL_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def slugify_label(value: Any, default: str = "none") -> str:
    """A Ray label value: [A-Za-z0-9._-], at most 63 chars, alphanumeric at both ends."""
    text = _LABEL_BAD.sub("-", str(value if value is not None else "")).strip("._-")
    text = text[:63].rstrip("._-")
    return text or default


def profile_labels(profile: HardwareProfile) -> dict[str, str]:
    """The profile as Ray node labels (what `label_selector` matches on); one 'hwm-<flag>'=1 per ISA flag."""
    cpu, gpus = profile.cpu, profile.gpus
    labels = {
        "hwm-class": slugify_label(profile.hardware_class),
        "hwm-uarch": slugify_label(cpu.uarch, "unknown"),
        "hwm-line": slugify_label(cpu.line, "unknown"),
        "hwm-vendor": slugify_label(cpu.vendor, "unknown"),
        "hwm-gpus": str(gpus.count),
        "hwm-gpu-name": slugify_label(gpus.devices[0].name if gpus.devices else None),
        "hwm-ram-gb": str(int(round(profile.memory.ram_gb))),
        "hwm-cores": str(cpu.cores),
        "hwm-host": slugify_label(profile.hostname, "unknown"),
    }
    for flag in cpu.flags:
        labels[slugify_label(f"hwm-{flag}")] = "1"
    return labels


# ---------------------------------------------------------------- output

def format_profile(profile: HardwareProfile, fmt: Literal["json", "yaml", "table"] = "json") -> str:
    """The profile as JSON (indent 2), YAML, or a two-column table for a terminal."""
    if fmt == "json":
        return json.dumps(profile.model_dump(mode="json"), indent=2)
    if fmt == "yaml":
        return yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False)
    if fmt == "table":
        from tabulate import tabulate
        return tabulate(_table_rows(profile), headers=["fact", "value"], tablefmt="simple")
    raise ValueError(f"unknown profile format {fmt!r} (use json, yaml or table)")


def _kib(size_kb: int) -> str:
    return f"{size_kb // 1024} MiB" if size_kb >= 1024 and size_kb % 1024 == 0 else f"{size_kb} KiB"


def _table_rows(p: HardwareProfile) -> list[tuple[str, str]]:
    def show(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "on" if value else "off"
        return str(value)

    cpu = p.cpu
    ident = f"family {show(cpu.family)} model {show(cpu.model)} stepping {show(cpu.stepping)}"
    if cpu.family is not None and cpu.model is not None:
        ident = f"family 0x{cpu.family:X} model 0x{cpu.model:X} stepping {show(cpu.stepping)}"
    caches = ", ".join(f"{k.removesuffix('_kb').upper()} {_kib(v)}" for k, v in cpu.caches.items())
    rows = [
        ("host", p.hostname),
        ("hardware class", p.hardware_class),
        ("cpu", f"{cpu.brand} ({cpu.vendor})"),
        ("cpu id", ident),
        ("uarch / line", f"{show(cpu.uarch)} / {show(cpu.line)}"),
        ("cores / threads", f"{cpu.cores} / {cpu.threads}"),
        ("sockets / numa nodes", f"{cpu.sockets} / {cpu.numa_nodes}"),
        ("caches", caches or "-"),
        ("isa flags", " ".join(cpu.flags) or "-"),
        ("ram", f"{p.memory.ram_gb} GiB"),
    ]
    if p.gpus.count == 0:
        rows.append(("gpus", f"none: {p.gpus.error}" if p.gpus.error else "none"))
    for d in p.gpus.devices:
        rows.append((f"gpu {d.index}", (
            f"{d.name}, {show(d.vram_mb)} MiB, cc {show(d.compute_capability)}, "
            f"PCIe gen {show(d.pcie_gen)} x{show(d.pcie_width)}, {show(d.power_limit_w)} W, "
            f"driver {show(d.driver)}")))
    rows += [
        ("os", f"{p.os.system} {show(p.os.distro)}"),
        ("kernel", show(p.os.kernel)),
        ("governor / boost", f"{show(p.os.governor)} / {show(p.os.boost)}"),
        ("transparent hugepages", show(p.os.thp)),
        ("gcc", show(p.toolchain.gcc)),
        ("cmake", show(p.toolchain.cmake)),
        ("ccache", show(p.toolchain.ccache)),
    ]
    return rows
