"""The order in which an A/B group's cells take their turn in each round (issue #13 item 10).

"counterbalanced" alternates the order by round (A B, B A, A B ...). It cancels a drift within
a round, but it repeats every two rounds: an interference whose period aliases with that (a
cron job, a neighbour's batch loop on a shared host) hits the same side every time, and the
A/A comparison of one binary comes out biased, with no sign of it in the spread. "random"
draws each round's order afresh, so no periodic interference can favour a side and the paired
test stays valid whatever the machine does; it pays with a wider spread where the
alternation would have cancelled something. Its draws are seeded by the run and the group's
cells, so a rerun of the same run measures in the same order.

Measured by bench/verdicts.py (bench/README.md): next to a hog with the counterbalanced
order's period, the mean |A/A log-ratio| of one binary was 0.13 simulated (sequential false
calls 0.81) and 0.17-0.23 on a real engine (pp) counterbalanced, against 0.03 and 0.04-0.06
random; where nothing aliased, counterbalanced spread less in two runs of three (real tg,
0.02-0.03 against 0.04-0.06). A confident wrong answer is worse than a wider interval:
DEFAULT is random.
"""
from __future__ import annotations

import hashlib
import random
from typing import Iterable, Sequence, TypeVar

T = TypeVar("T")
ORDERS = ("counterbalanced", "random")
DEFAULT = "random"


def group_seed(run_id: str, cell_ids: Iterable[str]) -> str:
    """The seed of one group's order: its run and its cells (in any order), nothing of the
    machine or the clock, so a rerun repeats it and two groups of a run differ."""
    return hashlib.sha256("\n".join([run_id, *sorted(cell_ids)]).encode()).hexdigest()[:16]


def round_order(items: Sequence[T], round_index: int, mode: str = DEFAULT, seed: str = "") -> list[T]:
    """The items (a group's cells) in the order they run in round ``round_index`` (from 0)."""
    if mode == "counterbalanced":
        return list(items) if round_index % 2 == 0 else list(reversed(items))
    if mode == "random":
        order = list(items)
        random.Random(f"{seed}:{round_index}").shuffle(order)
        return order
    raise ValueError(f"interleave order {mode!r} is not one of {', '.join(ORDERS)}")


def slots(n_items: int, rounds: int, mode: str = DEFAULT, seed: str = "") -> list[int]:
    """The item index of every process slot of ``rounds`` rounds, in time order (for the bench)."""
    return [i for k in range(rounds) for i in round_order(range(n_items), k, mode, seed)]
