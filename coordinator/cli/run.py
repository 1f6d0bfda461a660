"""`hwmatrix run FILE`: build, measure and print the table, on an embedded Ray here or on a
cluster's agents."""
from __future__ import annotations

from agent.spec.clash import CLASH_POLICIES
from coordinator.cli.options import max_cells_option, run_id_arg, store_options, store_url, use_token


def add_parser(sub) -> None:
    run_ = sub.add_parser("run", help="run a matrix on this machine (embedded Ray) and print the table")
    run_.add_argument("file")
    store_options(run_)
    run_.add_argument("--on-clash", choices=CLASH_POLICIES, default="reject",
                      help="a stored ok record with other content at a cell's key: refuse and keep the new one "
                           "spooled (default), overwrite it, or store both")
    run_.add_argument("--run-id", default=None, type=run_id_arg, help="name the run (default: derived from the matrix)")
    run_.add_argument("--fresh", action="store_true", help="start a new run instead of resuming")
    run_.add_argument("--skip-unmatched", action="store_true",
                      help="skip cells no agent matches instead of refusing to run")
    run_.add_argument("--address", default=None,
                      help="HOST:PORT of a cluster (`hwmatrix cluster up`); default: an embedded Ray here")
    run_.add_argument("--token-file", default=None,
                      help="the cluster's Ray auth token file (default: $HWMATRIX_TOKEN_FILE or "
                           "~/.config/hwmatrix/ray-token)")
    max_cells_option(run_)
    run_.set_defaults(func=run)


def run(args) -> int:
    if args.address:
        use_token(args)
    from coordinator.cluster.run import run_matrix

    return run_matrix(args.file, store_url=store_url(args), run_id=args.run_id, fresh=args.fresh,
                      skip_unmatched=args.skip_unmatched, address=args.address, token_file=args.token_file,
                      on_clash=args.on_clash, max_cells=args.max_cells)
