"""Options and steps several `hwmatrix` commands share: where the store is (and opening it),
which of its records to read, a run id that becomes a store key part, an AXIS=VALUE pair, and the cluster's token."""
from __future__ import annotations

import argparse
import os

from agent.store.backends import url_forms
from coordinator.errors import UserError

STORE_HELP = (f"{url_forms()} (default: $HWMATRIX_STORE or ~/.local/share/hwmatrix/store); "
              "S3 credentials come from boto3's usual chain, never from a matrix")


def store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None, help=STORE_HELP)
    parser.add_argument("--endpoint-url", default=None,
                        help="an S3-compatible endpoint (default: $AWS_ENDPOINT_URL, else AWS)")


def selection_options(parser: argparse.ArgumentParser) -> None:
    """--run, --matrix and --class: which stored records a command that reads results looks at."""
    parser.add_argument("--run", default=None, help="only this run id (default: every run in the store)")
    parser.add_argument("--matrix", default=None, help="only records of this matrix name")
    parser.add_argument("--class", dest="hw_class", default=None, help="only this hardware class")


def selected_records(args) -> tuple:
    """(the store, its checked records that selection_options name); skipped objects are warned about."""
    from coordinator.results.records import load_checked, warn_skipped

    store = open_store(args)
    loaded = load_checked(store, args.run, matrix=args.matrix, hw_class=args.hw_class)
    warn_skipped(loaded.skipped)
    return store, loaded.records


def use_endpoint(args) -> None:
    """--endpoint-url goes where boto3 (and so every store opened here) looks for it."""
    if getattr(args, "endpoint_url", None):
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint_url


def store_url(args) -> str:
    """The store URL the user asked for."""
    from agent.paths import default_store_url

    use_endpoint(args)
    return args.store or default_store_url()


def open_store(args):
    """The store the user asked for; one that cannot be opened is a one-line error."""
    from agent.store.backends import open_store as open_url
    from agent.store.keys import StoreError

    try:
        return open_url(store_url(args))
    except StoreError as exc:
        raise UserError(str(exc)) from None


def use_token(args) -> None:
    """Token auth on before ray is imported (Ray reads it at import); a cluster on this
    machine is joined on loopback, which Ray also decides at import."""
    from agent.cluster.auth import TokenError, use_token as use
    from coordinator.cluster.loopback import keep_ray_on_loopback

    keep_ray_on_loopback(args.address)
    try:
        use(args.token_file)
    except TokenError as exc:
        raise UserError(str(exc)) from None


def axis_value(text: str) -> dict:
    """--baseline / --candidate: AXIS=VALUE."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected AXIS=VALUE (e.g. ref=pr517), got {text!r}")
    axis, value = text.split("=", 1)
    return {axis: value}


def run_id_arg(text: str) -> str:
    """--run-id becomes a store key part: a name, refused here rather than by every agent."""
    from agent.spec.flags import name_problem

    problem = name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def max_cells_option(parser: argparse.ArgumentParser) -> None:
    """--max-cells on plan, run and volunteers queue: the cells are counted before they are
    made, and a matrix that expands to more is refused with the count."""
    from coordinator.matrix.vocabulary import MAX_CELLS

    parser.add_argument("--max-cells", type=_positive_int, default=MAX_CELLS, metavar="N",
                        help=f"refuse a matrix that expands to more than N cells (default {MAX_CELLS:,})")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value
