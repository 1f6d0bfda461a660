"""The words and limits of a matrix file beyond the registry's: CPU microarchitectures and
product lines, the argument aliases, and how big a matrix may be."""
from __future__ import annotations

from agent.spec.flags import NAME_MAX
from agent.spec.registry import ENGINES, aliases, known_quants, kv_types

KNOWN_QUANTS = known_quants()
KV_TYPES = kv_types()
ENGINE_KINDS = tuple(ENGINES)

AMD_UARCHS = ("zen", "zen+", "zen2", "zen3", "zen4", "zen5", "zen6")
INTEL_UARCHS = (
    "haswell", "broadwell", "skylake", "skylake-x", "cascadelake", "cooperlake", "kabylake",
    "coffeelake", "cannonlake", "icelake", "icelake-x", "tigerlake", "alderlake", "raptorlake",
    "meteorlake", "arrowlake", "lunarlake", "sapphirerapids", "emeraldrapids", "graniterapids",
    "sierraforest")
LINE_VENDOR = {"ryzen": "AMD", "threadripper": "AMD", "threadripper-pro": "AMD", "epyc": "AMD",
               "xeon": "Intel", "core": "Intel"}
UARCH_VENDOR = {**{u: "AMD" for u in AMD_UARCHS}, **{u: "Intel" for u in INTEL_UARCHS}}

# Short spellings some args accept (b for batch); cells always use the long name.
ALIASES = aliases()
SHORT = {long: short for short, long in ALIASES.items()}

# The run id is "<name>-<12 hex>" (plus "-YYYYmmddTHHMMSS" with --fresh) and must stay a
# valid name for the agent, so the matrix name leaves room for both suffixes.
MATRIX_NAME_MAX = NAME_MAX - len("-0123456789ab-20250101T000000")
# Each cell is at least one build-and-benchmark; ten thousand is weeks of machine time, and
# planning that many takes about a second. `--max-cells` raises it for one plan or run.
MAX_CELLS = 10_000
ENTRIES_MAX = 1_000         # include and exclude entries each (GitHub allows 256 jobs in all)
COUNT_STEPS_MAX = 2_000_000  # work allowed to count the cells that the excludes leave (about a second)
