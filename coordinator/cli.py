"""The `hwmatrix` command line: probe, plan, run.

Exit codes: 0 success; 1 the run finished but some cells did not measure (their records
say why); 2 bad input (a malformed matrix, unmatched cells, a bad option) - always with a
one-line message, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from coordinator.errors import EXIT_BAD_INPUT, EXIT_OK, UserError


def cmd_probe(args) -> int:
    from agent.probe import ProfileError, format_profile, probe

    try:
        print(format_profile(probe(), args.format))
    except ProfileError as exc:
        raise UserError(str(exc)) from None
    return EXIT_OK


def cmd_plan(args) -> int:
    from coordinator.plan import print_plan

    return print_plan(args.file)


def cmd_run(args) -> int:
    from coordinator.run import run_matrix

    return run_matrix(args.file, store_url=args.store, run_id=args.run_id, fresh=args.fresh,
                      skip_unmatched=args.skip_unmatched)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwmatrix", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    probe = sub.add_parser("probe", help="print this machine's hardware profile")
    probe.add_argument("--format", choices=["json", "yaml", "table"], default="json")
    probe.set_defaults(func=cmd_probe)

    plan = sub.add_parser("plan", help="validate a matrix and print its expanded cells")
    plan.add_argument("file")
    plan.set_defaults(func=cmd_plan)

    run = sub.add_parser("run", help="run a matrix on this machine (embedded Ray) and print the table")
    run.add_argument("file")
    run.add_argument("--store", default=None,
                     help="file://DIR (default: $HWMATRIX_STORE or ~/.local/share/hwmatrix/store)")
    run.add_argument("--run-id", default=None, help="name the run (default: derived from the matrix)")
    run.add_argument("--fresh", action="store_true", help="start a new run instead of resuming")
    run.add_argument("--skip-unmatched", action="store_true",
                     help="skip cells this machine does not match instead of refusing to run")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"hwmatrix: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        print("hwmatrix: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
