"""What `hwmatrix plan` prints: every cell, its build, and where it would run (this
machine, or with --address each live agent of the cluster).
"""
from __future__ import annotations

import sys

from tabulate import tabulate

from agent.machine.probe import probe
from agent.machine.profile import ProfileError
from coordinator.errors import EXIT_OK, UserError
from coordinator.matrix.vocabulary import MAX_CELLS
from coordinator.planning.placement import matching_agents
from coordinator.planning.plan import cell_requirement, load_plan, requirement_key


def print_plan(path: str, max_cells: int = MAX_CELLS) -> int:
    """`plan`: per cell, its build and whether this machine runs it, or why not."""
    plan = load_plan(path, max_cells)
    try:
        profile = probe()
    except ProfileError as exc:
        raise UserError(str(exc)) from None
    pdict = profile.model_dump()
    rows, builds, n_match = [], {}, 0
    for cell in plan.cells:
        reason = cell_requirement(cell, pdict)
        n_match += reason is None
        builds.setdefault(cell.build_label, len(builds) + 1)
        rows.append((cell.cell_id, cell.label, cell.settings["tool"], f"#{builds[cell.build_label]}",
                     "yes" if reason is None else f"no: {reason}"))
    print(f"matrix {plan.name} ({plan.path}): {len(plan.cells)} cells, {len(builds)} builds, "
          f"run id {plan.default_run_id}")
    print(tabulate(rows, headers=["cell", "params", "tool", "build", f"runs here ({profile.hostname})"],
                   tablefmt="simple"))
    print("\nbuilds:")
    for label, n in builds.items():
        print(f"  #{n} {label}")
    print(f"\nthis machine ({profile.hostname}, class {profile.hardware_class}) matches {n_match} of "
          f"{len(plan.cells)} cells" + ("" if n_match else "; `hwmatrix run` would refuse them"))
    sys.stdout.flush()
    crowded = crowded_cells(plan.cells, profile.cpu.threads)
    if crowded:
        print(f"hwmatrix: warning: {len(crowded)} cell(s) run with threads >= this machine's {profile.cpu.threads} "
              f"CPUs ({', '.join(crowded[:5])}{', ...' if len(crowded) > 5 else ''}): the engine then competes "
              "with hwmatrix and every other process for each core, so its numbers vary more; threads <= "
              f"{max(1, profile.cpu.threads - 1)} leaves one free", file=sys.stderr)
    return EXIT_OK


def crowded_cells(cells, cpus: int) -> list[str]:
    """The cells whose engine asks for every CPU of a machine with ``cpus`` or more."""
    return [c.cell_id for c in cells if (c.tool_args().get("threads") or 0) >= cpus]


def print_cluster_plan(path: str, agents, max_cells: int = MAX_CELLS) -> int:
    """`plan --address`: per cell, the agents that match it, or each agent's first reason not to."""
    plan = load_plan(path, max_cells)
    rows, n_match, by_need = [], 0, {}
    for cell in plan.cells:
        need = requirement_key(cell)
        if need not in by_need:
            by_need[need] = matching_agents(cell, agents)
        fit, why = by_need[need]
        n_match += bool(fit)
        where = ", ".join(sorted(a.host for a in fit)) if fit else "none"
        reasons = "; ".join(f"{host}: {reason}" for host, reason in sorted(why.items()))
        rows.append((cell.cell_id, cell.label, where, reasons or "-"))
    print(f"matrix {plan.name} ({plan.path}): {len(plan.cells)} cells, {len(agents)} live agent(s), "
          f"run id {plan.default_run_id}")
    print(tabulate(rows, headers=["cell", "params", "agents that match", "why the others do not"],
                   tablefmt="simple"))
    print(f"\n{n_match} of {len(plan.cells)} cells have an agent" +
          ("" if n_match == len(plan.cells) else "; `hwmatrix run` refuses the rest unless --skip-unmatched"))
    sys.stdout.flush()
    return EXIT_OK
