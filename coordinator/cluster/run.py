"""`hwmatrix run`: plan, skip what the store already has, dispatch the rest, print the table."""
from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import datetime, timezone

from tabulate import tabulate

from agent.store import spool
from agent.paths import default_store_url
from agent.engine.pipeline import agent_id_for
from agent.machine.labels import profile_labels
from agent.machine.probe import probe
from agent.machine.profile import ProfileError
from agent.spec.record import ResultRecord, utc_now
from agent.store.backends import open_store
from agent.store.keys import StoreError, manifest_key, result_key
from coordinator.results.records import stored_records
from coordinator.errors import EXIT_CELLS_FAILED, EXIT_OK, UserError
from coordinator.planning.placement import Agent, place
from coordinator.matrix.vocabulary import MAX_CELLS
from coordinator.planning.plan import Plan, PlannedCell, build_targets, load_plan
from coordinator.reports.table import comparison_table


def write_manifest(store, plan: Plan, run_id: str, records: dict[str, list[dict]], state: str,
                   spooled: dict[str, list[str]] | None = None) -> None:
    """Which cells are recorded (with their statuses), missing, or spooled on which agents."""
    spooled = spooled or {}
    manifest = {
        "run_id": run_id, "matrix": {"name": plan.name, "hash": plan.matrix_hash, "file": plan.path},
        "updated": utc_now(), "state": state,
        # the matrix's compare pairs, so a reader of the store alone (the results site) shows
        # the same Δ columns as the table printed at the end of the run
        "compare": [{"baseline": base, "candidate": cand} for base, cand in plan.comparisons],
        "cells": [{"cell_id": c.cell_id, "params": c.params,
                   "state": "recorded" if records.get(c.cell_id) else "spooled" if spooled.get(c.cell_id) else "missing",
                   "status": sorted({r["status"] for r in records.get(c.cell_id, [])}),
                   "spooled_on": sorted(spooled.get(c.cell_id, []))}
                  for c in plan.cells],
    }
    store.put(manifest_key(run_id), json.dumps(manifest, indent=1).encode(), on_clash="replace")


def render_table(plan: Plan, records: dict[str, list[dict]], not_run: dict[str, str] | None = None) -> str:
    cells = [{"cell_id": c.cell_id, "params": c.params} for c in plan.cells]
    return comparison_table(cells, records, plan.comparisons, not_run)


def run_matrix(path: str, store_url: str | None, run_id: str | None, fresh: bool, skip_unmatched: bool,
               address: str | None = None, token_file: str | None = None, on_clash: str = "reject",
               max_cells: int = MAX_CELLS) -> int:
    """`hwmatrix run`: measure what is missing, then print the table; the exit code says
    whether every matched cell has an ok record."""
    plan, run_id, records, matched, unmatched = execute(path, store_url, run_id, fresh, skip_unmatched,
                                                        address, token_file, on_clash, max_cells)
    print(render_table(plan, records, {c.cell_id: "skipped: no agent matches" for c, _ in unmatched}))
    ok = [_all_classes_ok(records.get(c.cell_id, [])) for c in matched]
    return EXIT_OK if ok and all(ok) else EXIT_CELLS_FAILED


def _all_classes_ok(records: list[dict]) -> bool:
    """The cell has an ok record on every hardware class it was tried on."""
    classes = {r.get("hardware_class") for r in records}
    return bool(records) and all(any(r.get("status") == "ok" for r in records if r.get("hardware_class") == c)
                                 for c in classes)


def local_agents() -> list[Agent]:
    try:
        profile = probe()
    except ProfileError as exc:
        raise UserError(str(exc)) from None
    return [Agent(host=agent_id_for(profile.hostname), hw_class=profile.hardware_class, profile=profile.model_dump())]


def cluster_agents() -> list[Agent]:
    """Every live agent's full profile, asked of the agent itself (a task pinned to it)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from agent.cluster.worker import node_profile
    from coordinator.cluster.dispatch import live_bench_nodes

    refs = [node_profile.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
            for n in live_bench_nodes()]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=120)
    agents = []
    for ref in ready:
        try:
            profile = ray.get(ref)
        except Exception:  # noqa: BLE001 - an agent that can't answer takes no cells
            continue
        agents.append(Agent(host=agent_id_for(profile.get("hostname")), hw_class=profile["hardware_class"],
                            profile=profile, node_id=profile["ray_node_id"]))
    return agents


def pick_agent(address: str | None, hw_class: str | None) -> Agent:
    """The first live agent (by name) of ``hw_class`` (any class when None), which a bisect or
    an `ab --class` keeps every step on. A cluster is joined already."""
    agents = cluster_agents() if address else local_agents()
    if hw_class:
        agents = [a for a in agents if a.hw_class == hw_class]
    if not agents:
        raise UserError((f"no live agent of hardware class {hw_class}" if hw_class else "no live agent")
                        + ("" if address else " (this machine's class is another; `hwmatrix probe` shows it)"))
    return sorted(agents, key=lambda a: a.host)[0]


def unmatched_listing(cells: dict[str, PlannedCell], unmatched: dict[str, dict[str, str]]) -> str:
    rows = [(cid, cells[cid].label, f"{host}: {reason}") for cid, why in unmatched.items()
            for host, reason in why.items()]
    return tabulate(rows, headers=["cell", "params", "why this agent does not match"], tablefmt="simple")


def record_outcomes(store, run_id: str, cells: dict[str, PlannedCell], outcomes) -> None:
    """Cells the agents could not finish (lost, canceled) still get a record saying so."""
    for outcome in outcomes:
        if outcome.status not in ("lost", "canceled"):
            continue
        cell = cells[outcome.cell_id]
        agent_id = f"coordinator-{outcome.hw_class}"
        record = ResultRecord(run_id=run_id, matrix={"name": cell.matrix.name, "hash": cell.matrix_hash},
                              cell_id=cell.cell_id, agent_id=agent_id, params=cell.params, status=outcome.status,
                              error=outcome.error, hardware_class=outcome.hw_class,
                              timestamps={"finished": utc_now()})
        store.put(result_key(run_id, cell.cell_id, agent_id), record.model_dump_json(indent=1).encode(),
                  on_clash="replace")


def _spooled(outcomes) -> dict[str, list[str]]:
    """cell_id -> agents whose record of it is still in their spool."""
    spooled: dict[str, list[str]] = {}
    for outcome in outcomes:
        if outcome.record and outcome.record.get("spooled_on"):
            spooled.setdefault(outcome.cell_id, []).append(outcome.record["spooled_on"])
    return spooled


def ctrl_c_cancels() -> None:
    """Ctrl-C (SIGINT) cancels the run, even in a process started with SIGINT ignored, as a
    shell without job control starts `cmd &` (a script, a CI step, a background test run):
    Python then leaves it ignored, and every Ctrl-C or `kill -INT` would be lost."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def execute(path: str, store_url: str | None, run_id: str | None, fresh: bool, skip_unmatched: bool,
            address: str | None = None, token_file: str | None = None, on_clash: str = "reject",
            max_cells: int = MAX_CELLS, host: str | None = None):
    """Plan, skip what the store has, dispatch the rest; (plan, run_id, records, matched, unmatched).
    ``host``: only that agent takes cells (a bisect keeps every step on one machine)."""
    ctrl_c_cancels()
    plan = load_plan(path, max_cells)
    store_url = store_url or default_store_url()
    try:
        store = open_store(store_url)
        store_url = store.url
    except StoreError as exc:
        raise UserError(str(exc)) from None
    if address:
        from coordinator.cluster.head import connect

        connect(address, token_file)
        agents = cluster_agents()
    else:
        agents = local_agents()
    if host is not None:
        agents = [a for a in agents if a.host == host]
        if not agents:
            raise UserError(f"agent {host} is no longer live; it ran this bisect's earlier steps "
                            "(the steps must share one machine)")
    run_id = run_id or plan.default_run_id
    if fresh:
        run_id = f"{run_id}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"
    spool.flush()                      # records a killed earlier run left behind
    records = stored_records(store, run_id)
    ok = [r for recs in records.values() for r in recs if r.get("status") == "ok"]
    done = {(r["cell_id"], r.get("hardware_class")) for r in ok} | {(r["cell_id"], f"host:{r['agent_id']}") for r in ok}
    placements, unmatched_why = place(plan.cells, agents, plan.comparisons, done)
    cells = {c.cell_id: c for c in plan.cells}
    unmatched = [(cells[cid], why) for cid, why in unmatched_why.items()]
    matched = [c for c in plan.cells if c.cell_id not in unmatched_why]
    if unmatched and not skip_unmatched:
        print(unmatched_listing(cells, unmatched_why), file=sys.stderr)
        raise UserError(f"{len(unmatched)} of {len(plan.cells)} cells match no "
                        + ("enrolled agent" if address else "agent (this machine)")
                        + "; use --skip-unmatched to run the rest")
    n_todo = sum(len(p.cells) for p in placements)
    n_done = len({(r["cell_id"], r.get("hardware_class")) for r in ok})
    print(f"run {run_id}: {len(plan.cells)} cells, {n_done} results already recorded, {n_todo} to run on "
          f"{len({a.hw_class for a in agents})} hardware class(es); store {store_url}", file=sys.stderr)
    write_manifest(store, plan, run_id, records, "running" if placements else "complete")
    spooled: dict[str, list[str]] = {}
    if placements:
        if not address:
            from coordinator.cluster.loopback import keep_ray_on_loopback

            keep_ray_on_loopback()     # before ray is imported: the embedded Ray is on 127.0.0.1 only
        from coordinator.cluster.dispatch import Task, dispatch, start_local_ray

        targets = build_targets(matched)
        tasks = [Task(specs=[c.to_spec(run_id, store_url, targets[c.build_order], one_per_class=p.node_id is None,
                                       on_clash=on_clash) for c in p.cells],
                      hw_class=p.hw_class, node_id=p.node_id) for p in placements]
        labels = {c.cell_id: c.label for c in plan.cells}
        granter = None
        if store.grants:     # agents upload through URLs signed here; they hold no keys
            from coordinator.cluster.uploads import Granter

            granter = Granter(store, run_id, {c.cell_id for p in placements for c in p.cells}, on_clash)
        try:
            if not address:
                print("starting the embedded Ray (this machine's profile as node labels)...", file=sys.stderr)
                start_local_ray(profile_labels(probe()))
            outcomes = dispatch(tasks, labels, already_done=n_done, total=n_done + n_todo, granter=granter)
        except KeyboardInterrupt as stop:      # dispatch's Interrupted, or a Ctrl-C before any task was out
            outcomes = getattr(stop, "outcomes", [])
            record_outcomes(store, run_id, cells, outcomes)
            write_manifest(store, plan, run_id, stored_records(store, run_id), "canceled", _spooled(outcomes))
            raise
        record_outcomes(store, run_id, cells, outcomes)
        records = stored_records(store, run_id)
        spooled = _spooled(outcomes)
        if spooled:
            print(f"{sum(map(len, spooled.values()))} record(s) wait in agents' spools (store unreachable or a "
                  "clash); they are delivered by the agent's next task or `hwmatrix agent flush`", file=sys.stderr)
    write_manifest(store, plan, run_id, records, "complete", spooled)
    return plan, run_id, records, matched, unmatched
