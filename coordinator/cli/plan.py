"""`hwmatrix plan FILE`: validate, expand, show the builds and which cells this machine (or a
cluster's agents) can run."""
from __future__ import annotations

from coordinator.cli.options import max_cells_option, use_token


def add_parser(sub) -> None:
    plan = sub.add_parser("plan", help="validate a matrix and print its expanded cells")
    plan.add_argument("file")
    plan.add_argument("--address", default=None, help="HOST:PORT of a cluster: match cells against its agents")
    plan.add_argument("--token-file", default=None, help="the cluster's Ray auth token file")
    max_cells_option(plan)
    plan.set_defaults(func=run)


def run(args) -> int:
    from coordinator.planning.preview import print_cluster_plan, print_plan

    if not args.address:
        return print_plan(args.file, args.max_cells)
    use_token(args)
    from coordinator.cluster.head import connect
    from coordinator.planning.plan import load_plan
    from coordinator.cluster.run import cluster_agents

    load_plan(args.file, args.max_cells)   # a malformed file is reported before any connection
    connect(args.address, args.token_file)
    return print_cluster_plan(args.file, cluster_agents(), args.max_cells)
