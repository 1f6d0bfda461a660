"""The hardware class: which machines count as "the same box", so a cell measured on one
is not measured again on another of its class.
"""
from __future__ import annotations

import hashlib
import json
import math

from agent.machine.profile import HardwareProfile


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
