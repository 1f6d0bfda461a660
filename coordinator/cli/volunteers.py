"""`hwmatrix volunteers ...` (the coordinator's side) and `hwmatrix agent volunteer` (the donor's)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
import threading
from pathlib import Path

from tabulate import tabulate

from agent.store.backends import BACKENDS, backend
from agent.store.keys import StoreError
from coordinator.cli.options import max_cells_option, run_id_arg, store_options, store_url
from coordinator.errors import EXIT_OK, UserError


def default_state_dir() -> str:
    """$HWMATRIX_VOLUNTEERS, else ~/.local/share/hwmatrix/volunteers (coordinator side)."""
    return os.environ.get("HWMATRIX_VOLUNTEERS") or str(
        Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "hwmatrix" / "volunteers")


def _ledger(args):
    from coordinator.volunteers.ledger import Ledger

    return Ledger(args.state)


def _refused(call):
    from coordinator.volunteers.ledger import Refused

    try:
        return call()
    except Refused as exc:
        raise UserError(str(exc)) from None


def cmd_serve(args) -> int:
    from coordinator.volunteers.workapi_http import self_signed, serve

    ledger = _ledger(args)
    days = 24 * 3600
    ledger.configure(key_ttl_s=args.key_ttl_days * days if args.key_ttl_days else None,
                     rotate_after_s=args.rotate_after_days * days if args.rotate_after_days else None,
                     grace_s=args.grace_s)
    if bool(args.cert) != bool(args.key):
        raise UserError("give both --cert and --key, or neither (a self-signed certificate is made)")
    cert, key = ((Path(args.cert), Path(args.key)) if args.cert
                 else self_signed(Path(args.state) / "tls", [args.host]))
    try:
        server = serve(ledger, args.host, args.port, cert, key, args.lease_s, args.replicate)
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    host, port = server.server_address[:2]
    print(f"certificate: {cert}" + ("" if args.cert else " (self-signed: give it to agents as --ca-cert)"))
    print(f"serving https://{host}:{port} (state {ledger.path}; lease {args.lease_s:g} s; "
          f"replicate {args.replicate:g})", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return EXIT_OK


def cmd_invite(args) -> int:
    code = _ledger(args).invite(ttl_s=args.expires_h * 3600, approved=args.approved)
    print(code)
    print(f"one-time enrollment code, valid {args.expires_h:g} h"
          + (", pre-approved" if args.approved else "; approve the agent after it enrolls"), file=sys.stderr)
    return EXIT_OK


def cmd_approve(args) -> int:
    _refused(lambda: _ledger(args).approve(args.agent))
    print(f"approved {args.agent}")
    return EXIT_OK


def cmd_revoke(args) -> int:
    back = _refused(lambda: _ledger(args).revoke(args.agent))
    print(f"revoked {args.agent}; {back} lease(s) back in the queue")
    return EXIT_OK


def cmd_list(args) -> int:
    """Everything an agent sent (its name, class, a verdict's detail) is shown escaped
    (agent.spec.printable): a name must not set the terminal's title or draw a fake row."""
    from agent.spec.printable import printable

    ledger = _ledger(args)
    agents, claims, checks = ledger.agents(), ledger.claims(), ledger.checks()
    if args.format == "json":     # ensure_ascii (the default) writes every control character as \uXXXX
        print(json.dumps({"agents": agents, "claims": claims, "checks": checks}, indent=2, default=str,
                         ensure_ascii=True))
        return EXIT_OK
    rows = [[printable(c) for c in (
        a["agent_id"], a["name"], a["state"], a["hardware_class"], ", ".join(a["keys"]) or "-", a["leases"],
        f"{a['agreed']}/{a['disagreed']}", f"{ledger.recheck_rate(a['agent_id'], 0.1):.2f}")] for a in agents]
    print(tabulate(rows, headers=["agent", "name", "state", "class", "keys", "leases", "agree/disagree",
                                  "recheck@0.1"]) if rows else "no agents enrolled")
    states: dict[str, int] = {}
    for claim in claims:
        states[f"{claim['role']} {claim['state']}"] = states.get(f"{claim['role']} {claim['state']}", 0) + 1
    print(f"\n{ledger.queued_cells()} cells queued; claims by class: "
          + printable(", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none yet"))
    for check in checks:
        try:
            agents_text = ", ".join(map(str, json.loads(check["agents"])))
        except (TypeError, ValueError):
            agents_text = str(check["agents"])
        print(printable(f"cross-check {check['cell_id']} ({agents_text}): {check['verdict']} {check['detail']}"))
    return EXIT_OK


def cmd_queue(args) -> int:
    from coordinator.planning.plan import build_targets, load_plan

    url = store_url(args)
    try:
        grants = backend(url).grants
    except StoreError as exc:
        raise UserError(str(exc)) from None
    if not grants:
        raise UserError(f"volunteer agents upload through presigned URLs: give a --store that grants them "
                        f"({', '.join(b.url_form for b in BACKENDS.values() if b.grants)})")
    plan = load_plan(args.file, args.max_cells)
    by_path = sorted({cell.model_name for cell in plan.cells if getattr(cell.model, "path", None)})
    if by_path:
        raise UserError(f"{args.file}: models {', '.join(by_path)} are files on this machine; volunteers "
                        "run only generated models")
    run_id = args.run_id or plan.default_run_id
    targets = build_targets(plan.cells)
    ledger, added = _ledger(args), 0
    for cell in plan.cells:
        spec = cell.to_spec(run_id, url, targets[cell.build_order], one_per_class=True)
        need = {"hardware": plan.matrix.hardware.model_dump(mode="json", exclude_none=True),
                "gpus": cell.settings.get("gpus")}
        added += ledger.queue(run_id, cell.cell_id, spec.model_dump(mode="json"), need, url, args.replicate)
    print(f"queued {added} cells of run {run_id} for volunteers ({len(plan.cells) - added} were queued before)")
    return EXIT_OK


def cmd_agent_volunteer(args) -> int:
    from agent.volunteer.loop import main

    state = args.state or str(Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "hwmatrix"
                              / "volunteer")
    return main(args.coordinator, args.code, args.policy, state, args.ca_cert, args.name, args.max_cells,
                args.exit_when_idle, args.poll_s, args.code_file)


def add_commands(sub, agent_sub) -> None:
    vol = sub.add_parser("volunteers", help="donated machines: the HTTPS work API, invites and agents")
    vsub = vol.add_subparsers(dest="volunteers_command", required=True)

    def state(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state", default=default_state_dir(),
                       help="the volunteer ledger's dir (default: $HWMATRIX_VOLUNTEERS or "
                            "~/.local/share/hwmatrix/volunteers)")

    serve = vsub.add_parser("serve", help="run the work API over HTTPS")
    state(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    serve.add_argument("--cert", default=None, help="TLS certificate (PEM); default: a self-signed one")
    serve.add_argument("--key", default=None, help="its private key (PEM)")
    serve.add_argument("--lease-s", type=float, default=120, help="a lease without heartbeat lapses after this")
    serve.add_argument("--replicate", type=float, default=0.1,
                       help="base fraction of volunteer cells re-measured on a second agent of the class")
    serve.add_argument("--key-ttl-days", type=float, default=None, help="keys expire after this (default 90)")
    serve.add_argument("--rotate-after-days", type=float, default=None,
                       help="agents are asked to rotate keys older than this (default 30)")
    serve.add_argument("--grace-s", type=float, default=None,
                       help="an old key keeps working this long after rotation (default 3600)")
    serve.set_defaults(func=cmd_serve)

    invite = vsub.add_parser("invite", help="print a one-time enrollment code")
    state(invite)
    invite.add_argument("--expires-h", type=float, default=24)
    invite.add_argument("--approved", action="store_true", help="the agent enrolling with it needs no approval")
    invite.set_defaults(func=cmd_invite)
    for name, func, text in (("approve", cmd_approve, "let an enrolled agent take work"),
                             ("revoke", cmd_revoke, "refuse an agent from its next call on")):
        p = vsub.add_parser(name, help=text)
        p.add_argument("agent")
        state(p)
        p.set_defaults(func=func)
    lst = vsub.add_parser("list", help="agents, their keys' fingerprints and track records; the queue")
    state(lst)
    lst.add_argument("--format", choices=["table", "json"], default="table")
    lst.set_defaults(func=cmd_list)
    queue = vsub.add_parser("queue", help="offer a matrix's cells to volunteers")
    queue.add_argument("file")
    state(queue)
    store_options(queue)
    queue.add_argument("--run-id", default=None, type=run_id_arg)
    queue.add_argument("--replicate", type=float, default=None,
                       help="this run's base replication fraction (default: the server's --replicate)")
    max_cells_option(queue)
    queue.set_defaults(func=cmd_queue)

    vol_agent = agent_sub.add_parser("volunteer", help="donate this machine: enroll, then pull work over HTTPS")
    vol_agent.add_argument("--coordinator", required=True, help="https://HOST:PORT of `hwmatrix volunteers serve`")
    code = vol_agent.add_mutually_exclusive_group()
    code.add_argument("--code", default=None,
                      help="one-time enrollment code (first start only); '-' reads it from stdin")
    code.add_argument("--code-file", default=None,
                      help="read the enrollment code from this file's first line (so it does not show in ps)")
    vol_agent.add_argument("--policy", required=True, help="the owner's policy YAML (what this machine allows)")
    vol_agent.add_argument("--ca-cert", default=None, help="the coordinator's certificate, if self-signed")
    vol_agent.add_argument("--state", default=None,
                           help="where the key and the hours ledger live (default ~/.config/hwmatrix/volunteer)")
    vol_agent.add_argument("--name", default=None, help="how the coordinator lists this machine (default: hostname)")
    vol_agent.add_argument("--max-cells", type=int, default=None, help="stop after this many cells (0: enroll, then exit)")
    vol_agent.add_argument("--exit-when-idle", action="store_true", help="stop when no work fits this machine")
    vol_agent.add_argument("--poll-s", type=float, default=30.0, help="wait between polls when idle or paused")
    vol_agent.set_defaults(func=cmd_agent_volunteer)
