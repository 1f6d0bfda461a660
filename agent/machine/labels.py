"""The profile as Ray node labels: what a placement's `label_selector` matches on."""
from __future__ import annotations

import re
from typing import Any

from agent.machine.profile import HardwareProfile


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
