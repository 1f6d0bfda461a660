"""CPU identity -> the names matrices select on (microarchitecture, product line, ISA flags).

Pure functions with no I/O, so the tables can be checked against recorded CPUs on any
machine. AMD ranges follow Linux `arch/x86/kernel/cpu/amd.c`; Intel model numbers follow
Linux `arch/x86/include/asm/intel-family.h` (Haswell onward).
"""
from __future__ import annotations

import re

# (family, first model, last model, uarch); first match wins, so the zen+ singletons
# sit before the zen ranges that contain them.
_AMD_RANGES: list[tuple[int, int, int, str]] = [
    (0x17, 0x08, 0x08, "zen+"),
    (0x17, 0x18, 0x18, "zen+"),
    (0x17, 0x00, 0x2F, "zen"),
    (0x17, 0x50, 0x5F, "zen"),
    (0x17, 0x30, 0x4F, "zen2"),
    (0x17, 0x60, 0x7F, "zen2"),
    (0x17, 0x90, 0x91, "zen2"),
    (0x17, 0xA0, 0xAF, "zen2"),
    (0x19, 0x00, 0x0F, "zen3"),
    (0x19, 0x20, 0x5F, "zen3"),
    (0x19, 0x10, 0x1F, "zen4"),
    (0x19, 0x60, 0xAF, "zen4"),
    (0x1A, 0x00, 0x2F, "zen5"),
    (0x1A, 0x40, 0x4F, "zen5"),
    (0x1A, 0x60, 0x7F, "zen5"),
    (0x1A, 0x50, 0x5F, "zen6"),
    (0x1A, 0x80, 0xAF, "zen6"),
    (0x1A, 0xC0, 0xCF, "zen6"),
]

# Family 6 models whose uarch does not depend on stepping (0x55, 0x8E, 0x9E do).
_INTEL_FAM6: dict[int, str] = {
    0x3C: "haswell", 0x3F: "haswell", 0x45: "haswell", 0x46: "haswell",
    0x3D: "broadwell", 0x47: "broadwell", 0x4F: "broadwell", 0x56: "broadwell",
    0x4E: "skylake", 0x5E: "skylake",
    0xA5: "cometlake", 0xA6: "cometlake",
    0x66: "cannonlake",
    0x7D: "icelake", 0x7E: "icelake", 0x9D: "icelake",
    0x6A: "icelake-x", 0x6C: "icelake-x",
    0xA7: "rocketlake",
    0x8C: "tigerlake", 0x8D: "tigerlake",
    0x8F: "sapphirerapids",
    0xCF: "emeraldrapids",
    0xAD: "graniterapids", 0xAE: "graniterapids",
    0xD7: "bartlettlake",
    0x8A: "lakefield",
    0x97: "alderlake", 0x9A: "alderlake",
    0xB7: "raptorlake", 0xBA: "raptorlake", 0xBF: "raptorlake",
    0xAC: "meteorlake", 0xAA: "meteorlake",
    0xC5: "arrowlake", 0xC6: "arrowlake", 0xB5: "arrowlake",
    0xBD: "lunarlake",
    0xCC: "pantherlake",
    0xD5: "wildcatlake",
    # Atom / E-core parts
    0x5C: "goldmont", 0x5F: "goldmont",
    0x7A: "goldmont-plus",
    0x86: "tremont", 0x96: "tremont", 0x9C: "tremont",
    0xBE: "gracemont",
    0xAF: "sierraforest",
    0xB6: "grandridge",
    0xDD: "clearwaterforest",
    # Xeon Phi
    0x57: "knightslanding", 0x85: "knightsmill",
}

_INTEL_OTHER_FAMILIES: dict[tuple[int, int], str] = {
    (19, 0x01): "diamondrapids",
    (18, 0x01): "novalake",
    (18, 0x03): "novalake",
}

AMD_FAMILIES = frozenset({0x17, 0x19, 0x1A})
INTEL_FAMILIES = frozenset({6, 18, 19})


def amd_uarch(family: int, model: int) -> str | None:
    """Zen generation for an AMD family/model, None for pre-Zen or not-yet-known parts."""
    for fam, first, last, name in _AMD_RANGES:
        if family == fam and first <= model <= last:
            return name
    return None


def intel_uarch(family: int, model: int, stepping: int | None = None) -> str | None:
    """Intel generation; stepping splits 0x55 (Skylake-X/Cascade/Cooper) and Kaby/Coffee.

    Without a stepping the oldest generation sharing the model number is reported.
    """
    if family != 6:
        return _INTEL_OTHER_FAMILIES.get((family, model))
    if model == 0x55:
        if stepping is None or stepping < 5:
            return "skylake-x"
        return "cascadelake" if stepping < 10 else "cooperlake"
    if model in (0x8E, 0x9E):
        # intel-family.h: Coffee Lake (and Whiskey Lake) reuse these models from stepping 10.
        return "coffeelake" if stepping is not None and stepping >= 10 else "kabylake"
    return _INTEL_FAM6.get(model)


def cpu_uarch(vendor: str, family: int | None, model: int | None,
              stepping: int | None = None) -> str | None:
    """Dispatch on vendor so callers need not know which table applies."""
    if family is None or model is None:
        return None
    if vendor == "AMD":
        return amd_uarch(family, model)
    if vendor == "Intel":
        return intel_uarch(family, model, stepping)
    return None


_CORE_BRAND = re.compile(r"\bcore(?:\(tm\))?\s*(?:i\d|ultra|\d|m\d|duo|solo|quad)", re.I)


def product_line(vendor: str, brand: str) -> str | None:
    """Product line from the brand string (which a VM may reduce to e.g. 'AMD EPYC').

    The vendor only rules lines out (an AMD part is never a Xeon); an unknown vendor
    falls back to the brand alone.
    """
    text = (brand or "").lower()
    if vendor != "Intel":
        if "threadripper" in text:
            return "threadripper-pro" if re.search(r"threadripper\s+pro\b", text) else "threadripper"
        if "epyc" in text:
            return "epyc"
        if "ryzen" in text:
            return "ryzen"
    if vendor != "AMD":
        if "xeon" in text:
            return "xeon"
        if _CORE_BRAND.search(text):
            return "core"
    return None


# ISA extensions llama.cpp's CPU backend dispatches on, in canonical (Linux) spelling.
_ISA_CANONICAL = [
    "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512dq", "avx512vl",
    "avx512_vnni", "avx512_bf16", "avx512_vbmi",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
]
# py-cpuinfo (CPUID path) and /proc/cpuinfo disagree on underscores: key on the bare name.
_ISA_BY_KEY = {name.replace("_", ""): name for name in _ISA_CANONICAL}
_ISA_BY_KEY["fma3"] = "fma"


def isa_flags(flags: list[str]) -> list[str]:
    """The llama.cpp-relevant subset of CPU flags, normalized and sorted; adds 'amx' for any amx_*."""
    found: set[str] = set()
    for flag in flags or []:
        key = str(flag).strip().lower().replace("_", "").replace("-", "").replace(".", "")
        name = _ISA_BY_KEY.get(key)
        if name:
            found.add(name)
    if any(name.startswith("amx_") for name in found):
        found.add("amx")
    return sorted(found)
