"""Reading records back from a store: one run, or every run it holds, through the per-run
index (coordinator.results.index) so a big store is not walked record by record each time.

Only checked records come back (coordinator.results.record_check); what was skipped as unusable
comes back beside them, so a report can list it instead of failing on it."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from coordinator.results.index import Skipped, catalog, matches, read_run, refresh_index, select_runs


@dataclass
class Loaded:
    records: list[dict] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def run_ids(store) -> list[str]:
    return store.run_ids()


def stored_records(store, run_id: str) -> dict[str, list[dict]]:
    """cell_id -> records of that cell in the store (one per agent, plus kept duplicates)."""
    records: dict[str, list[dict]] = {}
    for rec in refresh_index(store, run_id):
        records.setdefault(rec.get("cell_id", "?"), []).append(rec)
    return records


def load_checked(store, run_id: str | None = None, **filters) -> Loaded:
    """Every record of ``run_id``, or of all runs in the store, that passes the filters
    (matrix, ref, hw_class, since, until; runs are picked from the catalog first), and
    everything skipped in the runs read."""
    out = Loaded()
    ids = [run_id] if run_id else select_runs(catalog(store, out.skipped), **filters)
    for rid in ids:
        found = read_run(store, rid)
        out.records += [rec for rec in found.records if matches(rec, **filters)]
        out.skipped += found.skipped
    return out


def warn_skipped(skipped: list[Skipped], limit: int = 20) -> None:
    """One line per skipped object on stderr (the first ``limit``, then a count)."""
    for s in skipped[:limit]:
        print(f"hwmatrix: {s.note()}", file=sys.stderr)
    if len(skipped) > limit:
        print(f"hwmatrix: ... and {len(skipped) - limit} more skipped", file=sys.stderr)


def load_records(store, run_id: str | None = None, **filters) -> list[dict]:
    """The records of load_checked, without the skip notes."""
    return load_checked(store, run_id, **filters).records
