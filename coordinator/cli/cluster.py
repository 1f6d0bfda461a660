"""`hwmatrix cluster up|down` (the coordinator's Ray head) and `hwmatrix agents` (who is enrolled)."""
from __future__ import annotations

from coordinator.cli.options import use_token


def add_parser(sub) -> None:
    cluster = sub.add_parser("cluster", help="start or stop the coordinator's Ray head (token auth on)")
    cluster.add_argument("action", choices=["up", "down"])
    cluster.add_argument("--bind", default="127.0.0.1", help="the address agents reach the head on")
    cluster.add_argument("--port", type=int, default=6379)
    cluster.add_argument("--token-file", default=None, help="where the token is (made if missing, mode 0600)")
    cluster.add_argument("--bench", action="store_true", help="let the head machine run cells too")
    cluster.add_argument("--block", action="store_true", help="stay in the foreground (systemd)")
    cluster.set_defaults(func=run)


def add_agents_parser(sub) -> None:
    agents = sub.add_parser("agents", help="enrolled agents by hardware class: idle, busy or lost")
    agents.add_argument("--address", required=True)
    agents.add_argument("--token-file", default=None)
    agents.set_defaults(func=run_agents)


def run(args) -> int:
    from coordinator.cluster.head import cluster_down, cluster_up

    if args.action == "down":
        return cluster_down()
    return cluster_up(args.bind, args.port, args.token_file, args.bench, args.block)


def run_agents(args) -> int:
    use_token(args)
    from coordinator.cluster.head import list_agents

    return list_agents(args.address, args.token_file)
