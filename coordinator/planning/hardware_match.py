"""Does a probed machine meet a matrix's hardware spec, and if not, why not?

``plan`` prints the reason for every agent that does not match, so the reason is the first
unmet requirement in plain words ("needs gpu count >=2, has 0"), not a boolean.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from coordinator.matrix.ranges import Range
from coordinator.matrix.schema import HardwareSpec


def _vendor(raw: Any) -> str | None:
    text = str(raw or "").lower()
    if "amd" in text:
        return "AMD"
    if "intel" in text:
        return "Intel"
    return str(raw) if raw else None


def _num(v: Any) -> str:
    if v is None:
        return "unknown"
    return str(int(v)) if isinstance(v, float) and v == int(v) else str(v)


def _one_of(what: str, wanted: list[str], has: Any) -> str | None:
    if has is not None and str(has).lower() in (w.lower() for w in wanted):
        return None
    need = wanted[0] if len(wanted) == 1 else f"in [{', '.join(wanted)}]"
    return f"needs {what} {need}, has {has or 'unknown'}"


def _within(what: str, rng: Range | None, has: Any) -> str | None:
    if rng is None or rng.admits(has):
        return None
    return f"needs {what} {rng}, has {_num(has)}"


def _cpu(spec: HardwareSpec, cpu: dict) -> str | None:
    c = spec.cpu
    if c is None:
        return None
    if c.vendor and _vendor(cpu.get("vendor")) != c.vendor:
        return f"needs cpu vendor {c.vendor}, has {_vendor(cpu.get('vendor')) or 'unknown'}"
    for what, wanted, has in (("cpu uarch", c.uarch, cpu.get("uarch")), ("cpu line", c.line, cpu.get("line"))):
        if wanted and (reason := _one_of(what, wanted, has)):
            return reason
    brand = cpu.get("brand") or ""
    if c.model and not fnmatchcase(brand.lower(), c.model.lower()):
        return f"needs cpu model matching {c.model!r}, has {brand or 'unknown'!r}"
    for what, rng in (("cores", c.cores), ("threads", c.threads)):
        if reason := _within(f"cpu {what}", rng, cpu.get(what)):
            return reason
    if c.flags:
        have = {str(f).lower() for f in cpu.get("flags") or []}
        missing = [f for f in c.flags if f not in have]
        if missing:
            return f"needs cpu flags [{', '.join(c.flags)}], lacks {', '.join(missing)}"
    return None


def vram_gib(device: dict) -> float | None:
    """A GPU's memory as compared with ``vram_gb``: MiB / 1024, rounded (an 80 GB card reads 80)."""
    mb = device.get("vram_mb")
    return None if mb is None else float(round(mb / 1024))


def _gpu(spec: HardwareSpec, gpus: dict) -> str | None:
    g = spec.gpu
    if g is None:
        return None
    devices = list(gpus.get("devices") or [])
    note = f" (gpu probe: {gpus['error']})" if gpus.get("error") else ""
    if g.name is None and g.vram_gb is None:
        has = gpus.get("count")
        has = len(devices) if has is None else has
        reason = _within("gpu count", g.count, has)
        return reason + note if reason else None
    fits = [d for d in devices
            if (g.name is None or fnmatchcase(str(d.get("name", "")).lower(), g.name.lower()))
            and (g.vram_gb is None or g.vram_gb.admits(vram_gib(d)))]
    count = g.count or Range.parse(">=1")
    if count.admits(len(fits)):
        return None
    filters = []
    if g.name is not None:
        filters.append(f"name matching {g.name!r}")
    if g.vram_gb is not None:
        filters.append(f"vram_gb {g.vram_gb}")
    seen = ", ".join(f"{d.get('name', '?')} {_num(vram_gib(d))} GiB" for d in devices) or "none"
    return f"needs gpu count {count} with {' and '.join(filters)}, has {len(fits)} (gpus: {seen}){note}"


def matches(spec: HardwareSpec | dict | None, profile: dict) -> tuple[bool, str | None]:
    """(True, None) when ``profile`` meets ``spec``; else (False, the first unmet requirement).

    Checks run in a fixed order - cpu vendor, uarch, line, model, cores, threads, flags;
    gpu count/name/vram; ram_gb - so the reason is stable. Unknown profile values never match.
    """
    if spec is None:
        return True, None
    if isinstance(spec, dict):
        spec = HardwareSpec.model_validate(spec)
    reason = (_cpu(spec, profile.get("cpu") or {})
              or _gpu(spec, profile.get("gpus") or {})
              or _within("ram_gb", spec.ram_gb, (profile.get("memory") or {}).get("ram_gb")))
    return (reason is None), reason


def unmet(hardware: HardwareSpec | dict | None, gpus: int | None, profile: dict) -> str | None:
    """The first reason ``profile`` cannot run a cell that asks for ``hardware`` and ``gpus``
    GPUs, or None. The one fit rule: a local plan, a cluster placement and a volunteer lease
    all ask it, so a machine fits a cell in all three or in none."""
    ok, reason = matches(hardware, profile)
    if not ok:
        return reason
    listed = profile.get("gpus") or {}
    have = listed.get("count", 0) if isinstance(listed, dict) else None    # no GPU facts: none
    known = isinstance(have, int) and not isinstance(have, bool)
    if gpus and not (known and have >= gpus):      # an unknown count never fits, as in matches
        return f"needs {gpus} GPUs for gpus={gpus}, has {have if known else 'unknown'}"
    return None
