"""`hwmatrix report`: stored records as markdown / csv / json / html, or a SQLite export."""
from __future__ import annotations

from coordinator.cli.options import axis_value, open_store, store_options
from coordinator.errors import EXIT_OK, UserError
from coordinator.reports import FORMATS, format_names, render


def add_parser(sub) -> None:
    text = " / ".join(f.name for f in FORMATS.values() if not f.binary)
    rep = sub.add_parser("report", help=f"{text} report of stored records")
    store_options(rep)
    rep.add_argument("--run", action="append", help="run id (repeatable; default: every run in the store)")
    rep.add_argument("--matrix", default=None, help="only records of this matrix name")
    rep.add_argument("--ref", default=None, help="only this ref (its name in the matrix, git ref or commit prefix)")
    rep.add_argument("--class", dest="hw_class", default=None, help="only this hardware class")
    rep.add_argument("--since", default=None, help="only records finished on or after this ISO date")
    rep.add_argument("--until", default=None, help="only records finished on or before this ISO date")
    rep.add_argument("--format", choices=format_names(binary=False), default="md")
    rep.add_argument("--export", choices=format_names(binary=True), default=None,
                     help="a binary format, written to --out; sqlite: llama-bench's SQLite schema (llama_bench "
                          "table) for compare-llama-bench.py")
    rep.add_argument("--out", default=None, help="write to this file instead of stdout")
    rep.add_argument("--baseline", type=axis_value, default=None, help="AXIS=VALUE for the A/B section")
    rep.add_argument("--candidate", type=axis_value, default=None)
    rep.add_argument("--correction", choices=["holm", "bh"], default="holm")
    rep.add_argument("--bisect", default=None, metavar="ID", help="show this bisect (its culprit, path and totals)")
    rep.set_defaults(func=run)


def run(args) -> int:
    from coordinator.results.compare import comparisons
    from coordinator.results.records import load_checked, warn_skipped
    from coordinator.results.stats import Settings

    fmt = args.export or args.format
    if args.export and not args.out:
        raise UserError(f"--export {args.export} needs --out FILE")
    store = open_store(args)
    if args.bisect:
        return _bisect(store, args.bisect, args.out)
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


def _bisect(store, bisect_id: str, out: str | None) -> int:
    """A bisect from its journal in the store, as `hwmatrix bisect` printed it."""
    from agent.store.keys import StoreError
    from coordinator.bisect.lab import read_journal
    from coordinator.bisect.render import render

    try:
        journal = read_journal(store, bisect_id)
    except StoreError as exc:
        raise UserError(f"--bisect {bisect_id!r}: {exc}") from None
    if journal is None:
        raise UserError(f"no bisect {bisect_id!r} in {store.url}")
    text = render(journal)
    if out:
        with open(out, "w") as handle:
            handle.write(text + "\n")
        print(f"wrote bisect {bisect_id} to {out}")
    else:
        print(text)
    return EXIT_OK
