"""`hwmatrix selftest`: an A/A experiment that measures the verdicts' false-positive rate here.

The same build is measured as two "refs", interleaved (A B A B ...), over a few cells and
rounds; every verdict other than "same"/"unknown" is a false positive. Identical binaries
would short-circuit to "same binary", so this compares the samples regardless.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from agent.paths import cache_dir
from coordinator.run import execute
from coordinator.stats import Settings, compare_many

MATRIX = """name: selftest
description: A/A - one mainline build measured twice, interleaved
engines:
  mainline: {{kind: llama.cpp, sdist: {{package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}}}
models:
  tiny: {{generate: tiny-llama}}
args: {{n_prompt: 64, n_gen: 16}}
repetitions: {reps}
hygiene: {{drop_caches: off}}
matrix:
  ref: [{{name: A, engine: mainline, tag: v0.3.36}}, {{name: B, engine: mainline, tag: v0.3.36}}]
  quant: [Q8_0, Q4_0]
  threads: [1, 2]
"""


def selftest(rounds: int = 3, reps: int = 10, store_url: str | None = None) -> int:
    store_url = store_url or cache_dir("selftest-store").as_uri()
    records: list[dict] = []
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "selftest.yaml"
        path.write_text(MATRIX.format(reps=reps))
        for n in range(1, rounds + 1):        # one embedded Ray serves every round
            _, _, by_cell_id, _, _ = execute(str(path), store_url, f"selftest-{stamp}-r{n}", fresh=False,
                                             skip_unmatched=False)
            records += [r for recs in by_cell_id.values() for r in recs if r["status"] == "ok"]
    by_cell: dict[tuple, dict[str, dict]] = {}
    for rec in records:
        key = (rec["run_id"],) + tuple(sorted((k, str(v)) for k, v in rec["params"].items() if k != "ref"))
        by_cell.setdefault(key, {})[rec["params"]["ref"]] = rec
    pairs = [(cell["A"]["metrics"][m]["samples"], cell["B"]["metrics"][m]["samples"], m)
             for cell in by_cell.values() if {"A", "B"} <= cell.keys() for m in ("pp_tps", "tg_tps")]
    settings = Settings()
    verdicts = Counter(c.verdict for c in compare_many(pairs, settings))
    false_calls = verdicts["slower"] + verdicts["faster"]
    total = sum(verdicts.values())
    print(f"A/A selftest: {total} comparisons ({len(by_cell)} cells x pp/tg, {reps} repetitions each, "
          f"interleaved), test {settings.test}, {settings.correction} correction")
    for verdict in ("same", "unknown", "slower", "faster"):
        print(f"  {verdict:8s} {verdicts[verdict]}")
    rate = false_calls / total if total else float("nan")
    print(f"false-positive rate: {false_calls}/{total} = {rate:.1%} (a sound setup stays at or under 5%)")
    return 0 if total else 1
