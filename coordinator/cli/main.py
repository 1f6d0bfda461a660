"""The `hwmatrix` command line: probe, plan, run, compare, bisect, report, import, cluster, agents, volunteers.

Exit codes: 0 success; 1 the run finished but some cells did not measure (their records
say why); 2 bad input (a malformed matrix, unmatched cells, a bad option); 3 the store could
not be read or written (down, refused, no credentials) - always with a one-line message,
never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from agent.engine.cache_prune import build_cache_limit
from agent.store.keys import StoreError
from coordinator.cli import (ab, agent, bisect, cluster, compare, history, imports, noise, plan, probe, report, run,
                             selftest, volunteers)
from coordinator.cli import site as site_command
from coordinator.errors import EXIT_BAD_INPUT, EXIT_OK, UserError

EXIT_STORE = 3


def build_parser() -> argparse.ArgumentParser:
    """One sub-command per module of coordinator/cli/, in the order `--help` lists them."""
    parser = argparse.ArgumentParser(prog="hwmatrix", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    probe.add_parser(sub)
    plan.add_parser(sub)
    run.add_parser(sub)
    cluster.add_parser(sub)
    agent_sub = agent.add_parser(sub)
    volunteers.add_commands(sub, agent_sub)
    cluster.add_agents_parser(sub)
    compare.add_parser(sub)
    ab.add_parser(sub)
    bisect.add_parser(sub)
    imports.add_parser(sub)
    report.add_parser(sub)
    selftest.add_parser(sub)
    noise.add_parser(sub)
    history.add_parser(sub)
    site_command.add_parser(sub)
    site_command.add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        try:            # read by every build; a bad value is said now, not as each cell's build error
            build_cache_limit()
        except ValueError as exc:
            raise UserError(str(exc)) from None
        return args.func(args)
    except UserError as exc:
        print(f"hwmatrix: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreError as exc:
        print(f"hwmatrix: store: {exc}", file=sys.stderr)
        return EXIT_STORE
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        print("hwmatrix: interrupted", file=sys.stderr)
        return 130
