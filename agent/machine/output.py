"""The profile as `hwmatrix probe` prints it: JSON, YAML or a table for a terminal."""
from __future__ import annotations

import json
from typing import Any, Literal

import yaml

from agent.machine.profile import HardwareProfile


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
