"""`hwmatrix selftest`: an A/A experiment, the false-positive rate of verdicts on this machine."""
from __future__ import annotations


def add_parser(sub) -> None:
    st = sub.add_parser("selftest", help="A/A experiment: the false-positive rate of verdicts on this machine")
    st.add_argument("--rounds", type=int, default=3, help="A/A runs, each corrected on its own (default 3)")
    st.add_argument("--repetitions", type=int, default=10,
                    help="engine processes per side and cell, one repetition each (default 10)")
    st.add_argument("--min-process-s", type=float, default=1.0,
                    help="seconds each engine process measures at least (repetitions.min_process_s; default 1)")
    st.add_argument("--store", default=None, help="where its records go (default: <cache>/selftest-store)")
    st.set_defaults(func=run)


def run(args) -> int:
    from coordinator.cluster.selftest import selftest

    return selftest(rounds=args.rounds, reps=args.repetitions, store_url=args.store,
                    min_process_s=args.min_process_s)
