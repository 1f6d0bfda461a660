"""The `hwmatrix` command line: probe, plan, run, compare, report, import, cluster, agents, volunteers.

Exit codes: 0 success; 1 the run finished but some cells did not measure (their records
say why); 2 bad input (a malformed matrix, unmatched cells, a bad option); 3 the store could
not be read or written (down, refused, no credentials) - always with a one-line message,
never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from agent.store.file import CLASH_POLICIES, StoreError
from coordinator.cli.options import max_cells_option, run_id_arg, store_options, store_url, use_endpoint
from coordinator.errors import EXIT_BAD_INPUT, EXIT_OK, UserError
from coordinator.cli.volunteers import add_commands as add_volunteer_commands

EXIT_STORE = 3


def _open_store(args):
    from agent.store.file import open_store

    try:
        return open_store(store_url(args))
    except StoreError as exc:
        raise UserError(str(exc)) from None


def cmd_probe(args) -> int:
    from agent.machine.probe import ProfileError, format_profile, probe

    try:
        print(format_profile(probe(), args.format))
    except ProfileError as exc:
        raise UserError(str(exc)) from None
    return EXIT_OK


def _use_token(args) -> None:
    """Token auth on before ray is imported (Ray reads it at import); a cluster on this
    machine is joined on loopback, which Ray also decides at import."""
    from agent.cluster.auth import TokenError, use_token
    from coordinator.cluster.loopback import keep_ray_on_loopback

    keep_ray_on_loopback(args.address)
    try:
        use_token(args.token_file)
    except TokenError as exc:
        raise UserError(str(exc)) from None


def cmd_plan(args) -> int:
    from coordinator.planning.plan import print_cluster_plan, print_plan

    if not args.address:
        return print_plan(args.file, args.max_cells)
    _use_token(args)
    from coordinator.cluster.head import connect
    from coordinator.planning.plan import load_plan
    from coordinator.cluster.run import cluster_agents

    load_plan(args.file, args.max_cells)   # a malformed file is reported before any connection
    connect(args.address, args.token_file)
    return print_cluster_plan(args.file, cluster_agents(), args.max_cells)


def cmd_run(args) -> int:
    if args.address:
        _use_token(args)
    from coordinator.cluster.run import run_matrix

    return run_matrix(args.file, store_url=store_url(args), run_id=args.run_id, fresh=args.fresh,
                      skip_unmatched=args.skip_unmatched, address=args.address, token_file=args.token_file,
                      on_clash=args.on_clash, max_cells=args.max_cells)


def cmd_cluster(args) -> int:
    from coordinator.cluster.head import cluster_down, cluster_up

    if args.action == "down":
        return cluster_down()
    return cluster_up(args.bind, args.port, args.token_file, args.bench, args.block)


def cmd_agent_join(args) -> int:
    from agent.cluster.enroll import EnrollError, join

    try:
        return join(args.address, args.token_file, args.block)
    except EnrollError as exc:
        raise UserError(str(exc)) from None


def cmd_agents(args) -> int:
    _use_token(args)
    from coordinator.cluster.head import list_agents

    return list_agents(args.address, args.token_file)


def _axis_value(text: str) -> dict:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected AXIS=VALUE (e.g. ref=pr517), got {text!r}")
    axis, value = text.split("=", 1)
    return {axis: value}


def cmd_compare(args) -> int:
    from coordinator.results.compare import comparisons, render_comparisons
    from coordinator.results.records import load_checked, warn_skipped
    from coordinator.results.stats import Settings

    if list(args.baseline) != list(args.candidate):
        raise UserError("--baseline and --candidate must name the same axis")
    store = _open_store(args)
    loaded = load_checked(store, args.run)
    warn_skipped(loaded.skipped)
    records = loaded.records
    if not records:
        raise UserError(f"no records in {store.url}" + (f" for run {args.run}" if args.run else ""))
    # axis values in records are typed (ints, bools); match them as text like the command line
    for rec in records:
        rec["params"] = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in rec["params"].items()}
    settings = Settings(min_effect=args.min_effect, test=args.test, correction=args.correction)
    rows = comparisons(records, args.baseline, args.candidate, settings)
    if not rows:
        raise UserError(f"no cell has ok records for both {args.baseline} and {args.candidate} on one hardware class")
    print(render_comparisons(rows, settings))
    return EXIT_OK


def cmd_import(args) -> int:
    from coordinator.results.importers import ImportFailed, import_file

    try:
        done = import_file(args.file, args.label, args.engine, store_url(args), args.run_id)
    except ImportFailed as exc:
        raise UserError(str(exc)) from None
    from agent.spec.printable import printable

    for note in done.notes[:50]:       # rows the parsers skipped, with their line numbers
        print(f"hwmatrix: note: {args.file}: {printable(note)}", file=sys.stderr)
    if len(done.notes) > 50:
        print(f"hwmatrix: note: {args.file}: ... and {len(done.notes) - 50} more notes", file=sys.stderr)
    repeats = f"; {done.duplicates} duplicate row(s) dropped" if done.duplicates else ""
    print(f"imported {len(done.keys)} records from {args.file} as {args.label!r} into run {done.run_id}{repeats}")
    return EXIT_OK


def cmd_report(args) -> int:
    from coordinator.results.compare import comparisons
    from coordinator.results.records import load_checked, warn_skipped
    from coordinator.reports import render
    from coordinator.results.stats import Settings

    fmt = "sqlite" if args.export == "sqlite" else args.format
    if fmt == "sqlite" and not args.out:
        raise UserError("--export sqlite needs --out FILE")
    store = _open_store(args)
    filters = {"matrix": args.matrix, "ref": args.ref, "hw_class": args.hw_class, "since": args.since,
               "until": args.until}
    loaded = [load_checked(store, run, **filters) for run in (args.run or [None])]
    records = [r for got in loaded for r in got.records]
    skipped = [s for got in loaded for s in got.skipped]
    warn_skipped(skipped)
    if not records:
        raise UserError(f"no records in {store.url} for that selection")
    settings = Settings(correction=args.correction)
    rows = []
    if args.baseline or args.candidate:
        if not (args.baseline and args.candidate) or list(args.baseline) != list(args.candidate):
            raise UserError("--baseline and --candidate go together and name the same axis")
        rows = comparisons(records, args.baseline, args.candidate, settings)
    out = render(fmt, records, rows, args.out, correction=settings.correction, skipped=skipped)
    if args.out:
        print(f"wrote {fmt} report of {len(records)} records to {args.out}")
    else:
        print(out)
    return EXIT_OK


def cmd_agent_flush(args) -> int:
    """Deliver this machine's spooled records with its own credentials (file:// or s3://)."""
    from agent.store import spool

    use_endpoint(args)
    waiting = spool.pending()
    delivered, errors = spool.flush(policy=args.on_clash, delays=(1, 2, 4))
    print(f"{len(delivered)} of {len(waiting)} spooled record(s) delivered")
    for error in errors:
        print(f"  still spooled: {error}", file=sys.stderr)
    return EXIT_OK if not errors else 1


def cmd_selftest(args) -> int:
    from coordinator.cluster.selftest import selftest

    return selftest(rounds=args.rounds, reps=args.repetitions, store_url=args.store)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwmatrix", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    probe = sub.add_parser("probe", help="print this machine's hardware profile")
    probe.add_argument("--format", choices=["json", "yaml", "table"], default="json")
    probe.set_defaults(func=cmd_probe)

    plan = sub.add_parser("plan", help="validate a matrix and print its expanded cells")
    plan.add_argument("file")
    plan.add_argument("--address", default=None, help="HOST:PORT of a cluster: match cells against its agents")
    plan.add_argument("--token-file", default=None, help="the cluster's Ray auth token file")
    max_cells_option(plan)
    plan.set_defaults(func=cmd_plan)

    run = sub.add_parser("run", help="run a matrix on this machine (embedded Ray) and print the table")
    run.add_argument("file")
    store_options(run)
    run.add_argument("--on-clash", choices=CLASH_POLICIES, default="reject",
                     help="a stored ok record with other content at a cell's key: refuse and keep the new one "
                          "spooled (default), overwrite it, or store both")
    run.add_argument("--run-id", default=None, type=run_id_arg, help="name the run (default: derived from the matrix)")
    run.add_argument("--fresh", action="store_true", help="start a new run instead of resuming")
    run.add_argument("--skip-unmatched", action="store_true",
                     help="skip cells no agent matches instead of refusing to run")
    run.add_argument("--address", default=None,
                     help="HOST:PORT of a cluster (`hwmatrix cluster up`); default: an embedded Ray here")
    run.add_argument("--token-file", default=None,
                     help="the cluster's Ray auth token file (default: $HWMATRIX_TOKEN_FILE or "
                          "~/.config/hwmatrix/ray-token)")
    max_cells_option(run)
    run.set_defaults(func=cmd_run)

    cluster = sub.add_parser("cluster", help="start or stop the coordinator's Ray head (token auth on)")
    cluster.add_argument("action", choices=["up", "down"])
    cluster.add_argument("--bind", default="127.0.0.1", help="the address agents reach the head on")
    cluster.add_argument("--port", type=int, default=6379)
    cluster.add_argument("--token-file", default=None, help="where the token is (made if missing, mode 0600)")
    cluster.add_argument("--bench", action="store_true", help="let the head machine run cells too")
    cluster.add_argument("--block", action="store_true", help="stay in the foreground (systemd)")
    cluster.set_defaults(func=cmd_cluster)

    agent = sub.add_parser("agent", help="this machine as a benchmark agent")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)
    join = agent_sub.add_parser("join", help="probe, then join a cluster as a Ray worker labelled with the profile")
    join.add_argument("--address", required=True, help="HOST:PORT printed by `hwmatrix cluster up`")
    join.add_argument("--token-file", default=None, help="the head's token file, copied here")
    join.add_argument("--block", action="store_true", help="stay in the foreground (systemd)")
    join.set_defaults(func=cmd_agent_join)
    flush = agent_sub.add_parser("flush", help="deliver the records spooled on this machine")
    flush.add_argument("--endpoint-url", default=None, help="an S3-compatible endpoint (default: $AWS_ENDPOINT_URL)")
    flush.add_argument("--on-clash", choices=CLASH_POLICIES, default=None,
                       help="deliver records the store refused as a clash, with this policy")
    flush.set_defaults(func=cmd_agent_flush)
    add_volunteer_commands(sub, agent_sub)

    agents = sub.add_parser("agents", help="enrolled agents by hardware class: idle, busy or lost")
    agents.add_argument("--address", required=True)
    agents.add_argument("--token-file", default=None)
    agents.set_defaults(func=cmd_agents)

    compare = sub.add_parser("compare", help="A/B verdicts per cell and hardware class")
    compare.add_argument("--baseline", required=True, type=_axis_value, help="AXIS=VALUE, e.g. ref=pr517")
    compare.add_argument("--candidate", required=True, type=_axis_value, help="AXIS=VALUE, e.g. ref=pr518")
    compare.add_argument("--run", default=None, help="only this run id (default: every run in the store)")
    store_options(compare)
    compare.add_argument("--min-effect", type=float, default=0.02, help="smallest change called slower/faster")
    compare.add_argument("--test", choices=["auto", "welch", "mann-whitney"], default="auto")
    compare.add_argument("--correction", choices=["holm", "bh"], default="holm")
    compare.set_defaults(func=cmd_compare)

    imp = sub.add_parser("import", help="import a posted llama-bench / sweep-bench result as records")
    imp.add_argument("file")
    imp.add_argument("--as", dest="label", required=True, help='what it ran on, e.g. "TR 3955WX 2x3090+A4500"')
    imp.add_argument("--engine", choices=["llama.cpp", "ik_llama.cpp"], default=None)
    store_options(imp)
    imp.add_argument("--run-id", default=None, type=run_id_arg)
    imp.set_defaults(func=cmd_import)

    rep = sub.add_parser("report", help="markdown / csv / json / html report of stored records")
    store_options(rep)
    rep.add_argument("--run", action="append", help="run id (repeatable; default: every run in the store)")
    rep.add_argument("--matrix", default=None, help="only records of this matrix name")
    rep.add_argument("--ref", default=None, help="only this ref (its name in the matrix, git ref or commit prefix)")
    rep.add_argument("--class", dest="hw_class", default=None, help="only this hardware class")
    rep.add_argument("--since", default=None, help="only records finished on or after this ISO date")
    rep.add_argument("--until", default=None, help="only records finished on or before this ISO date")
    rep.add_argument("--format", choices=["md", "markdown", "csv", "json", "html"], default="md")
    rep.add_argument("--export", choices=["sqlite"], default=None,
                     help="write llama-bench's SQLite schema (llama_bench table) for compare-llama-bench.py")
    rep.add_argument("--out", default=None, help="write to this file instead of stdout")
    rep.add_argument("--baseline", type=_axis_value, default=None, help="AXIS=VALUE for the A/B section")
    rep.add_argument("--candidate", type=_axis_value, default=None)
    rep.add_argument("--correction", choices=["holm", "bh"], default="holm")
    rep.set_defaults(func=cmd_report)

    st = sub.add_parser("selftest", help="A/A experiment: the false-positive rate of verdicts on this machine")
    st.add_argument("--rounds", type=int, default=3, help="A/A runs, each corrected on its own (default 3)")
    st.add_argument("--repetitions", type=int, default=10,
                    help="engine processes per side and cell, one repetition each (default 10)")
    st.add_argument("--store", default=None, help="where its records go (default: <cache>/selftest-store)")
    st.set_defaults(func=cmd_selftest)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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

