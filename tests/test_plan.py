"""Planning the demo matrices (the small default and the full one): cells, builds, run ids and the specs handed to agents."""
from __future__ import annotations

import re

from coordinator.planning.plan import build_targets, load_plan
from tests.conftest import REPO

DEMO = REPO / "matrices" / "demo-full.yaml"
SMALL = REPO / "matrices" / "demo.yaml"


def test_the_default_demo_is_one_ik_build_and_asks_only_the_rtr_question():
    """The README's first command compiles one engine tree (issue #13 item 8): ik with its own
    llama-quantize, four threads=1 cells, -rtr on against off in one A/B group per quant."""
    from coordinator.planning.placement import comparison_groups

    plan = load_plan(str(SMALL))
    assert len(plan.cells) == 4 and {c.engine_name for c in plan.cells} == {"ik"}
    targets = build_targets(plan.cells)
    assert list(targets.values()) == [{"llama-bench", "llama-quantize"}]     # one build, it quantizes
    assert all(c.quantizer is None and c.params["threads"] == 1 for c in plan.cells)
    assert plan.comparisons == [({"rtr": False}, {"rtr": True})]
    groups = comparison_groups(plan.cells, plan.comparisons)
    assert sorted(sorted(c.params["rtr"] for c in g) for g in groups) == [[False, True], [False, True]]


def test_the_default_demo_calibrates_its_processes_and_stops_on_the_verdict():
    rep = load_plan(str(SMALL)).cells[0].to_spec("r", "file:///tmp/x").repetitions
    assert (rep.until, rep.per_process, rep.min, rep.max) == ("verdict", "auto", 3, 12)
    assert rep.min_process_s > 0


def test_the_full_demo_expands_to_the_documented_cells_and_three_builds():
    plan = load_plan(str(DEMO))
    assert len(plan.cells) == 17
    assert len({c.build_order for c in plan.cells}) == 3
    assert sum(c.settings["tool"] == "llama-sweep-bench" for c in plan.cells) == 1
    assert len({c.cell_id for c in plan.cells}) == 17


def test_every_cell_of_a_build_asks_for_all_targets_of_that_build():
    plan = load_plan(str(DEMO))
    targets = build_targets(plan.cells)
    ik = next(c for c in plan.cells if c.engine_name == "ik" and c.settings["tool"] == "llama-bench")
    spec = ik.to_spec("r", "file:///tmp/x", targets[ik.build_order])
    # mainline 0.3.35 quantizes for every engine (issue #13): ik builds no llama-quantize
    assert spec.build_targets == ["llama-bench", "llama-sweep-bench"]
    mainline = next(c for c in plan.cells if c.engine_name == "mainline")
    assert "llama-sweep-bench" not in targets[mainline.build_order]


def test_run_id_ignores_comments_and_layout_but_not_content(tmp_path):
    text = DEMO.read_text()
    reformatted = tmp_path / "a.yaml"
    assert "max: 20, until" in text
    reformatted.write_text("# another comment\n" + text.replace("max: 20, until", "max:   20 ,  until"))
    changed = tmp_path / "b.yaml"
    changed.write_text(text.replace("max: 20, until", "max: 21, until"))
    base = load_plan(str(DEMO)).default_run_id
    assert load_plan(str(reformatted)).default_run_id == base
    assert load_plan(str(changed)).default_run_id != base


def test_mainline_cells_do_not_pass_ik_only_flags_that_are_off():
    plan = load_plan(str(DEMO))
    mainline = next(c for c in plan.cells if c.engine_name == "mainline")
    spec = mainline.to_spec("r", "file:///tmp/x")
    assert spec.args.rtr is None and mainline.params["rtr"] is False
    ik_on = next(c for c in plan.cells if c.engine_name == "ik" and c.params.get("rtr") is True)
    assert ik_on.to_spec("r", "file:///tmp/x").args.rtr is True


def test_cells_that_differ_only_in_ref_form_one_group_with_alternating_first_side():
    from coordinator.planning.placement import comparison_groups

    plan = load_plan(str(DEMO))
    groups = comparison_groups(plan.cells, [({"ref": None}, None)])      # one comparison, on ref
    assert sorted(c.cell_id for g in groups for c in g) == sorted(c.cell_id for c in plan.cells)
    first = groups[0]
    assert [c.params["ref"] for c in first] == ["mainline-0.3.35", "mainline-0.3.36", "ik-0.1.5"]
    rest = {k: v for k, v in first[0].params.items() if k != "ref"}
    assert all({k: v for k, v in c.params.items() if k != "ref"} == rest for c in first)
    assert [c.params["ref"] for c in groups[1]] == ["ik-0.1.5", "mainline-0.3.36", "mainline-0.3.35"]
    # ik's rtr=true cells have no mainline partner: groups of one
    assert any(len(g) == 1 and g[0].params["rtr"] is True for g in groups)


def test_groups_follow_the_baseline_axis_when_it_is_not_ref():
    from coordinator.planning.placement import comparison_groups

    plan = load_plan(str(DEMO))
    groups = comparison_groups(plan.cells, [({"threads": None}, None)])
    assert all(len({repr({k: v for k, v in c.params.items() if k != "threads"}) for c in g}) == 1 for g in groups)
    assert max(len(g) for g in groups) == 2 and all({c.params["threads"] for c in g} == {1, 2}
                                                   for g in groups if len(g) == 2)

def test_plan_refuses_a_bidi_control_in_a_tag_instead_of_printing_it(tmp_path):
    from tests.conftest import hwmatrix

    # Before: exit 0, and the build list showed "v0.3.35\u202e" raw, reordering the line.
    path = tmp_path / "bidi.yaml"
    path.write_text(DEMO.read_text().replace("tag: v0.3.35", 'tag: "v0.3.35\\u202e"', 1))
    assert '"v0.3.35\\u202e"' in path.read_text()
    result = hwmatrix("plan", str(path))
    assert result.returncode == 2 and "\u202e" not in result.stdout + result.stderr
    assert re.fullmatch(rf"hwmatrix: {re.escape(str(path))}:\d+: matrix\.ref\[\d\]\.tag: holds the control character "
                        r"U\+202E \(RIGHT-TO-LEFT OVERRIDE\); .*\n", result.stderr), result.stderr


def test_the_run_manifest_holds_the_matrix_compare_pairs_for_readers_of_the_store_alone(tmp_path):
    import json

    from agent.store.backends import open_store
    from coordinator.cluster.run import write_manifest

    plan = load_plan(str(REPO / "matrices" / "demo.yaml"))
    store = open_store((tmp_path / "store").as_uri())
    write_manifest(store, plan, "demo-x", {}, "running")
    manifest = json.loads(store.get("runs/demo-x/manifest.json"))
    assert manifest["compare"] == [{"baseline": {"rtr": False}, "candidate": {"rtr": True}}]
    assert {c["state"] for c in manifest["cells"]} == {"missing"}
