"""Where each cell runs: the enrolled agents that match it, and the Ray placement that
puts it there.

Ray does the placing: a `per: class` group is a task with `label_selector` on the
hardware class (any machine of it), a `per: machine` group is pinned with node affinity.
This module only decides which groups exist and says why a cell has nowhere to go.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.matrix.expansion import has_values
from coordinator.planning.plan import PlannedCell, cell_requirement, requirement_key

Sides = tuple[dict, dict | None]      # (baseline values, candidate values or None: every other cell)


@dataclass(frozen=True)
class Agent:
    """One enrolled machine as the coordinator sees it."""
    host: str
    hw_class: str
    profile: dict = field(hash=False, compare=False)
    node_id: str | None = None       # None: the embedded local Ray


@dataclass
class Placement:
    """One Ray task: an A/B group of cells for one hardware class (or one machine)."""
    cells: list[PlannedCell]
    hw_class: str
    node_id: str | None = None       # set for `per: machine`


def matching_agents(cell: PlannedCell, agents: list[Agent]) -> tuple[list[Agent], dict[str, str]]:
    """(agents that can run ``cell``, host -> first reason for each that cannot)."""
    fit, why = [], {}
    for agent in agents:
        reason = cell_requirement(cell, agent.profile)
        if reason is None:
            fit.append(agent)
        else:
            why[agent.host] = reason
    return fit, why


def comparison_groups(cells: list[PlannedCell], comparisons: list[Sides]) -> list[list[PlannedCell]]:
    """The A/B groups: one agent measures a group's cells together, interleaved process by process.

    For each comparison, the cells it takes part in (its baseline's and candidate's; without a
    candidate, every cell) that differ only in its axes are linked. A group is a set of cells
    linked directly or through others, so a cell in two comparisons joins both into one group,
    and each comparison's A and B cells run interleaved on one agent. Inside a group cells are ordered by their
    compared axes' values (first seen first), and groups alternate which side starts (A B,
    then B A, ...) so an order effect does not favour one side.
    """
    parent = list(range(len(cells)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for baseline, candidate in comparisons:
        axes = set(baseline)
        first: dict[tuple, int] = {}
        for i, cell in enumerate(cells):
            if candidate is None or has_values(cell.params, baseline) or has_values(cell.params, candidate):
                rest = tuple(sorted((k, repr(v)) for k, v in cell.params.items() if k not in axes))
                parent[root(i)] = root(first.setdefault(rest, i))
    keys = list(dict.fromkeys(k for baseline, _ in comparisons for k in baseline))
    rank: dict[tuple, int] = {}
    for cell in cells:
        for k in keys:
            rank.setdefault((k, repr(cell.params.get(k))), len(rank))
    groups: dict[int, list[int]] = {}
    for i in range(len(cells)):
        groups.setdefault(root(i), []).append(i)
    return [sorted((cells[i] for i in members), reverse=bool(n % 2),
                   key=lambda c: tuple(rank[(k, repr(c.params.get(k)))] for k in keys))
            for n, members in enumerate(groups.values())]


def place(cells: list[PlannedCell], agents: list[Agent], comparisons: list[Sides] | None = None,
          done: set[tuple[str, str]] = frozenset()) -> tuple[list[Placement], dict[str, dict[str, str]]]:
    """Placements for every (group, class) or (group, machine) still to measure, and the
    cells no agent can run (cell id -> host -> reason). ``comparisons`` make the A/B groups
    (none: cells that differ only in ref). ``done`` holds (cell id, class) pairs the store
    already has."""
    placements: list[Placement] = []
    unmatched: dict[str, dict[str, str]] = {}
    # Cells that ask the same of an agent (one hardware spec, one gpus value) go to the same
    # places, so agents are matched once per requirement, not once per cell.
    # requirement -> ({(class, node id for `per: machine`): its name in `done`}, host -> reason)
    by_need: dict[tuple, tuple[dict[tuple, str], dict[str, str]]] = {}
    spots: dict[str, dict[tuple, str]] = {}
    for cell in cells:
        need = requirement_key(cell)
        if need not in by_need:
            fit, why = matching_agents(cell, agents)
            if cell.matrix.hardware.per == "machine":
                by_need[need] = ({(a.hw_class, a.node_id): f"host:{a.host}" for a in fit}, why)
            else:
                by_need[need] = ({(a.hw_class, None): a.hw_class for a in fit}, why)
        spots[cell.cell_id], why = by_need[need]
        if not spots[cell.cell_id]:
            unmatched[cell.cell_id] = dict(why) or {"-": "no agent is enrolled"}
    for group in comparison_groups([c for c in cells if spots[c.cell_id]], comparisons or [({"ref": None}, None)]):
        targets: dict[tuple, list[PlannedCell]] = {}
        for cell in group:
            for key, name in spots[cell.cell_id].items():
                if (cell.cell_id, name) not in done:
                    targets.setdefault(key, []).append(cell)
        placements += [Placement(cells=members, hw_class=hw_class, node_id=node_id)
                       for (hw_class, node_id), members in targets.items()]
    return placements, unmatched
