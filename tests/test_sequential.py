"""The sequential stopping rule (agent/spec/sequential.py): its false-call rate stays under
alpha when the A/B loop looks after every pair, it settles clear changes early, and the naive
alternative (a fixed-n test re-run after every pair) does not keep its rate."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import stats as st

from agent.spec.sequential import SequentialVerdict, sequential_verdict

REPO = Path(__file__).resolve().parent.parent
ALPHA = 0.05


def _pairs(rng, n, shift, cv):
    base = 100 * (1 + cv * rng.standard_normal(n))
    cand = 100 * (1 + shift) * (1 + cv * rng.standard_normal(n))
    return base.tolist(), cand.tolist()


def _run_until_settled(base, cand, max_pairs):
    """What the agent's loop does: ask after every new pair, stop at the first verdict."""
    for k in range(1, len(base) + 1):
        v = sequential_verdict(base[:k], cand[:k], max_pairs=max_pairs)
        if v.verdict != "continue":
            return v
    return v


def test_aa_false_calls_stay_under_alpha_with_optional_stopping():
    rng = np.random.default_rng(13)
    trials, max_pairs = 300, 40
    calls = 0
    for _ in range(trials):
        base, cand = _pairs(rng, max_pairs, 0.0, 0.02)
        calls += _run_until_settled(base, cand, max_pairs).verdict in ("slower", "faster")
    assert calls / trials <= ALPHA


def test_naive_retest_after_every_pair_exceeds_alpha():
    """The same A/A trials, judged by a paired t-test re-run after each pair from 3 to 20 and
    stopped at the first p < 0.05: the false calls pile up - why the rule exists."""
    rng = np.random.default_rng(13)
    trials, calls = 300, 0
    for _ in range(trials):
        base, cand = _pairs(rng, 20, 0.0, 0.02)
        calls += any(st.ttest_rel(base[:k], cand[:k]).pvalue < ALPHA for k in range(3, 21))
    assert calls / trials > ALPHA * 2


def test_settles_a_ten_percent_slowdown_at_cv_2pct_within_20_pairs():
    rng = np.random.default_rng(7)
    for _ in range(50):
        base, cand = _pairs(rng, 20, -0.10, 0.02)
        v = _run_until_settled(base, cand, 20)
        assert v.verdict == "slower" and v.pairs <= 20
        assert v.ci_high < 1 and 0.85 < v.ratio < 0.95


def test_faster_same_unknown_and_continue():
    rng = np.random.default_rng(3)
    base, cand = _pairs(rng, 20, 0.10, 0.02)
    assert _run_until_settled(base, cand, 20).verdict == "faster"
    base, cand = _pairs(rng, 30, 0.0, 0.002)          # a quiet A/A: settles as "same"
    v = _run_until_settled(base, cand, 30)
    assert v.verdict == "same" and 1 - 0.02 <= v.ci_low and v.ci_high <= 1 + 0.02
    base, cand = _pairs(rng, 6, -0.05, 0.20)          # too noisy for 6 pairs
    assert sequential_verdict(base, cand, max_pairs=6).verdict == "unknown"
    assert sequential_verdict(base[:4], cand[:4]).verdict == "continue"
    assert sequential_verdict([], []) == SequentialVerdict("continue", 0, None, None, None)


def test_min_pairs_and_unpaired_tail():
    """No verdict before min_pairs; a value still waiting for its partner is not used."""
    v = sequential_verdict([100.0, 100.0, 100.0, 50.0], [80.0, 80.1, 79.9], min_pairs=3)
    assert v.pairs <= 3


def test_bench_last_line():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "verdicts.py"), "--trials", "40", "--seed", "1", "--sim-only"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"false_call_rate=\d\.\d{3} power=\d\.\d{3} processes_vs_fixed=\d+\.\d{3}", last), last
    assert "## Rules side by side" in out and "## Estimators" in out and "## Real engines: skipped (--sim-only)" in out


def test_compare_sequential_as_a_comparison():
    from coordinator.results.stats import compare_sequential

    rng = np.random.default_rng(5)
    base, cand = _pairs(rng, 20, -0.10, 0.02)
    c = compare_sequential(base, cand, metric="tg_tps", max_pairs=20)
    assert c.verdict == "slower" and c.test == "sequential" and c.n_base == c.n_cand <= 20
    assert c.ci_high < 1 and c.more_runs is None
    base, cand = _pairs(rng, 4, -0.05, 0.20)
    c = compare_sequential(base, cand)
    assert c.verdict == "unknown" and c.more_runs >= 1
