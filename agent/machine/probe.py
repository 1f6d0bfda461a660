"""This machine's hardware profile: the readers' facts (agent.machine.readers) put into the
schema (agent.machine.profile), named by a hardware class, with the HWMATRIX_PROFILE
override (agent.machine.override) applied.
"""
from __future__ import annotations

import os
import platform
import socket
from typing import Any

from agent.machine import readers
from agent.machine.hwclass import hardware_class
from agent.machine.override import PROFILE_ENV, apply_profile_override
from agent.machine.profile import CpuInfo, HardwareProfile, MemoryInfo, OsInfo, Toolchain
from agent.machine.uarch import cpu_uarch, isa_flags, product_line


def probe() -> HardwareProfile:
    """This machine's profile, with the HWMATRIX_PROFILE override applied when set.

    Raises ProfileError (message names the file) when the override cannot be used.
    """
    profile = HardwareProfile(
        hostname=socket.gethostname(),
        cpu=probe_cpu(),
        memory=MemoryInfo(ram_gb=readers.ram_gb()),
        gpus=readers.probe_gpus(),
        os=probe_os(),
        toolchain=probe_toolchain(),
    )
    profile = profile.model_copy(update={"hardware_class": hardware_class(profile)})
    override = os.environ.get(PROFILE_ENV)
    if override:
        profile = apply_profile_override(profile, override)
    return profile


def probe_cpu() -> CpuInfo:
    raw = readers.cpuinfo_raw()
    vendor = readers.cpu_vendor(str(raw.get("vendor_id_raw", "")))
    brand = " ".join(str(raw.get("brand_raw", "")).split())
    family, model, stepping = (_as_int(raw.get(k)) for k in ("family", "model", "stepping"))
    cores, threads, sockets = readers.cpu_topology()
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
        numa_nodes=readers.numa_node_count(),
        caches=readers.cpu_caches(),
        flags=isa_flags(list(raw.get("flags") or [])),
    )


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def probe_os() -> OsInfo:
    return OsInfo(
        system=platform.system(),
        distro=readers.os_release(),
        kernel=platform.release() or None,
        governor=readers.cpu_governor(),
        boost=readers.cpu_boost(),
        thp=readers.transparent_hugepages(),
    )


def probe_toolchain() -> Toolchain:
    return Toolchain(
        gcc=readers.gcc_version(),
        cmake=readers.cmake_version(),
        ccache=readers.ccache_version(),
    )
