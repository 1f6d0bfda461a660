"""`hwmatrix selftest`: an A/A experiment that measures the verdicts' false-positive rate here.

The same build is measured as two "refs", interleaved process by process (in each round
both, in the group's order: agent.engine.interleave),
over a few cells and rounds; every verdict other than "same"/"unknown" is a false
positive. Identical binaries would short-circuit to "same binary", so this compares the
samples regardless.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from statistics import median

from agent.paths import cache_dir
from coordinator.results.compare import units
from coordinator.cluster.run import execute
from coordinator.results.stats import Settings, compare_many

MATRIX = """name: selftest
description: A/A - one mainline build measured twice, interleaved
engines:
  mainline: {{kind: llama.cpp, sdist: {{package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}}}
models:
  tiny: {{generate: tiny-llama}}
args: {{n_prompt: 64, n_gen: 16}}
repetitions: {{min: {reps}, max: {reps}, min_process_s: {min_process_s}}}
hygiene: {{drop_caches: off}}
matrix:
  ref: [{{name: A, engine: mainline, tag: v0.3.36}}, {{name: B, engine: mainline, tag: v0.3.36}}]
  quant: [Q8_0, Q4_0]
  threads: [1, 2]
"""


def selftest(rounds: int = 3, reps: int = 10, store_url: str | None = None, min_process_s: float = 1.0) -> int:
    """Run the A/A matrix ``rounds`` times (each round is one run, corrected on its own, as
    a user's run would be) and print the verdict counts, the false-positive rate and how
    noisy this machine is."""
    store_url = store_url or cache_dir("selftest-store").as_uri()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    settings = Settings()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "selftest.yaml"
        path.write_text(MATRIX.format(reps=reps, min_process_s=min_process_s))
        for n in range(1, rounds + 1):        # one embedded Ray serves every round
            _, _, by_cell_id, _, _ = execute(str(path), store_url, f"selftest-{stamp}-r{n}", fresh=False,
                                             skip_unmatched=False)
            records = [r for recs in by_cell_id.values() for r in recs if r["status"] == "ok"]
            results += compare_many(_aa_pairs(records), settings)
    verdicts = Counter(c.verdict for c in results)
    false_calls = verdicts["slower"] + verdicts["faster"]
    total = sum(verdicts.values())
    print(f"A/A selftest: {total} comparisons ({rounds} rounds x {total // max(rounds, 1)}), {reps} engine "
          f"processes per side, A/B interleaved; test {settings.test}, {settings.correction} correction per round")
    for verdict in ("same", "unknown", "slower", "faster"):
        print(f"  {verdict:8s} {verdicts[verdict]}")
    rate = false_calls / total if total else float("nan")
    print(f"false-positive rate: {false_calls}/{total} = {rate:.1%} (a sound setup stays at or under 5%)")
    cvs = sorted(cv for c in results for cv in (c.cv_base, c.cv_cand) if cv is not None)
    if cvs:
        cv = median(cvs)
        smallest = 2.8 * cv * (2 / reps) ** 0.5       # 80% power at 5%: (1.96 + 0.84) sd of a difference
        print(f"noise here: median CV of one engine process {cv:.1%}; with {reps} processes a side the "
              f"smallest change likely to be told apart is about {smallest:.0%}")
    return 0 if total else 1


def _aa_pairs(records: list[dict]) -> list[tuple[list[float], list[float], str]]:
    """(A units, B units, metric) per cell: the same binary on both sides, tested anyway
    (compare's "same binary" short-cut would hide exactly what this measures)."""
    by_cell: dict[tuple, dict[str, dict]] = {}
    for rec in records:
        key = tuple(sorted((k, str(v)) for k, v in rec["params"].items() if k != "ref"))
        by_cell.setdefault(key, {})[rec["params"]["ref"]] = rec
    return [(units(cell["A"]["metrics"][m]), units(cell["B"]["metrics"][m]), m)
            for cell in by_cell.values() if {"A", "B"} <= cell.keys() for m in ("pp_tps", "tg_tps")]
