"""One fit rule for hardware and GPUs: a local plan (and a cluster placement) and a
volunteer lease ask the same function, so a machine fits a cell in all of them or none."""
from __future__ import annotations

import json

import pytest

from coordinator.planning.plan import build_targets, cell_requirement, load_plan
from coordinator.volunteers.workapi import fits

MATRIX = """
name: fit
engines: {mainline: {kind: llama.cpp, sdist: {package: llama-cpp-python, versions: ["0.3.36"]}}}
models: {tiny: {generate: tiny-llama}}
hardware: {cpu: {cores: ">=1"}}
args: {ngl: 99}
matrix:
  ref: [{name: m, tag: v0.3.36}]
  gpus: [0, 1, 2]
"""
TERMS = {"repos": ["pypi:llama-cpp-python"], "allow_fork_prs": False, "max_gpus": 8}
CPU = {"cores": 8, "threads": 16}
PROFILES = {
    "no GPU facts": {"cpu": CPU},
    "count 0": {"cpu": CPU, "gpus": {"count": 0, "devices": []}},
    "count 1": {"cpu": CPU, "gpus": {"count": 1, "devices": [{"name": "RTX 3090"}]}},
    "count 2": {"cpu": CPU, "gpus": {"count": 2, "devices": [{"name": "RTX 3090"}] * 2}},
    "count unknown": {"cpu": CPU, "gpus": {"count": None, "devices": [{"name": "RTX 3090"}]}},
    "count as text": {"cpu": CPU, "gpus": {"count": "2"}},
}


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("fit") / "fit.yaml"
    path.write_text(MATRIX)
    return load_plan(str(path))


def queued_row(plan, cell) -> dict:
    """The cell as `volunteers queue` stores it for the work API."""
    spec = cell.to_spec("r", "s3://bucket/p", build_targets(plan.cells)[cell.build_order])
    need = {"hardware": plan.matrix.hardware.model_dump(mode="json", exclude_none=True),
            "gpus": cell.settings.get("gpus")}
    return {"spec": json.dumps(spec.model_dump(mode="json")), "requirement": json.dumps(need)}


@pytest.mark.parametrize("name", list(PROFILES))
def test_a_volunteer_lease_and_a_local_plan_agree_on_the_gpu_count(plan, name):
    profile = PROFILES[name]
    for cell in plan.cells:
        reason = cell_requirement(cell, profile)
        assert fits(queued_row(plan, cell), profile, TERMS) is (reason is None), (name, cell.settings["gpus"])
        want, have = cell.settings["gpus"], (profile.get("gpus") or {}).get("count", 0)
        expect_fit = not want or (isinstance(have, int) and have >= want)
        assert (reason is None) is expect_fit, (name, want, reason)


def test_an_unknown_gpu_count_is_a_reason_not_a_crash(plan):
    cell = next(c for c in plan.cells if c.settings["gpus"] == 1)
    assert cell_requirement(cell, PROFILES["count unknown"]) == "needs 1 GPUs for gpus=1, has unknown"
    assert cell_requirement(cell, PROFILES["count 0"]) == "needs 1 GPUs for gpus=1, has 0"


def test_the_plan_and_the_work_api_call_one_function():
    import coordinator.planning.hardware_match as hardware_match
    import coordinator.planning.plan as plan_mod
    import coordinator.volunteers.workapi as workapi

    assert plan_mod.unmet is workapi.unmet is hardware_match.unmet
