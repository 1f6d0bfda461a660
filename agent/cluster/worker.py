"""The Ray side of an agent: a benchmark task that holds the node's one benchmark slot.

Every agent node advertises exactly one unit of BENCH_RESOURCE, and every benchmark task
asks for one, so two benchmarks never overlap on a machine whatever the scheduler does.
One task is one A/B group (cells that differ only in their ref), so its cells are
measured on one machine, interleaved process by process.
"""
from __future__ import annotations

import ray

from agent.store import spool
from agent.spec.cellspec import CellSpec
from agent.engine.pipeline import agent_id_for, build_only, run_cells
from agent.machine.probe import probe

BENCH_RESOURCE = "hwmatrix_bench"


def _grant_through(desk, me: str):
    """Ask the coordinator's upload desk for presigned URLs (None: write to the store directly)."""
    if desk is None:
        return None

    def grant(items: list[dict]) -> list[dict]:
        return ray.get(desk.ask.remote(me, items), timeout=330)

    return grant


@ray.remote(num_cpus=0, resources={BENCH_RESOURCE: 1}, max_retries=0)
def benchmark_group(spec_jsons: list[str], progress=None, desk=None) -> list[dict]:
    """Run a group of cells on this node; returns the records it made, as dicts (also in the
    store; ``spooled_on`` marks one still waiting in this agent's spool). A cell another
    agent of this class already recorded is skipped and absent. With ``desk`` the agent
    uploads through URLs the coordinator grants (it holds no store credentials)."""
    specs = [CellSpec.model_validate_json(s) for s in spec_jsons]
    node_id = ray.get_runtime_context().get_node_id()
    me = agent_id_for(probe().hostname)
    grant = _grant_through(desk, me)

    # records an agent killed mid-delivery left behind on this node (a grant covers this run only)
    spool.flush(grant, run_id=specs[0].run_id if grant and specs else None)
    # a cell measured here whose record still waits in the spool is done: never measured twice
    waiting = {s.cell_id: rec for s in specs if (rec := spool.spooled_record(s.run_id, s.cell_id, me))}

    def report(cell_id: str, phase: str, detail: str) -> None:
        if progress is not None:
            progress.update.remote(cell_id, phase, detail, node_id)

    measured = run_cells([s for s in specs if s.cell_id not in waiting], report, grant)
    records = [*waiting.values(), *(record.model_dump(mode="json") for record in measured)]
    return [r | ({"spooled_on": r["agent_id"], "spooled_node": node_id} if spool.is_spooled(r) else {})
            for r in records]


@ray.remote(num_cpus=0, resources={BENCH_RESOURCE: 1}, max_retries=0)
def build_group(spec_jsons: list[str]) -> list[dict]:
    """Build each cell's commit on this node and measure nothing (a bisect's midpoint); holds
    the benchmark slot, since a build would disturb a measurement beside it."""
    return [build_only(CellSpec.model_validate_json(s)) for s in spec_jsons]


@ray.remote(num_cpus=0, max_retries=0)
def drain_spool(run_id: str, desk=None) -> int:
    """Deliver this node's spooled records of ``run_id`` (no benchmark slot needed, so it
    runs beside a benchmark); returns how many are still waiting."""
    spool.flush(_grant_through(desk, agent_id_for(probe().hostname)), run_id=run_id)
    return len(spool.pending(run_id))


@ray.remote(num_cpus=0, max_retries=0)
def node_profile() -> dict:
    """This node's full hardware profile, for the coordinator's matching (labels carry only
    what `label_selector` needs). Needs no benchmark slot, so a busy agent answers too."""
    return probe().model_dump(mode="json") | {"ray_node_id": ray.get_runtime_context().get_node_id()}
