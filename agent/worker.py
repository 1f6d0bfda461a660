"""The Ray side of an agent: a benchmark task that holds the node's one benchmark slot.

Every agent node advertises exactly one unit of BENCH_RESOURCE, and every benchmark task
asks for one, so two benchmarks never overlap on a machine whatever the scheduler does.
"""
from __future__ import annotations

import ray

from agent.cellspec import CellSpec
from agent.pipeline import run_cell

BENCH_RESOURCE = "hwmatrix_bench"


@ray.remote(num_cpus=0, resources={BENCH_RESOURCE: 1}, max_retries=0)
def benchmark_cell(spec_json: str, progress=None) -> dict:
    """Run one cell on this node; returns the record as a dict (it is also in the store)."""
    spec = CellSpec.model_validate_json(spec_json)

    def report(phase: str, detail: str) -> None:
        if progress is not None:
            progress.update.remote(spec.cell_id, phase, detail)

    return run_cell(spec, report).model_dump(mode="json")
