"""`hwmatrix probe`: this machine's hardware profile and class."""
from __future__ import annotations

from coordinator.errors import EXIT_OK, UserError


def add_parser(sub) -> None:
    probe = sub.add_parser("probe", help="print this machine's hardware profile")
    probe.add_argument("--format", choices=["json", "yaml", "table"], default="json")
    probe.set_defaults(func=run)


def run(args) -> int:
    from agent.machine.output import format_profile
    from agent.machine.probe import probe
    from agent.machine.profile import ProfileError

    try:
        print(format_profile(probe(), args.format))
    except ProfileError as exc:
        raise UserError(str(exc)) from None
    return EXIT_OK
