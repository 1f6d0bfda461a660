"""The interleave order of an A/B group (issue #13 item 10): counterbalanced as before, or
random, seeded by the run and the group so a rerun repeats it."""
from __future__ import annotations

import pytest

from agent.engine import interleave
from agent.engine.interleave import group_seed, round_order, slots


def test_counterbalanced_is_the_old_order_a_b_then_b_a():
    assert [round_order("AB", k, "counterbalanced") for k in range(4)] == [
        ["A", "B"], ["B", "A"], ["A", "B"], ["B", "A"]]
    assert round_order("ABC", 1, "counterbalanced") == ["C", "B", "A"]


def test_random_order_is_a_permutation_that_a_rerun_of_the_same_group_repeats():
    seed = group_seed("demo-1234", ["ik-b", "ik-a"])
    first = [round_order("ABC", k, "random", seed) for k in range(50)]
    assert all(sorted(o) == ["A", "B", "C"] for o in first)
    assert first == [round_order("ABC", k, "random", seed) for k in range(50)]
    assert group_seed("demo-1234", ["ik-a", "ik-b"]) == seed           # the cells' order does not matter
    other = [round_order("ABC", k, "random", group_seed("demo-1235", ["ik-a", "ik-b"])) for k in range(50)]
    assert other != first


def test_random_order_puts_each_side_first_about_half_the_time():
    firsts = [round_order("AB", k, "random", "s")[0] for k in range(2000)]
    assert 0.45 < firsts.count("A") / len(firsts) < 0.55


def test_a_hog_with_the_counterbalanced_period_hits_one_side_only_and_a_random_order_both():
    """A neighbour busy in every fourth process slot (A B B A repeats every four) slows A in
    every round of the counterbalanced order: the A/A of one binary would look like B is
    faster. The random order spreads the hits over both sides."""
    def hits(mode: str) -> dict[int, int]:
        order = slots(2, 200, mode, "seed")
        hit = [side for t, side in enumerate(order) if t % 4 == 0]
        return {side: hit.count(side) for side in (0, 1)}

    assert hits("counterbalanced") == {0: 100, 1: 0}
    spread = hits("random")
    assert min(spread.values()) > 35


def test_the_default_is_random_and_an_unknown_mode_is_refused():
    assert interleave.DEFAULT == "random" and interleave.DEFAULT in interleave.ORDERS
    with pytest.raises(ValueError, match="not one of counterbalanced, random"):
        round_order("AB", 0, "alphabetical")


def test_the_matrix_order_reaches_the_cell_spec_and_defaults_to_random(tmp_path):
    from coordinator.planning.plan import load_plan
    from tests.test_busy_guard import matrix
    for hygiene, want in (("warmup: 1", "random"), ("order: counterbalanced", "counterbalanced")):
        plan = load_plan(str(matrix(tmp_path, hygiene)))
        assert plan.cells[0].to_spec(plan.default_run_id, "file:///tmp/s").hygiene.order == want

