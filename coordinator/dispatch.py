"""Dispatch cells on Ray: the same path for the embedded local Ray and a real cluster.

One task is one A/B group (cells that differ only in the compared axis), measured on one
node, interleaved; each task holds the node's single benchmark slot, and the driver never
waits on a task that no node can run (selectors are checked against the live nodes before
submitting).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import ray

from agent.cellspec import CellSpec
from agent.worker import BENCH_RESOURCE, benchmark_group
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
    # address="local": always a fresh embedded Ray, never a cluster this machine happens to
    # run (plain ray.init() would join it through /tmp/ray or $RAY_ADDRESS)
    ray.init(address="local", num_cpus=os.cpu_count() or 1, resources={BENCH_RESOURCE: 1}, labels=labels,
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


def dispatch(groups: list[list[CellSpec]], selector: dict[str, str], labels_of: dict[str, str],
             already_done: int = 0, total: int | None = None) -> list[Outcome]:
    """Run each group of ``groups`` on a node matching ``selector``; live progress."""
    if not any(node_matches(selector, n.get("Labels", {})) for n in live_bench_nodes()):
        raise RuntimeError(f"no live agent node matches {selector}")
    board = ProgressBoard.remote()
    pending = {}
    for group in groups:
        ref = benchmark_group.options(label_selector=selector).remote([s.model_dump_json() for s in group], board)
        pending[ref] = group
    outcomes: list[Outcome] = []
    total = total if total is not None else sum(len(g) for g in groups)
    with RunProgress(total, already_done) as progress:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            try:
                phases = ray.get(board.snapshot.remote(), timeout=5)
            except Exception:  # noqa: BLE001 - progress is best effort
                phases = {}
            waiting = {s.cell_id for group in pending.values() for s in group}
            running = [(t, cid, ph) for cid, ph in phases.items() for t in [ph[2]] if cid in waiting]
            if running:
                _, cid, (phase, detail, _) = max(running)
                progress.show_phase(labels_of.get(cid, cid), phase, detail)
            for ref in done:
                group = pending.pop(ref)
                try:
                    records = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a lost task is reported, the rest go on
                    records = [None] * len(group)
                    error = f"{type(exc).__name__}: {exc}"
                for spec, record in zip(group, records):
                    label = labels_of.get(spec.cell_id, spec.cell_id)
                    if record is None:
                        outcomes.append(Outcome(spec.cell_id, None, error))
                        progress.cell_done(label, "lost")
                    else:
                        outcomes.append(Outcome(spec.cell_id, record))
                        progress.cell_done(label, record["status"])
    ray.kill(board)
    return outcomes
