"""`hwmatrix history`: one series' values over runs or commits, and the changes in them."""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from coordinator.cli.options import selected_records, selection_options, store_options
from coordinator.errors import EXIT_BAD_INPUT, EXIT_OK, UserError
from coordinator.matrix.display import display


def _param(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected K=V (e.g. quant=Q4_0), got {text!r}")
    k, v = text.split("=", 1)
    return k, v


def add_parser(sub) -> None:
    history = sub.add_parser("history", help="one series (class, params, metric) over runs or commits, "
                                             "with the changes found in it and their likely cause")
    store_options(history)
    selection_options(history)
    history.add_argument("--metric", default=None, help="only this metric, e.g. tg_tps")
    history.add_argument("--param", type=_param, action="append", default=[], metavar="K=V",
                         help="only series with this param (repeatable; rtr=false, rtr=False and rtr=off all match)")
    history.add_argument("--x", choices=("date", "commit"), default="date",
                         help="one point per run and ref (date, default) or per ref pooled over runs (commit)")
    history.add_argument("--control", default=None,
                         help="the ref re-measured as a control (default: the one measured in most runs)")
    history.set_defaults(func=run)


def _spellings(value) -> set[str]:
    """How a user may write a stored value on the command line: rtr=False, rtr=false, rtr=off."""
    return {str(value), json.dumps(value, default=str), display(value)}


def _matches(key, args) -> bool:
    return ((args.hw_class is None or key.hw_class == args.hw_class)
            and (args.metric is None or key.metric == args.metric)
            and all(k in key.params and v in _spellings(key.params[k]) for k, v in args.param))


def _selector(key) -> str:
    flags = ["--class", key.hw_class, "--metric", key.metric]
    for k, v in sorted(key.params.items()):
        flags += ["--param", f"{k}={v}"]
    return shlex.join(flags)


def run(args) -> int:
    from coordinator.reports.history_text import render
    from coordinator.results.history import history, series_keys

    store, records = selected_records(args)
    keys = [k for k in series_keys(records) if _matches(k, args)]
    if not keys:
        raise UserError(f"no series with two or more points in {store.url} for that selection")
    if len(keys) > 1:
        for key in keys:
            print(f"{key.label()}: {_selector(key)}")
        print(f"hwmatrix: {len(keys)} series match; pick one with the flags shown", file=sys.stderr)
        return EXIT_BAD_INPUT
    h = history(records, keys[0], x=args.x, control=args.control)
    if args.control is not None and not any(p.ref == args.control for p in h.points):
        raise UserError(f"--control {args.control}: that ref has no points in {keys[0].label()}")
    print(render(h), end="")
    return EXIT_OK
