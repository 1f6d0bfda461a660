"""Verdict rules on this machine's noise: simulated A/A and A/B trials whose process values are
resampled from the real records in the store (issue #13, items 3, 4 and 9).

    python bench/verdicts.py [--trials 1000] [--seed 0] [--store URL]

Noise: every process value of every cell in the store, divided by its cell's median (so the
busy VM's one-sided contention outliers keep their shape), centred and scaled to the CV under
study. Each trial draws its processes from that pool, A's and B's independently; B is A times
(1 + shift). Without records it falls back to normal noise and says so.

Prints: the sequential rule (agent/spec/sequential.py) against hwmatrix's fixed-n rule; the
rules people use (item 9) side by side; estimators of a cell's value (item 3) at fixed n. The
last line is `false_call_rate=F power=P processes_vs_fixed=R` for the sequential rule.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import stats as st

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.paths import default_store_url
from agent.store.backends import open_store
from agent.spec.record import process_means
from agent.spec.sequential import decide, log_ratio_sequence
from coordinator.results.records import load_checked
from coordinator.results.stats import Settings, compare

ALPHA, SHIFT, CV, MAX_PAIRS, FIXED_N = 0.05, -0.05, 0.02, 20, 10


# ---------------------------------------------------------------- noise

def store_records(store_url: str) -> list[dict]:
    """The ok records of a store, read and checked as reports read them."""
    return [r for r in load_checked(open_store(store_url)).records if r.get("status") == "ok"]


def real_residuals(store_url: str) -> tuple[np.ndarray, int, float]:
    """(pooled process values / cell median, cells used, median within-cell CV), from a
    file:// store. Cells with fewer than 5 processes are skipped (no median to speak of)."""
    pooled, cvs = [], []
    for record in store_records(store_url):
        for metric in (record.get("metrics") or {}).values():
            values = np.array(process_means(metric.get("samples") or [], metric.get("process_sizes")))
            values = values[np.isfinite(values) & (values > 0)]
            if len(values) < 5:
                continue
            pooled.append(values / np.median(values))
            cvs.append(values.std(ddof=1) / values.mean())
    if not pooled:
        return np.array([]), 0, float("nan")
    return np.concatenate(pooled), len(pooled), float(np.median(cvs))


class Noise:
    """Draws process values: 100 * (1 + shift) * (1 + cv * e), e resampled standardized residuals."""

    def __init__(self, residuals: np.ndarray, rng: np.random.Generator):
        self.e = (residuals - residuals.mean()) / residuals.std()
        self.rng = rng

    def draw(self, trials: int, n: int, shift: float, cv: float) -> np.ndarray:
        e = self.e[self.rng.integers(0, len(self.e), size=(trials, n))]
        return 100.0 * (1 + shift) * np.maximum(1 + cv * e, 1e-3)


# ---------------------------------------------------------------- rules
# Each fixed-n rule maps (a, b) arrays of shape (trials, n) to verdict codes per trial:
# 1 slower, 2 faster, 3 same, 0 unknown.

def _code(slower, faster, same=None):
    same = np.zeros_like(slower) if same is None else same
    return np.select([slower, faster, same], [1, 2, 3], 0)


def three_sigma(a, b):
    """The report's rule: |mean B - mean A| beyond 3 standard deviations of the runs (the larger side's)."""
    diff = b.mean(1) - a.mean(1)
    sigma = np.maximum(a.std(1, ddof=1), b.std(1, ddof=1))
    return _code(diff < -3 * sigma, diff > 3 * sigma)


def asv(a, b):
    """asv compare: the medians differ by the factor 1.1 and Mann-Whitney U p < 0.002 (asv's
    is_different default)."""
    ratio = np.median(b, 1) / np.median(a, 1)
    p = st.mannwhitneyu(a, b, axis=1).pvalue
    return _code((ratio < 1 / 1.1) & (p < 0.002), (ratio > 1.1) & (p < 0.002))


def perfherder(a, b):
    """Perfherder's alert rule: Welch t > 7 and a change of at least 2% of the mean."""
    diff = b.mean(1) - a.mean(1)
    t = diff / np.sqrt(a.var(1, ddof=1) / a.shape[1] + b.var(1, ddof=1) / b.shape[1])
    big = np.abs(diff) >= 0.02 * a.mean(1)
    return _code((t < -7) & big, (t > 7) & big)


def pinpoint_high_threshold(n: int, rng: np.random.Generator, cv: float = CV) -> float:
    """Pinpoint's 'same' threshold, derived as its thresholds_performance.py does: the p-value
    that a real change of the size we look for (5%, so 5% / IQR in its units; normal noise of
    this CV) exceeds only 1% of the time at this n."""
    a = rng.normal(100, 100 * cv, size=(2000, n))
    b = rng.normal(100 * (1 + SHIFT), 100 * (1 + SHIFT) * cv, size=(2000, n))
    return float(np.quantile(_pinpoint_p(a, b), 0.99))


def _pinpoint_p(a, b):
    with warnings.catch_warnings():                    # KS falls back to asymptotic p on ties: fine
        warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
        return np.minimum(st.mannwhitneyu(a, b, axis=1).pvalue, st.ks_2samp(a, b, axis=1).pvalue)


def pinpoint(a, b, high: float):
    """Pinpoint compare: p = min(Mann-Whitney, KS); different below 0.01, same above the high
    threshold, unknown between (the direction of 'different' from the medians)."""
    p = _pinpoint_p(a, b)
    down = np.median(b, 1) < np.median(a, 1)
    different = p <= 0.01
    return _code(different & down, different & ~down, p > high)


def hwmatrix_fixed(a, b):
    """coordinator.results.stats.compare at its defaults (the fixed-n rule)."""
    out = np.zeros(len(a), dtype=int)
    names = {"slower": 1, "faster": 2, "same": 3}
    for i in range(len(a)):
        out[i] = names.get(compare(a[i].tolist(), b[i].tolist(), settings=Settings()).verdict, 0)
    return out


def sequential(a, b):
    """agent.spec.sequential on pairs (a[:, i], b[:, i]): (codes, pairs used per trial)."""
    mean, low, high = log_ratio_sequence(a, b, ALPHA)
    codes = decide(mean, low, high)
    codes[:, :2] = 0                                   # min_pairs = 3
    settled = codes.any(1)
    first = np.where(settled, codes.argmax(1), a.shape[1] - 1)
    return codes[np.arange(len(a)), first] * settled, first + 1


# ---------------------------------------------------------------- estimators (item 3)

ESTIMATORS = {
    "mean": lambda x: x.mean(-1),
    "median": lambda x: np.median(x, -1),
    "trimmed mean 20%": lambda x: st.trim_mean(x, 0.2, axis=-1),
    "min time (max t/s)": lambda x: x.max(-1),
}


def permutation_calls(a, b, estimator, rng, perms: int = 200):
    """Verdict codes of 'estimator(B)/estimator(A)' with a two-sided permutation p < alpha and
    at least a 2% change (stats.py's min_effect): exact false-call control for any estimator."""
    trials, n = a.shape
    both = np.concatenate([a, b], 1)
    observed = estimator(b) / estimator(a)
    idx = np.argsort(rng.random((perms, 2 * n)), axis=1)
    shuffled = both[:, idx]                            # (trials, perms, 2n)
    null = estimator(shuffled[..., n:]) / estimator(shuffled[..., :n])
    dist = np.abs(np.log(null))
    p = ((dist >= np.abs(np.log(observed))[:, None] - 1e-12).sum(1) + 1) / (perms + 1)
    call = (p < ALPHA) & (np.abs(observed - 1) >= 0.02)
    return _code(call & (observed < 1), call & (observed > 1))


# ---------------------------------------------------------------- real comparisons

def real_comparisons(store_url: str, rng) -> None:
    """Every pair of records of one run, class, engine and tool that differ in ref or rtr
    only, judged by each rule on its real process values (pairs in process order)."""
    records = store_records(store_url)
    key = lambda r, axis: (r.get("run_id"), r.get("hardware_class"), (r.get("engine") or {}).get("name"),
                           tuple(sorted((k, str(v)) for k, v in r["params"].items() if k != axis)))
    rows = []
    for axis in ("ref", "rtr"):
        groups: dict = {}
        for r in records:
            groups.setdefault(key(r, axis), []).append(r)
        for group in groups.values():
            if len(group) != 2:
                continue
            base, cand = sorted(group, key=lambda r: str(r["params"].get(axis)))
            for metric in sorted(set(base.get("metrics") or {}) & set(cand.get("metrics") or {})):
                a = process_means(base["metrics"][metric]["samples"], base["metrics"][metric].get("process_sizes"))
                b = process_means(cand["metrics"][metric]["samples"], cand["metrics"][metric].get("process_sizes"))
                n = min(len(a), len(b))
                if n < 3:
                    continue
                rows.append((f"{base['cell_id']} -> {axis}={cand['params'][axis]}", metric,
                             np.array(a[:n])[None, :], np.array(b[:n])[None, :]))
    if not rows:
        return
    words = {0: "unknown", 1: "slower", 2: "faster", 3: "same"}
    print()
    print("## On the real comparisons in the store (no known truth: how often each rule answers)")
    print("| A -> B | metric | n | ratio | 3-sigma | asv | Perfherder | Pinpoint | hwmatrix fixed-n | sequential |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, metric, a, b in rows:
        n = a.shape[1]
        cv = float(np.sqrt((a.var(ddof=1) / a.mean() ** 2 + b.var(ddof=1) / b.mean() ** 2) / 2))
        high = pinpoint_high_threshold(n, rng, cv)
        seq, used = sequential(a, b)
        verdicts = [three_sigma(a, b)[0], asv(a, b)[0], perfherder(a, b)[0], pinpoint(a, b, high)[0],
                    hwmatrix_fixed(a, b)[0]]
        print(f"| {label} | {metric} | {n} | {b.mean() / a.mean():.3f} | "
              + " | ".join(words[int(v)] for v in verdicts)
              + f" | {words[int(seq[0])]} ({int(used[0])} pairs) |")


# ---------------------------------------------------------------- report

def rates(codes, truth_slower: bool) -> float:
    return float((codes == 1).mean()) if truth_slower else float(((codes == 1) | (codes == 2)).mean())


def smallest_n(rule, noise, target: float, trials: int, grid) -> int | None:
    """Smallest n per side (on the grid) at which `rule` calls the 5% slowdown at >= target."""
    for n in grid:
        a, b = noise.draw(trials, n, 0.0, CV), noise.draw(trials, n, SHIFT, CV)
        if rates(rule(a, b), True) >= target:
            return n
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000, help="A/A and A/B trials each (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", default=default_store_url())
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    rng = np.random.default_rng(args.seed)
    T = args.trials

    residuals, cells, native_cv = real_residuals(args.store)
    if len(residuals) < 20:
        print(f"noise: no records in {args.store}: normal noise instead")
        residuals, native_cv = rng.standard_normal(1000), CV
    else:
        lo, hi = np.percentile(residuals, [1, 99])
        print(f"noise: {len(residuals)} process values of {cells} cell metrics in {args.store}; "
              f"median cell CV {native_cv:.1%}; 1st/99th percentile {lo - 1:+.1%}/{hi - 1:+.1%} of the median")
    noise = Noise(residuals, rng)
    print(f"trials: {T} A/A and {T} A/B (B {SHIFT:+.0%}) per row, CV {CV:.0%} unless said; seed {args.seed}")

    # ---- item 4: the sequential rule against the fixed-n rule
    aa_a, aa_b = noise.draw(T, MAX_PAIRS, 0.0, CV), noise.draw(T, MAX_PAIRS, 0.0, CV)
    ab_a, ab_b = noise.draw(T, MAX_PAIRS, 0.0, CV), noise.draw(T, MAX_PAIRS, SHIFT, CV)
    seq_aa, seq_aa_n = sequential(aa_a, aa_b)
    seq_ab, seq_ab_n = sequential(ab_a, ab_b)
    false_rate, power = rates(seq_aa, False), rates(seq_ab, True)
    mean_pairs = float(seq_ab_n.mean())
    fixed_grid = list(range(3, 31))
    fixed_n = smallest_n(hwmatrix_fixed, noise, power, T, fixed_grid)
    fixed_n = fixed_n or fixed_grid[-1] + 1                 # beyond the grid: a lower bound
    ratio = mean_pairs / fixed_n
    print()
    print("## Sequential rule (confidence sequence of the paired log-ratio, Lai 1976; alpha 0.05, "
          f"3..{MAX_PAIRS} pairs)")
    print(f"A/A false calls {false_rate:.3f} (target <= 0.050); same {float((seq_aa == 3).mean()):.3f}; "
          f"mean pairs {seq_aa_n.mean():.1f}")
    print(f"A/B {SHIFT:+.0%} at CV {CV:.0%}: called slower {power:.3f} (target >= 0.900); "
          f"mean pairs {mean_pairs:.2f}")
    print(f"hwmatrix fixed-n rule reaches power {power:.3f} at n = {fixed_n} per side: "
          f"{mean_pairs:.2f} / {fixed_n} = {ratio:.3f} (target <= 0.700)")
    n99 = smallest_n(hwmatrix_fixed, noise, 0.99, T, fixed_grid) or fixed_grid[-1] + 1
    n90 = smallest_n(hwmatrix_fixed, noise, 0.90, T, fixed_grid) or fixed_grid[-1] + 1
    print(f"  (the fixed-n rule reaches 0.99 at n = {n99}: {mean_pairs / n99:.3f}x; 0.90 at n = {n90}: "
          f"{mean_pairs / n90:.3f}x)")
    na_a, na_b = noise.draw(T, MAX_PAIRS, 0.0, native_cv), noise.draw(T, MAX_PAIRS, SHIFT, native_cv)
    nat, nat_n = sequential(na_a, na_b)
    print(f"at this machine's native CV {native_cv:.1%}: called slower {rates(nat, True):.3f} within "
          f"{MAX_PAIRS} pairs, mean pairs {nat_n.mean():.1f}")

    # ---- item 9: the rules people use, on the same samples
    fa, fb = aa_a[:, :FIXED_N], aa_b[:, :FIXED_N]
    ga, gb = ab_a[:, :FIXED_N], ab_b[:, :FIXED_N]
    high = pinpoint_high_threshold(FIXED_N, rng)
    rules = {
        "3-sigma (runs' SD)": three_sigma,
        "asv (1.1x + MWU p<0.002)": asv,
        "Perfherder (t>7, >=2%)": perfherder,
        "Pinpoint (MWU+KS, 3-way)": lambda a, b: pinpoint(a, b, pinpoint_high_threshold(a.shape[1], rng)),
        "hwmatrix fixed-n (stats.py)": hwmatrix_fixed,
    }
    grid = [3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40]
    print()
    print(f"## Rules side by side (same samples; fixed rules at n = {FIXED_N} per side)")
    print("| rule | A/A false calls | A/B called slower | n per side for 90% power |")
    print("|---|---|---|---|")
    for name, rule in rules.items():
        if name.startswith("Pinpoint"):
            codes_aa, codes_ab = pinpoint(fa, fb, high), pinpoint(ga, gb, high)
        else:
            codes_aa, codes_ab = rule(fa, fb), rule(ga, gb)
        need = smallest_n(rule, noise, 0.9, T, grid)
        print(f"| {name} | {rates(codes_aa, False):.3f} | {rates(codes_ab, True):.3f} | "
              f"{need if need else '> 40'} |")
    print(f"| sequential (this) | {false_rate:.3f} | {power:.3f} | mean {mean_pairs:.1f} pairs, max {MAX_PAIRS} |")

    real_comparisons(args.store, rng)

    # ---- item 3: estimators at fixed n
    print()
    print(f"## Estimators (n = {FIXED_N} per side; permutation test p < 0.05 and >= 2%, so "
          "false calls are controlled for each and power is the difference)")
    print(f"| estimator | A/A false calls (CV {CV:.0%}) | A/B {SHIFT:+.0%} slower (CV {CV:.0%}) | "
          f"A/A false calls (native CV {native_cv:.1%}) | A/B {SHIFT:+.0%} slower (native CV) |")
    print("|---|---|---|---|---|")
    eT = T
    na_a, na_b = noise.draw(eT, FIXED_N, 0.0, native_cv), noise.draw(eT, FIXED_N, 0.0, native_cv)
    nb_a, nb_b = noise.draw(eT, FIXED_N, 0.0, native_cv), noise.draw(eT, FIXED_N, SHIFT, native_cv)
    best = None
    for name, est in ESTIMATORS.items():
        r = [rates(permutation_calls(fa[:eT], fb[:eT], est, rng), False),
             rates(permutation_calls(ga[:eT], gb[:eT], est, rng), True),
             rates(permutation_calls(na_a, na_b, est, rng), False),
             rates(permutation_calls(nb_a, nb_b, est, rng), True)]
        print(f"| {name} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} |")
        score = r[1] + r[3]
        if best is None or score > best[1]:
            best = (name, score)
    print(f"recommended on this noise: {best[0]} (highest power at both CVs; "
          "stats.py's default is unchanged)")

    print()
    print("## Real-engine figures (process CV before/after calibration and the guard, idle and "
          "under a CPU hog): not measured yet: calibration and the busy-machine guard (issue #13 items 1-2) do not exist yet")
    print(f"bench time {time.monotonic() - t0:.1f} s")
    print(f"false_call_rate={false_rate:.3f} power={power:.3f} processes_vs_fixed={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
