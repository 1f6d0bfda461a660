"""Dispatch cells on Ray: the same path for the embedded local Ray and a real cluster.

Cells are grouped by build so each (ref, cmake flags) is built once per agent, each task
holds the node's single benchmark slot, and the driver never waits on a task that no
node can run (selectors are checked against the live nodes before submitting).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import ray

from agent.cellspec import CellSpec
from agent.worker import BENCH_RESOURCE, benchmark_cell
from coordinator.progress import ProgressBoard, RunProgress


@dataclass
class Outcome:
    cell_id: str
    record: dict | None
    error: str | None = None


def start_local_ray(labels: dict[str, str]) -> None:
    """An embedded one-node Ray whose node carries this machine's profile as labels."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=os.cpu_count() or 1, resources={BENCH_RESOURCE: 1}, labels=labels,
             include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             configure_logging=True)


def node_matches(selector: dict[str, str], node_labels: dict[str, str]) -> bool:
    for key, want in selector.items():
        have = node_labels.get(key)
        if want.startswith("!in(") or want.startswith("in("):
            values = want[want.index("(") + 1:-1].split(",")
            inside = have in values
            if inside == want.startswith("!"):
                return False
        elif want.startswith("!"):
            if have == want[1:]:
                return False
        elif have != want:
            return False
    return True


def live_bench_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(BENCH_RESOURCE)]


def dispatch(specs: list[CellSpec], selector: dict[str, str], labels_of: dict[str, str],
             already_done: int = 0, total: int | None = None) -> list[Outcome]:
    """Run ``specs`` (already in build order) on nodes matching ``selector``; live progress."""
    if not any(node_matches(selector, n.get("Labels", {})) for n in live_bench_nodes()):
        raise RuntimeError(f"no live agent node matches {selector}")
    board = ProgressBoard.remote()
    pending = {}
    for spec in specs:
        ref = benchmark_cell.options(label_selector=selector).remote(spec.model_dump_json(), board)
        pending[ref] = spec
    outcomes: list[Outcome] = []
    total = total if total is not None else len(specs)
    with RunProgress(total, already_done) as progress:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            try:
                phases = ray.get(board.snapshot.remote(), timeout=5)
            except Exception:  # noqa: BLE001 - progress is best effort
                phases = {}
            running = [(t, cid, ph) for cid, ph in phases.items() for t in [ph[2]]
                       if cid in {s.cell_id for s in pending.values()}]
            if running:
                _, cid, (phase, detail, _) = max(running)
                label = labels_of.get(cid, cid)
                progress.show_phase(label, phase, detail)
            for ref in done:
                spec = pending.pop(ref)
                try:
                    record = ray.get(ref)
                    outcomes.append(Outcome(spec.cell_id, record))
                    progress.cell_done(labels_of.get(spec.cell_id, spec.cell_id), record["status"])
                except Exception as exc:  # noqa: BLE001 - a lost task is reported, the rest go on
                    outcomes.append(Outcome(spec.cell_id, None, f"{type(exc).__name__}: {exc}"))
                    progress.cell_done(labels_of.get(spec.cell_id, spec.cell_id), "lost")
    ray.kill(board)
    return outcomes
