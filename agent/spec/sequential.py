"""The stopping rule for interleaved A/B processes: settle a comparison as early as the data
allow, without the false calls that re-testing after every pair manufactures.

Method: an anytime-valid confidence sequence for the mean paired log-ratio
d_i = log(cand_i) - log(base_i) of the i-th interleaved pair, from the sequential t-test's
mixture likelihood ratio (Lai 1976, "On confidence sequences", Ann. Statist. 4(2)). For a
candidate mean mu, with t_n(mu) the one-sample t statistic of d_1..d_n, nu = n - 1 and a
normal prior N(0, g) on the standardized effect (mu - mu0) / sigma (right-Haar prior on
sigma), the Bayes factor

    E_n(mu) = (1 + n g)^(-1/2) * ((1 + t^2/nu) / (1 + t^2/(nu (1 + n g))))^((nu + 1)/2)

is a test martingale under "the true mean is mu" (Perez-Ortiz, Lardy, de Heide, Grunwald,
"E-statistics, group invariance and anytime-valid testing", Ann. Statist. 2024). Ville's
inequality gives P(E_n(mu) >= 1/alpha for some n) <= alpha, whatever the stopping rule, so
C_n = {mu : E_n(mu) < 1/alpha} covers the true mean at every n at once. It is an interval
xbar_n +- t*_n s_n / sqrt(n), with t*_n in closed form (critical_t). g = 4 by default puts
the prior's weight on standardized paired effects near 2, e.g. a 5% change at a process CV of
2% (paired SD 2.8%); any g keeps the guarantee, it only moves where the rule is quickest.

Verdicts (mirroring coordinator.results.stats: a call needs both certainty and size):
slower when C_n lies below 0 and the estimate is at least min_effect down; faster likewise
up; same when C_n lies inside [log(1 - equivalence), log(1 + equivalence)]; else continue,
and unknown once max_pairs is reached. Error guarantee under optional stopping: the chance of
ever calling slower or faster when A and B do not differ, and of ever calling same when they
differ by more than `equivalence`, is at most alpha each (exactly so for normal log-ratios,
which pairing of identically distributed processes makes symmetric; bench/verdicts.py measures
it on resampled real noise).

Pure numpy, so the agent (which never imports coordinator) can stop its own A/B loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SETTLED = ("slower", "faster", "same")
VERDICT_METRICS = ("pp_tps", "tg_tps")      # what until: verdict may wait on


@dataclass(frozen=True)
class SequentialVerdict:
    verdict: str                 # slower | faster | same | continue | unknown (max_pairs reached)
    pairs: int                   # interleaved pairs used
    ratio: float | None          # exp(mean log-ratio): cand / base, < 1 = candidate slower
    ci_low: float | None         # anytime-valid interval of the ratio (None: not yet bounded)
    ci_high: float | None


def critical_t(n: np.ndarray | int, alpha: float = 0.05, g: float = 4.0) -> np.ndarray:
    """t*_n with E_n = 1/alpha: solve (1+u)/(1+u/c) = K for u = t^2/nu, c = 1 + n g,
    K = (sqrt(c)/alpha)^(2/n). inf where no finite t reaches 1/alpha yet (K >= c)."""
    n = np.asarray(n, dtype=float)
    nu = n - 1
    c = 1 + n * g
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        k = (np.sqrt(c) / alpha) ** (2 / n)
        u = (k - 1) / (1 - k / c)
        t = np.sqrt(nu * u)
    return np.where((k < c) & (nu > 0), t, np.inf)


def log_ratio_sequence(base, cand, alpha: float = 0.05, g: float = 4.0):
    """Running (mean, low, high) of the mean paired log-ratio after 1..N pairs, along the
    last axis (so a simulation can pass (trials, N) arrays). low/high are the confidence
    sequence's bounds, -inf/+inf while unbounded."""
    d = np.log(np.asarray(cand, dtype=float)) - np.log(np.asarray(base, dtype=float))
    n = np.arange(1, d.shape[-1] + 1, dtype=float)
    mean = np.cumsum(d, axis=-1) / n
    centred = d - d[..., :1]                      # variance without cancellation
    s1, s2 = np.cumsum(centred, axis=-1), np.cumsum(centred ** 2, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(n > 1, (s2 - s1 ** 2 / n) / np.maximum(n - 1, 1), np.inf)
    with np.errstate(invalid="ignore"):         # inf x 0 (unbounded yet, no spread): unbounded
        half = critical_t(n, alpha, g) * np.sqrt(np.maximum(var, 0.0) / n)
    half = np.where(np.isnan(half), np.inf, half)
    return mean, mean - half, mean + half


def decide(mean, low, high, min_effect: float = 0.02, equivalence: float = 0.02):
    """Verdict codes per position: 1 slower, 2 faster, 3 same, 0 continue (vectorized)."""
    slower = (high < 0) & (mean <= math.log(1 - min_effect))
    faster = (low > 0) & (mean >= math.log(1 + min_effect))
    same = (low >= math.log(1 - equivalence)) & (high <= math.log(1 + equivalence))
    return np.select([slower, faster, same], [1, 2, 3], 0)


def sequential_verdict(base: list[float], cand: list[float], alpha: float = 0.05,
                       min_effect: float = 0.02, equivalence: float = 0.02,
                       min_pairs: int = 3, max_pairs: int | None = None,
                       g: float = 4.0) -> SequentialVerdict:
    """The A/B loop's question after each pair: settled (slower/faster/same) or continue.

    base[i] and cand[i] are the i-th interleaved pair's process values (throughput, higher
    is better); extra values on the longer side wait for their partner. The first verdict
    reached at or after min_pairs stands (the loop should stop there): the guarantee covers
    every n, so looking after each pair is free. At max_pairs without one: unknown.
    """
    n = min(len(base), len(cand))
    if max_pairs is not None:
        n = min(n, max_pairs)
    pairs_b = np.asarray(base[:n], dtype=float)
    pairs_c = np.asarray(cand[:n], dtype=float)
    if n == 0:
        return SequentialVerdict("continue", 0, None, None, None)
    if not (np.all(np.isfinite(pairs_b)) and np.all(np.isfinite(pairs_c))):
        raise ValueError("process values must be finite")
    if not (np.all(pairs_b > 0) and np.all(pairs_c > 0)):
        raise ValueError("process values must be > 0 (throughput)")
    mean, low, high = log_ratio_sequence(pairs_b, pairs_c, alpha, g)
    codes = decide(mean, low, high, min_effect, equivalence)
    codes[:max(min_pairs, 1) - 1] = 0
    hit = np.flatnonzero(codes)
    at = int(hit[0]) if len(hit) else n - 1
    verdict = SETTLED[codes[at] - 1] if len(hit) else (
        "unknown" if max_pairs is not None and n >= max_pairs else "continue")
    bounded = math.isfinite(low[at]) and math.isfinite(high[at])
    return SequentialVerdict(verdict, at + 1, float(math.exp(mean[at])),
                             float(math.exp(low[at])) if bounded else None,
                             float(math.exp(high[at])) if bounded else None)
