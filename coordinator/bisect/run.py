"""`hwmatrix bisect` end to end: the search over the real lab, the result into the journal,
and the exit code (0: a culprit confirmed; 1: none - no change, the other way, unsettled; 2: bad input)."""
from __future__ import annotations

import math
import time
from dataclasses import asdict

from coordinator.bisect.lab import Setup, StoreLab
from coordinator.bisect.render import render
from coordinator.bisect.search import Bisect, Result
from coordinator.errors import EXIT_CELLS_FAILED, EXIT_OK


def build_budget(n: int) -> int:
    """The builds a search of ``n`` commits should need beyond the two ends: ceil(log2 n) + 2."""
    return math.ceil(math.log2(n)) + 2 if n > 1 else 2


def totals(result: Result, lab: StoreLab, started: float) -> dict:
    measures = lab.journal["measures"].values()
    cached = sum(1 for c in lab.journal["codes"].values() if c.get("cached"))
    return {"builds": result.builds, "builds_beyond_ends": max(0, result.builds - 2), "cached_builds": cached,
            "processes": sum(m["processes"] for m in measures), "groups": len(lab.journal["measures"]),
            "wall_s": round(time.time() - started, 1),
            "measure_s": round(sum(m.get("seconds", 0) for m in measures), 1),
            "build_s": round(sum(c.get("seconds", 0) for c in lab.journal["codes"].values()), 1),
            "replayed_builds": lab.replayed["builds"], "replayed_measures": lab.replayed["measures"],
            "commits": len(lab.setup.commits) - 1}


def run_bisect(setup: Setup, store, store_url: str, bisect_id: str | None = None,
               max_changes: int = 4) -> tuple[int, dict]:
    """Search, journal the result, print it; (exit code, journal)."""
    bisect_id = bisect_id or setup.bisect_id()
    lab = StoreLab(setup, store, store_url, bisect_id)
    n = len(setup.commits) - 1
    lab.say(f"bisect {bisect_id}: {n} first-parent commits after good {setup.commits[0].sha[:10]} up to bad "
            f"{setup.commits[-1].sha[:10]}; at most about {build_budget(n)} builds beyond the ends"
            + (f" (replaying {len(lab.journal['codes'])} builds and {len(lab.journal['measures'])} groups "
               "from the store)" if lab.journal["measures"] or lab.journal["codes"] else ""))
    started = time.time()
    result = Bisect(n, lab, setup.find, max_changes).run()
    lab.journal["result"] = asdict(result) | {"totals": totals(result, lab, started)}
    lab.journal["finished"] = time.time()
    lab.save()
    print(render(lab.journal))
    return (EXIT_OK if result.status == "found" else EXIT_CELLS_FAILED), lab.journal
