"""`hwmatrix bisect`: from "it got slower" to the commit that did it, on one machine."""
from __future__ import annotations

from coordinator.cli.options import open_store, store_options, store_url, use_token
from coordinator.errors import UserError

METRICS = ("tg_tps", "pp_tps")


def add_parser(sub) -> None:
    p = sub.add_parser("bisect", help="find the commit that made a cell slower (or faster), measured interleaved")
    p.add_argument("--engine", choices=["llama.cpp", "ik_llama.cpp"], default=None,
                   help="engine kind (default: guessed from --repo, else llama.cpp)")
    p.add_argument("--repo", default=None, help="git URL or path; without it, refs are versions of the kind's "
                                                 "registry sdist (v0.3.35 ...)")
    p.add_argument("--good", default=None, help="the older ref, as it was")
    p.add_argument("--bad", default=None, help="the newer ref, where it changed")
    p.add_argument("-m", "--model", default=None, help="a GGUF file, or 'tiny' (the generated tiny model)")
    p.add_argument("--quant", default=None, help="quantize the model to this type first (e.g. Q4_0)")
    p.add_argument("--args", default=None, help='llama-bench options, e.g. "-p 64 -n 16 -t 1"')
    p.add_argument("--matrix", default=None, help="take engine, model, args, hygiene and hardware from this matrix "
                                                  "file (and good/bad/metric from its bisect: section)")
    p.add_argument("--cell", action="append", default=[], metavar="AXIS=VALUE",
                   help="with --matrix: the value of an axis that has several")
    p.add_argument("--metric", choices=METRICS, default=None, help="what to bisect on (default tg_tps)")
    p.add_argument("--find", choices=["slower", "faster"], default=None,
                   help="the change sought (default slower: a regression)")
    p.add_argument("--min-processes", type=int, default=None, help="processes a side before any verdict (3)")
    p.add_argument("--max-processes", type=int, default=None,
                   help="processes a side at most, per step, before 'unknown' (20)")
    p.add_argument("--min-process-s", type=float, default=0.5, help="seconds each process measures at least")
    p.add_argument("--max-changes", type=int, default=4, help="stop after this many culprits")
    p.add_argument("--address", default=None, help="HOST:PORT of a cluster; default: this machine")
    p.add_argument("--token-file", default=None)
    p.add_argument("--class", dest="hw_class", default=None, help="on a cluster: an agent of this hardware class")
    p.add_argument("--resume", action="store_true",
                   help="replay finished steps from the store (what running the same command again does)")
    p.add_argument("--fresh", action="store_true", help="start over instead of replaying finished steps")
    store_options(p)
    p.set_defaults(func=run)


def setup_from(args):
    """The Setup (and what names it) from the options and/or the matrix file."""
    from coordinator.bisect.inputs import base_from_matrix, base_from_options, commit_range
    from coordinator.bisect.lab import Setup

    section: dict = {}
    if args.matrix:
        if args.repo or args.model or args.engine or args.quant or args.args:
            raise UserError("--matrix gives the engine, model and args; leave out --engine/--repo/-m/--quant/--args")
        base, engine, section = base_from_matrix(args.matrix, args.cell)
    else:
        if args.cell:
            raise UserError("--cell picks a value of a --matrix file's axis")
        if not args.model:
            raise UserError("give -m MODEL (a GGUF file, or 'tiny'), or --matrix FILE")
    good, bad = args.good or section.get("good"), args.bad or section.get("bad")
    if not good or not bad:
        raise UserError("give --good REF and --bad REF (or a bisect: section with good and bad)")
    good, bad = str(good), str(bad)
    if not args.matrix:
        base, engine = base_from_options(args.engine, args.repo, args.model, args.quant, args.args,
                                         [good, bad], args.min_process_s)
    lo = args.min_processes or int(section.get("min_processes", 3))
    hi = args.max_processes or int(section.get("max_processes", 20))
    if not 2 <= lo <= hi <= 1000:
        raise UserError(f"--min-processes {lo} / --max-processes {hi}: need 2 <= min <= max <= 1000")
    metric = args.metric or section.get("metric", "tg_tps")
    find = args.find or section.get("find", "slower")
    if metric not in METRICS or find not in ("slower", "faster"):
        raise UserError(f"bisect: metric {metric!r} / find {find!r}: metric is tg_tps or pp_tps, find slower or faster")
    commits = commit_range(base, engine, good, bad)
    return Setup(base=base, engine=engine, commits=commits, metric=metric, find=find, min_processes=lo,
                 max_processes=hi, hw_class=args.hw_class, address=args.address, token_file=args.token_file,
                 inputs={"good": good, "bad": bad, "matrix": args.matrix, "cell": args.cell})


def run(args) -> int:
    if args.address:
        use_token(args)
    from coordinator.bisect.run import run_bisect

    if args.max_changes < 1:
        raise UserError("--max-changes must be at least 1")
    setup = setup_from(args)
    store = open_store(args)
    bisect_id = setup.bisect_id()
    if args.fresh:
        import time

        bisect_id = f"{bisect_id}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    code, _ = run_bisect(setup, store, store_url(args), bisect_id, args.max_changes)
    return code
