"""Matrices made from a command line (`hwmatrix ab`, `hwmatrix bisect`): an engine, a model,
llama-bench arguments, as the dict a matrix file would hold, so the normal loader checks it
and the file can be written out and rerun."""
from __future__ import annotations

import re
from pathlib import Path

from agent.spec.registry import ARGS, BENCH, IK, MAINLINE, Switch, Valued
from coordinator.errors import UserError

# The registry sdists that vendor each engine kind: refs v<version> name their versions.
SDISTS = {MAINLINE: "llama-cpp-python", IK: "ik-llama-cpp-python"}
# What the demo builds ik with: the all-quants FA kernels take most of a 2-core build.
SDIST_CMAKE = {IK: ["-DGGML_IQK_FA_ALL_QUANTS=OFF"]}
TINY = "tiny"
_VERSION_TAG = re.compile(r"^v(\d+(?:\.\d+){1,3})$")
# llama-bench options hwmatrix sets itself, with what to use instead
OWN_FLAGS = {"-r": "hwmatrix sizes repetitions itself (--max-processes / min_process_s)",
             "--repetitions": "hwmatrix sizes repetitions itself",
             "-m": "give the model with -m before --", "--model": "give the model with -m before --",
             "-o": "hwmatrix reads llama-bench's JSON itself", "--output": "hwmatrix reads llama-bench's JSON itself"}


def guess_kind(repo: str) -> str:
    return IK if "ik_llama" in repo.lower() or "ik-llama" in repo.lower() else MAINLINE


def engine_entry(kind: str | None, repo: str | None, refs: list[str]) -> dict:
    """A matrix engine: ``repo`` as given, or (no repo) the registry sdist of ``kind``, whose
    versions the refs name (v0.3.36 -> version 0.3.36), in version order."""
    if repo:
        return {"kind": kind or guess_kind(repo), "repo": repo}
    kind = kind or MAINLINE
    versions = []
    for ref in refs:
        m = _VERSION_TAG.match(ref)
        if not m:
            raise UserError(f"ref {ref!r}: without --repo, refs name versions of the {SDISTS[kind]} sdist "
                            "(like v0.3.36); give --repo URL|PATH for any other ref")
        if m.group(1) not in versions:
            versions.append(m.group(1))
    # oldest first, whatever order the refs came in: each version is a commit on top of the one before
    versions.sort(key=lambda v: tuple(int(x) for x in v.split(".")))
    entry = {"kind": kind, "sdist": {"package": SDISTS[kind], "versions": versions}}
    if SDIST_CMAKE.get(kind):
        entry["build"] = {"cmake": list(SDIST_CMAKE[kind])}
    return entry


def model_entry(model: str) -> tuple[str, dict]:
    """(name, matrix model) for -m: ``tiny`` is the generated tiny model, anything else a file."""
    if model == TINY:
        return TINY, {"generate": "tiny-llama"}
    path = Path(model).expanduser()
    if not path.is_file():
        raise UserError(f"-m {model}: no such model file (or give -m tiny for the generated tiny model)")
    name = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem)[:60] or "model"
    return name, {"path": str(path.resolve())}


def _flag_table() -> dict[str, tuple[str, object]]:
    table = {}
    for arg in ARGS.values():
        spelling = arg.flags.get(BENCH)
        if isinstance(spelling, Valued):
            table[spelling.flag] = (arg.name, spelling)
        elif isinstance(spelling, Switch) and spelling.on:
            table[spelling.on[0]] = (arg.name, spelling)
    return table


def bench_args(argv: list[str]) -> dict:
    """llama-bench options (after ``--``) as matrix args: ``-p 64 -n 16 -t 1 -fa 1``. One value
    per option; an option hwmatrix sets itself or does not know is refused, naming it."""
    table, args, i = _flag_table(), {}, 0
    while i < len(argv):
        flag = argv[i]
        if flag in OWN_FLAGS:
            raise UserError(f"llama-bench option {flag}: {OWN_FLAGS[flag]}")
        if flag not in table:
            raise UserError(f"llama-bench option {flag!r} is not one hwmatrix knows "
                            f"(known: {' '.join(sorted(table))})")
        if i + 1 >= len(argv):
            raise UserError(f"llama-bench option {flag} needs a value")
        name, spelling = table[flag]
        value = argv[i + 1]
        if "," in value:
            raise UserError(f"llama-bench option {flag} {value}: one value here (a list is a matrix axis; "
                            "write a matrix file for a sweep)")
        if isinstance(spelling, Switch):
            if value not in ("0", "1"):
                raise UserError(f"llama-bench option {flag} takes 0 or 1, not {value!r}")
            args[name] = value == "1"
        elif ARGS[name].type == "int":
            try:
                args[name] = int(value)
            except ValueError:
                raise UserError(f"llama-bench option {flag} takes a whole number, not {value!r}") from None
        else:
            args[name] = value
        i += 2
    return args
