"""Reading records back from a store: one run, or every run it holds."""
from __future__ import annotations

from agent.store import results_prefix


def run_ids(store) -> list[str]:
    return sorted({key.split("/")[1] for key in store.list("runs/") if key.count("/") >= 2})


def stored_records(store, run_id: str) -> dict[str, list[dict]]:
    """cell_id -> records of that cell in the store (one per agent, plus kept duplicates)."""
    records: dict[str, list[dict]] = {}
    for key in store.list(results_prefix(run_id)):
        if key.endswith(".json"):
            try:
                rec = store.get_json(key)
            except (KeyError, ValueError):
                continue
            records.setdefault(rec.get("cell_id", key.split("/")[-2]), []).append(rec)
    return records


def load_records(store, run_id: str | None = None) -> list[dict]:
    """Every record of ``run_id``, or of all runs in the store."""
    ids = [run_id] if run_id else run_ids(store)
    return [rec for rid in ids for recs in stored_records(store, rid).values() for rec in recs]
