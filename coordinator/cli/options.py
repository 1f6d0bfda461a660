"""Options several `hwmatrix` commands share (cli.py and volunteer_cli.py): where the store is,
and a run id that becomes a store key part."""
from __future__ import annotations

import argparse
import os

STORE_HELP = ("file://DIR or s3://BUCKET/PREFIX (default: $HWMATRIX_STORE or ~/.local/share/hwmatrix/store); "
              "S3 credentials come from boto3's usual chain, never from a matrix")


def store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None, help=STORE_HELP)
    parser.add_argument("--endpoint-url", default=None,
                        help="an S3-compatible endpoint (default: $AWS_ENDPOINT_URL, else AWS)")


def use_endpoint(args) -> None:
    """--endpoint-url goes where boto3 (and so every store opened here) looks for it."""
    if getattr(args, "endpoint_url", None):
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint_url


def store_url(args) -> str:
    """The store URL the user asked for."""
    from agent.paths import default_store_url

    use_endpoint(args)
    return args.store or default_store_url()


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
    from coordinator.matrix.schema import MAX_CELLS

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
