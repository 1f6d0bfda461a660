"""The Ray side of an agent: a benchmark task that holds the node's one benchmark slot.

Every agent node advertises exactly one unit of BENCH_RESOURCE, and every benchmark task
asks for one, so two benchmarks never overlap on a machine whatever the scheduler does.
One task is one A/B group (cells that differ only in their ref), so its cells are
measured on one machine, interleaved process by process.
"""
from __future__ import annotations

import ray

from agent import spool
from agent.cellspec import CellSpec
from agent.pipeline import run_cells
from agent.probe import probe

BENCH_RESOURCE = "hwmatrix_bench"


@ray.remote(num_cpus=0, resources={BENCH_RESOURCE: 1}, max_retries=0)
def benchmark_group(spec_jsons: list[str], progress=None) -> list[dict]:
    """Run a group of cells on this node; returns the records it made, as dicts (also in the
    store). A cell another agent of this class already recorded is skipped and absent."""
    spool.flush()              # records an agent killed mid-delivery left behind on this node
    specs = [CellSpec.model_validate_json(s) for s in spec_jsons]

    node_id = ray.get_runtime_context().get_node_id()

    def report(cell_id: str, phase: str, detail: str) -> None:
        if progress is not None:
            progress.update.remote(cell_id, phase, detail, node_id)

    return [record.model_dump(mode="json") for record in run_cells(specs, report)]


@ray.remote(num_cpus=0, max_retries=0)
def node_profile() -> dict:
    """This node's full hardware profile, for the coordinator's matching (labels carry only
    what `label_selector` needs). Needs no benchmark slot, so a busy agent answers too."""
    return probe().model_dump(mode="json") | {"ray_node_id": ray.get_runtime_context().get_node_id()}
