"""`hwmatrix run`: plan, skip what the store already has, dispatch the rest, print the table."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

from agent import spool
from agent.paths import default_store_url
from agent.probe import ProfileError, probe, profile_labels
from agent.record import utc_now
from agent.store import StoreError, manifest_key, open_store
from coordinator.records import stored_records
from coordinator.errors import EXIT_CELLS_FAILED, EXIT_OK, UserError
from coordinator.plan import Plan, ab_groups, build_targets, load_plan, match_cells, unmatched_listing
from coordinator.table import comparison_table


def write_manifest(store, plan: Plan, run_id: str, records: dict[str, list[dict]], state: str) -> None:
    manifest = {
        "run_id": run_id, "matrix": {"name": plan.name, "hash": plan.matrix_hash, "file": plan.path},
        "updated": utc_now(), "state": state,
        "cells": [{"cell_id": c.cell_id, "params": c.params,
                   "status": sorted({r["status"] for r in records.get(c.cell_id, [])}) or ["missing"]}
                  for c in plan.cells],
    }
    store.put(manifest_key(run_id), json.dumps(manifest, indent=1).encode(), on_clash="replace")


def render_table(plan: Plan, records: dict[str, list[dict]], not_run: dict[str, str] | None = None) -> str:
    cells = [{"cell_id": c.cell_id, "params": c.params} for c in plan.cells]
    return comparison_table(cells, records, plan.baseline, not_run)


def run_matrix(path: str, store_url: str | None, run_id: str | None, fresh: bool, skip_unmatched: bool) -> int:
    """`hwmatrix run`: measure what is missing, then print the table; the exit code says
    whether every matched cell has an ok record."""
    plan, run_id, records, matched, unmatched = execute(path, store_url, run_id, fresh, skip_unmatched)
    print(render_table(plan, records, {c.cell_id: "skipped: no agent matches" for c, _ in unmatched}))
    statuses = [r["status"] for c in matched for r in records.get(c.cell_id, [])[:1]]
    return EXIT_OK if statuses and all(s == "ok" for s in statuses) else EXIT_CELLS_FAILED


def execute(path: str, store_url: str | None, run_id: str | None, fresh: bool, skip_unmatched: bool):
    """Plan, skip what the store has, dispatch the rest; (plan, run_id, records, matched, unmatched)."""
    plan = load_plan(path)
    try:
        profile = probe()
    except ProfileError as exc:
        raise UserError(str(exc)) from None
    matched, unmatched = match_cells(plan, profile.model_dump())
    if unmatched and not skip_unmatched:
        print(unmatched_listing(unmatched, profile.hostname), file=sys.stderr)
        raise UserError(f"{len(unmatched)} of {len(plan.cells)} cells match no agent "
                        "(this machine); use --skip-unmatched to run the rest")
    store_url = store_url or default_store_url()
    try:
        store = open_store(store_url)
        store_url = store.url
    except StoreError as exc:
        raise UserError(str(exc)) from None
    run_id = run_id or plan.default_run_id
    if fresh:
        run_id = f"{run_id}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"

    spool.flush()                      # records a killed earlier run left behind
    records = stored_records(store, run_id)
    done = {cid for cid, recs in records.items() if any(r.get("status") == "ok" for r in recs)}
    todo = [c for c in matched if c.cell_id not in done]
    print(f"run {run_id}: {len(plan.cells)} cells, {len(done)} already recorded, {len(todo)} to run; "
          f"store {store_url}", file=sys.stderr)
    write_manifest(store, plan, run_id, records, "running" if todo else "complete")
    if todo:
        from coordinator.dispatch import dispatch, start_local_ray

        print("starting the embedded Ray (this machine's profile as node labels)...", file=sys.stderr)
        start_local_ray(profile_labels(profile))
        targets = build_targets(todo)
        axis = next(iter(plan.baseline or {"ref": None}))
        groups = [[c.to_spec(run_id, store_url, targets[c.build_order]) for c in group]
                  for group in ab_groups(todo, axis)]
        labels = {c.cell_id: c.label for c in plan.cells}
        dispatch(groups, {"hwm-class": profile.hardware_class}, labels,
                 already_done=len(done), total=len(done) + len(todo))
        records = stored_records(store, run_id)
    write_manifest(store, plan, run_id, records, "complete")
    return plan, run_id, records, matched, unmatched
