"""`hwmatrix import FILE --as LABEL`: a posted llama-bench / sweep-bench result, as records."""
from __future__ import annotations

import sys

from agent.spec.registry import ENGINES
from coordinator.cli.options import run_id_arg, store_options, store_url
from coordinator.errors import EXIT_OK, UserError


def add_parser(sub) -> None:
    imp = sub.add_parser("import", help="import a posted llama-bench / sweep-bench result as records")
    imp.add_argument("file")
    imp.add_argument("--as", dest="label", required=True, help='what it ran on, e.g. "TR 3955WX 2x3090+A4500"')
    imp.add_argument("--engine", choices=list(ENGINES), default=None)
    store_options(imp)
    imp.add_argument("--run-id", default=None, type=run_id_arg)
    imp.set_defaults(func=run)


def run(args) -> int:
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
