"""Reading records back from a store: one run, or every run it holds, through the per-run
index (coordinator.index) so a big store is not walked record by record each time."""
from __future__ import annotations

from coordinator.index import catalog, matches, refresh_index, select_runs


def run_ids(store) -> list[str]:
    return store.run_ids()


def stored_records(store, run_id: str) -> dict[str, list[dict]]:
    """cell_id -> records of that cell in the store (one per agent, plus kept duplicates)."""
    records: dict[str, list[dict]] = {}
    for rec in refresh_index(store, run_id):
        records.setdefault(rec.get("cell_id", "?"), []).append(rec)
    return records


def load_records(store, run_id: str | None = None, **filters) -> list[dict]:
    """Every record of ``run_id``, or of all runs in the store, that passes the filters
    (matrix, ref, hw_class, since, until); runs are picked from the catalog first."""
    ids = [run_id] if run_id else select_runs(catalog(store), **filters)
    return [rec for rid in ids for rec in refresh_index(store, rid) if matches(rec, **filters)]
