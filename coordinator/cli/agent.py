"""`hwmatrix agent join|flush`: this machine as a benchmark agent of a Ray cluster, and the
delivery of records it spooled (`agent volunteer` is in volunteers.py)."""
from __future__ import annotations

import sys

from agent.spec.clash import CLASH_POLICIES
from coordinator.cli.options import use_endpoint
from coordinator.errors import EXIT_OK, UserError


def add_parser(sub):
    """The `agent` command and its sub-commands; returns them for `agent volunteer`."""
    agent = sub.add_parser("agent", help="this machine as a benchmark agent")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)
    join = agent_sub.add_parser("join", help="probe, then join a cluster as a Ray worker labelled with the profile")
    join.add_argument("--address", required=True, help="HOST:PORT printed by `hwmatrix cluster up`")
    join.add_argument("--token-file", default=None, help="the head's token file, copied here")
    join.add_argument("--block", action="store_true", help="stay in the foreground (systemd)")
    join.set_defaults(func=run_join)
    flush = agent_sub.add_parser("flush", help="deliver the records spooled on this machine")
    flush.add_argument("--endpoint-url", default=None, help="an S3-compatible endpoint (default: $AWS_ENDPOINT_URL)")
    flush.add_argument("--on-clash", choices=CLASH_POLICIES, default=None,
                       help="deliver records the store refused as a clash, with this policy")
    flush.set_defaults(func=run_flush)
    return agent_sub


def run_join(args) -> int:
    from agent.cluster.enroll import EnrollError, join

    try:
        return join(args.address, args.token_file, args.block)
    except EnrollError as exc:
        raise UserError(str(exc)) from None


def run_flush(args) -> int:
    """Deliver this machine's spooled records with its own credentials (file:// or s3://)."""
    from agent.store import spool

    use_endpoint(args)
    waiting = spool.pending()
    delivered, errors = spool.flush(policy=args.on_clash, delays=(1, 2, 4))
    print(f"{len(delivered)} of {len(waiting)} spooled record(s) delivered")
    for error in errors:
        print(f"  still spooled: {error}", file=sys.stderr)
    return EXIT_OK if not errors else 1
