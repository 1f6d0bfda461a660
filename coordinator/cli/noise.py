"""`hwmatrix noise`: the machine's noise figure from stored records, per hardware class and metric."""
from __future__ import annotations

from coordinator.cli.options import selected_records, selection_options, store_options
from coordinator.errors import EXIT_OK, UserError


def add_parser(sub) -> None:
    noise = sub.add_parser("noise", help="between-process CV per hardware class and metric, and the "
                                         "smallest change it resolves")
    store_options(noise)
    selection_options(noise)
    noise.add_argument("-n", type=int, default=10, help="processes per side to quote the figure at (default 10)")
    noise.add_argument("--change", type=float, default=0.05,
                       help="the change to count processes for, as a fraction (default 0.05)")
    noise.add_argument("--min-effect", type=float, default=0.02, help="the verdict rule's smallest change")
    noise.set_defaults(func=run)


def run(args) -> int:
    from tabulate import tabulate

    from coordinator.results.noise import noise_figures, noise_headers, noise_table
    from coordinator.results.stats import Settings

    if args.n < 2:
        raise UserError("-n must be at least 2 processes per side")
    if not 0 < args.change < 1:
        raise UserError("--change is a fraction between 0 and 1, e.g. 0.05 for 5%")
    store, records = selected_records(args)
    figures = noise_figures(records)
    if not figures:
        raise UserError(f"no measured ok records with engine processes in {store.url} for that selection")
    settings = Settings(min_effect=args.min_effect)
    print(tabulate(noise_table(figures, settings, args.n, args.change), headers=noise_headers(args.n, args.change),
                   tablefmt="simple", disable_numparse=True))
    left_out = sum(f.left_out for f in figures)
    print(f"\nprocess CV: between engine processes, pooled over each class's cells; resolves: the smallest "
          f"change called with 80% power at 95% confidence (never below min_effect "
          f"{settings.min_effect * 100:g}%)" + (f"; {left_out} record metric(s) without engine processes left out"
                                                 if left_out else ""))
    return EXIT_OK
