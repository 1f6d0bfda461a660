"""`hwmatrix ab A B -m MODEL [-- llama-bench options]`: "is my change slower?" without a
matrix file. It writes the matrix it runs (so `hwmatrix run FILE` reruns or resumes it),
measures A and B interleaved until the verdict settles, and prints the verdicts."""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

import yaml

from coordinator.cli.options import store_options, store_url, use_token
from coordinator.errors import EXIT_CELLS_FAILED, EXIT_OK, UserError

_COMMIT = re.compile(r"[0-9a-f]{7,40}")


class _DashDashParser(argparse.ArgumentParser):
    """Everything after the first ``--`` is llama-bench's (``args.bench``), kept out of
    argparse, which cannot take a trailing ``*`` positional after options and refs; the
    arguments as given are kept too (``args.given``), for the reproduce command."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        given, bench = list(args), []
        if "--" in args:
            cut = args.index("--")
            args, bench = args[:cut], args[cut + 1:]
        ns, extras = super().parse_known_args(args, namespace)
        ns.bench, ns.given = bench, given
        return ns, extras


def add_parser(sub) -> None:
    p = sub.add_parser("ab", help="A/B two refs on this machine, interleaved, until the verdict settles",
                       usage="hwmatrix ab A B -m MODEL [options] [-- llama-bench options]")
    p.__class__ = _DashDashParser
    p.add_argument("a", metavar="A", help="the baseline ref (without --repo: a version like v0.3.35)")
    p.add_argument("b", metavar="B", help="the candidate ref")
    p.add_argument("--engine", choices=["llama.cpp", "ik_llama.cpp"], default=None,
                   help="engine kind (default: guessed from --repo, else llama.cpp)")
    p.add_argument("--repo", default=None, help="git URL or path; without it, refs are versions of the kind's "
                                                 "registry sdist (v0.3.35 ...)")
    p.add_argument("-m", "--model", default=None, help="a GGUF file, or 'tiny' (the generated tiny model)")
    p.add_argument("--quant", default=None, help="quantize the model to this type first (e.g. Q4_0)")
    p.add_argument("--paste", action="store_true", help="also print a GitHub-ready markdown block")
    p.add_argument("--matrix-out", default=None, help="where to write the matrix (default ./hwmatrix-ab-A-B.yaml)")
    p.add_argument("--min-processes", type=int, default=3, help="processes a side before any verdict (3)")
    p.add_argument("--max-processes", type=int, default=20, help="processes a side at most (20)")
    p.add_argument("--min-process-s", type=float, default=0.5, help="seconds each process measures at least")
    p.add_argument("--address", default=None, help="HOST:PORT of a cluster; default: this machine")
    p.add_argument("--token-file", default=None, help="the cluster's Ray auth token file")
    p.add_argument("--class", dest="hw_class", default=None, help="run on an agent of this hardware class")
    store_options(p)
    p.set_defaults(func=run, bench=[], given=[])


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "ref"


def ref_name(ref: str) -> str:
    """A ref as a matrix ref name: letters, digits and ._/+@-, starting with a letter or digit."""
    return re.sub(r"^[^A-Za-z0-9]+", "", re.sub(r"[^A-Za-z0-9._/+@-]+", "-", ref))[:128] or "ref"


def ref_entry(ref: str) -> dict:
    return {"name": ref_name(ref), "commit" if _COMMIT.fullmatch(ref) else "ref": ref}


def build_matrix(args) -> dict:
    """The matrix dict ``hwmatrix ab`` runs; every bad option is a UserError here."""
    from coordinator.bisect.inputs import base_from_options

    if args.a == args.b:
        raise UserError(f"A and B are both {args.a!r}: give two different refs")
    if ref_name(args.a) == ref_name(args.b):
        raise UserError(f"refs {args.a!r} and {args.b!r} get the same name {ref_name(args.a)!r}; give other refs")
    if not args.model:
        raise UserError("give -m MODEL (a GGUF file, or 'tiny' for the generated tiny model)")
    if not 2 <= args.min_processes <= args.max_processes <= 1000:
        raise UserError(f"--min-processes {args.min_processes} / --max-processes {args.max_processes}: "
                        "need 2 <= min <= max <= 1000")
    if args.min_process_s < 0:
        raise UserError("--min-process-s must be 0 or more")
    base, _ = base_from_options(args.engine, args.repo, args.model, args.quant, shlex.join(args.bench),
                                [args.a, args.b], args.min_process_s)
    base["repetitions"].update(min=args.min_processes, max=args.max_processes)
    a, b = ref_name(args.a), ref_name(args.b)
    base["matrix"]["ref"] = [ref_entry(args.a), ref_entry(args.b)]
    name = f"ab-{slug(args.a)}-{slug(args.b)}"[:128]
    return {"name": name, "description": f"hwmatrix ab {args.a} {args.b}", **base,
            "compare": [{"baseline": {"ref": a}, "candidate": {"ref": b}}]}


def _host(args) -> str | None:
    """With --class: the agent (first by name) of that class every cell runs on."""
    if not args.hw_class:
        return None
    from coordinator.cluster.run import pick_agent

    if args.address:
        from coordinator.cluster.head import connect

        connect(args.address, args.token_file)
    return pick_agent(args.address, args.hw_class).host


def run(args) -> int:
    if args.address:
        use_token(args)
    matrix = build_matrix(args)
    out = Path(args.matrix_out or f"hwmatrix-ab-{slug(args.a)}-{slug(args.b)}.yaml")
    try:
        out.write_text(yaml.safe_dump(matrix, sort_keys=False))
    except OSError as exc:
        raise UserError(f"--matrix-out {out}: cannot write it ({exc.strerror})") from None
    print(f"wrote the matrix it runs to {out}; rerun with hwmatrix run {shlex.quote(str(out))}", file=sys.stderr)

    from coordinator.cluster.run import execute, render_table
    from coordinator.results.compare import comparisons, render_comparisons
    from coordinator.results.stats import Settings

    host = _host(args)
    plan, _, records, matched, _ = execute(str(out), store_url(args), None, fresh=False, skip_unmatched=False,
                                           address=args.address, token_file=args.token_file, host=host)
    flat = [r for recs in records.values() for r in recs]
    a, b = matrix["compare"][0]["baseline"], matrix["compare"][0]["candidate"]
    settings = Settings()
    rows = comparisons(flat, a, b, settings)
    measured = bool(matched) and all(any(r.get("status") == "ok" for r in records.get(c.cell_id, []))
                                     for c in matched)
    if rows:
        print(render_comparisons(rows, settings))
    if not measured or not rows:
        print(render_table(plan, records))
        print(f"hwmatrix: {a['ref']} and {b['ref']} were not both measured; the table says why", file=sys.stderr)
    if args.paste:
        from coordinator.reports.paste import paste_block

        print()
        print(paste_block(flat, rows, str(out), ["ab", *args.given], store=args.store))
    return EXIT_OK if measured and rows else EXIT_CELLS_FAILED
