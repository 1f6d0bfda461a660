"""The hardware profile's schema: what an agent advertises and every result carries.

Unknown keys are ignored, so a coordinator reads profiles from newer agents; an override
file is checked key by key instead (agent.machine.override), where a typo must not pass.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class ProfileError(ValueError):
    """A profile override file that cannot be used; the message names the file and the fault."""


class _Model(BaseModel):
    # unknown keys pass: profiles from newer agents stay readable (see the module docstring)
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
