"""`hwmatrix compare --baseline AXIS=A --candidate AXIS=B`: A/B verdicts per cell and class."""
from __future__ import annotations

from coordinator.cli.options import axis_value, open_store, store_options
from coordinator.errors import EXIT_OK, UserError


def add_parser(sub) -> None:
    compare = sub.add_parser("compare", help="A/B verdicts per cell and hardware class")
    compare.add_argument("--baseline", required=True, type=axis_value, help="AXIS=VALUE, e.g. ref=pr517")
    compare.add_argument("--candidate", required=True, type=axis_value, help="AXIS=VALUE, e.g. ref=pr518")
    compare.add_argument("--run", default=None, help="only this run id (default: every run in the store)")
    store_options(compare)
    compare.add_argument("--min-effect", type=float, default=0.02, help="smallest change called slower/faster")
    compare.add_argument("--test", choices=["auto", "yuen", "welch", "mann-whitney"], default="auto",
                         help="auto: the estimator's own (trimmed: yuen; median: mann-whitney; mean: welch or mann-whitney)")
    compare.add_argument("--estimator", choices=["trimmed", "mean", "median"], default="trimmed",
                         help="each side's centre: 20%% trimmed mean (default), mean or median")
    compare.add_argument("--correction", choices=["holm", "bh"], default="holm")
    compare.set_defaults(func=run)


def run(args) -> int:
    from coordinator.results.compare import comparisons, render_comparisons
    from coordinator.results.records import load_checked, warn_skipped
    from coordinator.results.stats import Settings

    if list(args.baseline) != list(args.candidate):
        raise UserError("--baseline and --candidate must name the same axis")
    store = open_store(args)
    loaded = load_checked(store, args.run)
    warn_skipped(loaded.skipped)
    records = loaded.records
    if not records:
        raise UserError(f"no records in {store.url}" + (f" for run {args.run}" if args.run else ""))
    # axis values in records are typed (ints, bools); match them as text like the command line
    for rec in records:
        rec["params"] = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in rec["params"].items()}
    settings = Settings(min_effect=args.min_effect, test=args.test, correction=args.correction,
                        estimator=args.estimator)
    rows = comparisons(records, args.baseline, args.candidate, settings)
    if not rows:
        raise UserError(f"no cell has ok records for both {args.baseline} and {args.candidate} on one hardware class")
    print(render_comparisons(rows, settings))
    return EXIT_OK
