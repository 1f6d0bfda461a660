"""Statistics for `hwmatrix compare`: what may be called a change.

Verdicts compare samples (one per engine process) of one cell on one hardware class (the caller
never mixes classes). A change is called only when three things agree - a significance
test after multiple-comparison control, an effect of at least `min_effect`, and a
bootstrap CI of the ratio that excludes 1 - so that neither a lucky p-value nor a noisy
big ratio alone produces "slower"/"faster". Metrics are throughput-like (higher is
better): ratio = centre(cand) / centre(base) < 1 means the candidate is slower.

The centre is the 20% trimmed mean of the process values by default (``estimator``), tested
with Yuen's trimmed-mean t-test (scipy's ``ttest_ind(trim=)``): contention only ever takes
time away, so a few slow processes skew a mean, and on this project's 2-core VMs the trimmed
mean gave +8 points of power over the mean at the machines' own CV with the same false-call
rate (bench/verdicts.py, bench/README.md "Estimators"). ``mean`` (Welch or Mann-Whitney, by
a normality check) and ``median`` (Mann-Whitney) stay available.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import special, stats

from agent.spec.sequential import sequential_verdict

VERDICTS = ("slower", "faster", "same", "unknown", "same binary")


@dataclass
class Comparison:
    metric: str
    n_base: int
    n_cand: int
    mean_base: float | None
    mean_cand: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_adjusted: float | None
    test: str
    verdict: str
    cv_base: float | None
    cv_cand: float | None
    warnings: list[str] = field(default_factory=list)
    more_runs: int | None = None

    def as_dict(self) -> dict:
        """Plain dict for JSON output and the store."""
        return asdict(self)


@dataclass(frozen=True)
class Settings:
    min_effect: float = 0.02
    equivalence: float = 0.02
    alpha: float = 0.05
    test: str = "auto"
    correction: str = "holm"
    n_boot: int = 2000
    cv_warn: float = 0.05
    min_samples: int = 9
    seed: int = 0
    estimator: str = "trimmed"      # the centre of process values: trimmed (20%) | mean | median


ESTIMATORS = ("trimmed", "mean", "median")
TRIM = 0.2          # cut from each end by the trimmed mean (and Yuen's test)


def ratio_note(estimator: str = Settings.estimator) -> str:
    """How a ratio and its CI were made, for the footers under comparison tables."""
    name = {"trimmed": f"{TRIM:.0%} trimmed mean"}.get(estimator, estimator)
    ci = "Yuen's CI (trimmed-mean standard errors)" if estimator == "trimmed" else "a bootstrap CI"
    return f"ratio = candidate {name} / baseline {name} of the per-process values, with {ci}"


# ---------------------------------------------------------------- small helpers

def _clean(samples, side: str, warnings: list[str]) -> np.ndarray:
    """Drop NaN/inf samples (a failed parse) but say so, rather than poisoning the mean."""
    a = np.asarray(list(samples), dtype=float)
    bad = ~np.isfinite(a)
    if bad.any():
        warnings.append(f"{side}: dropped {int(bad.sum())} non-finite sample(s)")
        a = a[~bad]
    return a


def _cv(a: np.ndarray) -> float | None:
    """Coefficient of variation (sample SD / mean); None when undefined."""
    if len(a) < 2:
        return None
    m = a.mean()
    if m == 0:
        return None
    return float(a.std(ddof=1) / abs(m))


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Welch t-test p, computed directly (scipy's wrapper dominates run time
    in the 1,000-trial simulations). Zero variance on both sides: exact answer."""
    na, nb = len(a), len(b)
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    diff = b.mean() - a.mean()
    se2 = va + vb
    if se2 == 0:
        return 1.0 if diff == 0 else 0.0
    t = diff / math.sqrt(se2)
    df = se2 ** 2 / ((va ** 2 / (na - 1) if va else 0.0) + (vb ** 2 / (nb - 1) if vb else 0.0))
    return float(2 * special.stdtr(df, -abs(t)))


def _mannwhitney_p(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _trimmed_parts(a: np.ndarray) -> tuple[float, float, int]:
    """(trimmed mean, winsorized sum of squares / (h - 1), h): one side of Yuen's test, as
    scipy.stats.ttest_ind(trim=TRIM) computes it."""
    a = np.sort(a)
    n = len(a)
    g = int(TRIM * n)
    h = n - 2 * g
    win = np.clip(a, a[g], a[n - g - 1])
    return float(a[g:n - g].mean()), float(((win - win.mean()) ** 2).sum() / (h - 1)), h


def _yuen_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Yuen trimmed-mean t-test p, computed directly: scipy's ttest_ind(trim=) gives
    the same p, but its wrapper was most of a comparison's time (0.80 ms a row, 0.13 ms with
    this), and the compare page makes 70,000 rows. Constant trimmed sides fall back to Welch's
    exact answer."""
    (ma, va, ha), (mb, vb, hb) = _trimmed_parts(a), _trimmed_parts(b)
    da, db = va / ha, vb / hb
    se2 = da + db
    if not se2 > 0:
        return welch_p(a, b)
    df = se2 ** 2 / (da ** 2 / (ha - 1) + db ** 2 / (hb - 1))
    return float(2 * special.stdtr(df, -abs(mb - ma) / math.sqrt(se2)))


def _centres(samples: np.ndarray, estimator: str) -> np.ndarray:
    """The estimator along the last axis (so bootstrap resamples go in one call)."""
    if estimator == "mean":
        return samples.mean(axis=-1)
    if estimator == "median":
        return np.median(samples, axis=-1)
    if estimator == "trimmed":
        n = samples.shape[-1]
        k = int(TRIM * n)
        return np.sort(samples, axis=-1)[..., k:n - k].mean(axis=-1)
    raise ValueError(f"unknown estimator {estimator!r}: use {', '.join(ESTIMATORS)}")


def centre(samples, estimator: str = "trimmed") -> float:
    """One side's centre under ``estimator``."""
    return float(_centres(np.asarray(samples, dtype=float), estimator))


def _looks_non_normal(a: np.ndarray) -> bool:
    """Shapiro-Wilk p < 0.05 with n >= 8 (fewer samples give the test no power)."""
    if len(a) < 8 or np.ptp(a) == 0:
        return False
    return bool(stats.shapiro(a).pvalue < 0.05)


def _choose_test(a: np.ndarray, b: np.ndarray, setting: str, estimator: str = "mean") -> str:
    """auto: the test that goes with the estimator (trimmed: Yuen; median: Mann-Whitney;
    mean: Welch, or Mann-Whitney where a side looks non-normal)."""
    if setting in ("welch", "mann-whitney", "yuen"):
        return setting
    if setting != "auto":
        raise ValueError(f"unknown test {setting!r}: use welch, mann-whitney, yuen or auto")
    if estimator == "trimmed":
        return "yuen"
    if estimator == "median":
        return "mann-whitney"
    return "mann-whitney" if (_looks_non_normal(a) or _looks_non_normal(b)) else "welch"


_TESTS = {"welch": welch_p, "mann-whitney": _mannwhitney_p, "yuen": _yuen_p}


def _yuen_ratio_ci(a: np.ndarray, b: np.ndarray, alpha: float) -> tuple[float, float] | None:
    """CI of trimmed(b)/trimmed(a) from Yuen's standard errors (winsorized variances), on the
    log scale by the delta method. A percentile bootstrap does not suit a trimmed mean: a
    resample can hold more slow processes than the trim cuts, which is what trimming is for."""
    parts = []
    for x in (a, b):
        n = len(x)
        k = int(TRIM * n)
        h = n - 2 * k
        s = np.sort(x)
        centre_x = s[k:n - k].mean()
        if centre_x <= 0 or h < 2:
            return None
        winsorized = np.clip(s, s[k], s[n - k - 1])
        parts.append(((n - 1) * winsorized.var(ddof=1) / (h * (h - 1)) / centre_x ** 2, h, centre_x))
    (qa, ha, ta), (qb, hb, tb) = parts
    ratio, q = tb / ta, qa + qb
    if q == 0:
        return float(ratio), float(ratio)
    df = q ** 2 / (qa ** 2 / (ha - 1) + qb ** 2 / (hb - 1))
    half = float(special.stdtrit(df, 1 - alpha / 2)) * math.sqrt(q)
    return float(ratio * math.exp(-half)), float(ratio * math.exp(half))


def _ratio_ci(a: np.ndarray, b: np.ndarray, settings: Settings) -> tuple[float, float] | None:
    """The ratio's CI as the estimator wants it: Yuen's for the trimmed mean, else the bootstrap."""
    if settings.estimator == "trimmed":
        return _yuen_ratio_ci(a, b, settings.alpha)
    return _bootstrap_ratio_ci(a, b, settings)


def _bootstrap_ratio_ci(a: np.ndarray, b: np.ndarray, settings: Settings) -> tuple[float, float] | None:
    """Percentile bootstrap CI of centre(b)/centre(a) (the settings' estimator), vectorized
    with an (n_boot, n) index matrix per side. Level is 1 - alpha (95% at the default)."""
    rng = np.random.default_rng(settings.seed)
    mb_a = _centres(a[rng.integers(0, len(a), size=(settings.n_boot, len(a)))], settings.estimator)
    mb_b = _centres(b[rng.integers(0, len(b), size=(settings.n_boot, len(b)))], settings.estimator)
    if (mb_a <= 0).any():
        return None
    lo, hi = np.percentile(mb_b / mb_a, [100 * settings.alpha / 2, 100 * (1 - settings.alpha / 2)])
    return float(lo), float(hi)


# ---------------------------------------------------------------- public API

def adjust_pvalues(pvalues: list[float], method: str) -> list[float]:
    """Holm (family-wise error) or Benjamini-Hochberg (false discovery rate) adjusted
    p-values, in the input order, so a sweep of many cells does not manufacture changes."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    ps = p[order]
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ps))
    elif method == "bh":
        adj = np.minimum.accumulate((m / np.arange(1, m + 1) * ps)[::-1])[::-1]
        adj = np.minimum(1.0, adj)
    else:
        raise ValueError(f"unknown correction {method!r}: use holm or bh")
    out = np.empty(m)
    out[order] = adj
    return out.tolist()


def ci_half_width_pct(samples: list[float], confidence: float = 0.95) -> float:
    """t-based CI half-width of the mean, in % of the mean: the adaptive repetitions loop
    stops when this is small enough. inf when it cannot be known yet (< 2 samples)."""
    a = np.asarray(samples, dtype=float)
    n = len(a)
    if n < 2 or a.mean() == 0:
        return math.inf
    t = special.stdtrit(n - 1, (1 + confidence) / 2)
    return float(t * a.std(ddof=1) / math.sqrt(n) / abs(a.mean()) * 100)


def power_z(alpha: float = 0.05, power: float = 0.8) -> float:
    """z_(1-alpha/2) + z_power: the normal approximation's factor for a two-sided test."""
    return float(special.ndtri(1 - alpha / 2) + special.ndtri(power))


def runs_needed_at(cv2: float, effect: float = 0.02, alpha: float = 0.05, power: float = 0.8) -> int:
    """Samples per side to detect a relative ``effect`` at ``alpha`` (two-sided) with ``power``
    where the squared CV is ``cv2``: n = 2 (z_a + z_b)^2 cv^2 / effect^2. At least 3, the
    fewest a verdict accepts."""
    if effect <= 0:
        raise ValueError("a change of 0 needs infinitely many samples")
    return max(3, math.ceil(2 * power_z(alpha, power) ** 2 * cv2 / effect ** 2))


def runs_needed(samples_a, samples_b, effect: float = 0.02, alpha: float = 0.05, power: float = 0.8) -> int:
    """Normal-approximation samples per side (``runs_needed_at``), given the pooled CV."""
    cva, cvb = _cv(np.asarray(samples_a, float)), _cv(np.asarray(samples_b, float))
    if cva is None or cvb is None:
        raise ValueError("runs_needed needs at least 2 samples (and a non-zero mean) per side")
    return runs_needed_at((cva ** 2 + cvb ** 2) / 2, effect, alpha, power)


def _decide(c: Comparison, base: np.ndarray, cand: np.ndarray, settings: Settings) -> Comparison:
    """Set verdict and more_runs from p_adjusted, ratio and CI (rules in compare())."""
    c.more_runs = None
    if c.verdict == "same binary":
        return c
    n_min = min(c.n_base, c.n_cand)
    if (c.ratio is not None and c.ci_low is not None and c.p_adjusted is not None and n_min >= 3):
        significant = c.p_adjusted < settings.alpha
        big = abs(c.ratio - 1) >= settings.min_effect
        excludes_one = c.ci_high < 1 or c.ci_low > 1
        if significant and big and excludes_one:
            c.verdict = "slower" if c.ratio < 1 else "faster"
            return c
        if 1 - settings.equivalence <= c.ci_low and c.ci_high <= 1 + settings.equivalence:
            c.verdict = "same"
            return c
    c.verdict = "unknown"
    try:
        need = runs_needed(base, cand, effect=settings.min_effect, alpha=settings.alpha)
    except ValueError:
        need = settings.min_samples
    c.more_runs = max(1, need - n_min)
    return c


def compare(base: list[float], cand: list[float], metric: str = "tps", settings: Settings = Settings(),
            same_binary: bool = False) -> Comparison:
    """Compare per-repetition samples of one cell on one hardware class.

    Verdicts: same_binary -> "same binary" (nothing to test). < 3 samples a side ->
    "unknown". p_adjusted < alpha AND |ratio - 1| >= min_effect AND CI excludes 1 ->
    "slower"/"faster". CI inside [1 - equivalence, 1 + equivalence] -> "same". Otherwise
    "unknown", with more_runs = extra samples per side likely to settle it.
    """
    warnings: list[str] = []
    a, b = _clean(base, "base", warnings), _clean(cand, "cand", warnings)
    test = _choose_test(a, b, settings.test, settings.estimator)
    c = Comparison(metric=metric, n_base=len(a), n_cand=len(b),
                   mean_base=float(a.mean()) if len(a) else None,
                   mean_cand=float(b.mean()) if len(b) else None,
                   ratio=None, ci_low=None, ci_high=None, p_value=None, p_adjusted=None,
                   test=test, verdict="unknown", cv_base=_cv(a), cv_cand=_cv(b), warnings=warnings)
    for side, cv, n in (("base", c.cv_base, c.n_base), ("cand", c.cv_cand, c.n_cand)):
        if cv is not None and cv > settings.cv_warn:
            warnings.append(f"{side} CV {cv * 100:.1f}% > {settings.cv_warn * 100:g}%")
        if n < settings.min_samples:
            warnings.append(f"{side}: only {n} samples (< {settings.min_samples})")
    if same_binary:
        c.verdict = "same binary"
        return c
    if c.mean_base is not None and c.mean_cand is not None:
        if c.mean_base > 0:
            centre_base = centre(a, settings.estimator)
            c.ratio = centre(b, settings.estimator) / centre_base if centre_base > 0 else None
        else:
            warnings.append("base mean <= 0: ratio undefined")
    if c.ratio is not None and min(c.n_base, c.n_cand) >= 3:
        ci = _ratio_ci(a, b, settings)
        if ci is not None:
            c.ci_low, c.ci_high = ci
        c.p_value = _TESTS[test](a, b)
        c.p_adjusted = c.p_value
    return _decide(c, a, b, settings)


def compare_many(pairs: list[tuple[list[float], list[float], str]], settings: Settings = Settings()) -> list[Comparison]:
    """Compare every (base, cand, metric) cell of a sweep, adjust the p-values across ALL
    of them (settings.correction), and re-derive each verdict from the adjusted value."""
    results = [compare(b, c, m, settings) for b, c, m in pairs]
    idx = [i for i, r in enumerate(results) if r.p_value is not None]
    adjusted = adjust_pvalues([results[i].p_value for i in idx], settings.correction)
    for i, p in zip(idx, adjusted):
        r = results[i]
        r.p_adjusted = p
        warnings: list[str] = []
        _decide(r, _clean(pairs[i][0], "base", warnings), _clean(pairs[i][1], "cand", warnings), settings)
    return results


def compare_sequential(base: list[float], cand: list[float], metric: str = "tps",
                       settings: Settings = Settings(), max_pairs: int | None = None,
                       min_pairs: int = 3) -> Comparison:
    """The verdict of interleaved pairs (base[i], cand[i]) under the sequential rule
    (agent.spec.sequential: an anytime-valid confidence sequence of the paired log-ratio, so
    it may be asked after every pair), as a Comparison for tables and the store. Not yet
    settled reads "unknown", with more_runs the extra pairs a fixed-n design would need."""
    warnings: list[str] = []
    a, b = _clean(base, "base", warnings), _clean(cand, "cand", warnings)
    v = sequential_verdict(a.tolist(), b.tolist(), alpha=settings.alpha, min_effect=settings.min_effect,
                           equivalence=settings.equivalence, min_pairs=min_pairs, max_pairs=max_pairs)
    a, b = a[:v.pairs], b[:v.pairs]
    c = Comparison(metric=metric, n_base=v.pairs, n_cand=v.pairs,
                   mean_base=float(a.mean()) if v.pairs else None,
                   mean_cand=float(b.mean()) if v.pairs else None,
                   ratio=v.ratio, ci_low=v.ci_low, ci_high=v.ci_high, p_value=None, p_adjusted=None,
                   test="sequential", verdict=v.verdict if v.verdict in VERDICTS else "unknown",
                   cv_base=_cv(a), cv_cand=_cv(b), warnings=warnings)
    if c.verdict == "unknown":
        try:
            c.more_runs = max(1, runs_needed(a, b, effect=settings.min_effect, alpha=settings.alpha) - v.pairs)
        except ValueError:
            c.more_runs = max(1, settings.min_samples - v.pairs)
    return c


# ---------------------------------------------------------------- simulation

def simulate_verdicts(n_trials: int, n: int, cv: float, shift: float, seed: int = 0,
                      settings: Settings = Settings()) -> Counter:
    """Verdict counts over n_trials simulated comparisons with known truth: normal samples,
    base mean 100, candidate mean 100 * (1 + shift), both with the given CV."""
    rng = np.random.default_rng(seed)
    base = rng.normal(100.0, 100.0 * cv, size=(n_trials, n))
    cand = rng.normal(100.0 * (1 + shift), 100.0 * (1 + shift) * cv, size=(n_trials, n))
    return Counter(compare(base[i].tolist(), cand[i].tolist(), settings=settings).verdict
                   for i in range(n_trials))


def simulate_rates(n_trials: int = 1000, seed: int = 0) -> dict:
    """The rates issue #3 promises, measured at default settings:
    A/A (CV 2%, n=10) false slower/faster; true 5% slowdown (CV 2%, n=10) called slower;
    few noisy samples (n=4, CV 15%, true 3% slowdown): wrong calls (faster or same) and
    unknowns."""
    aa = simulate_verdicts(n_trials, 10, 0.02, 0.0, seed)
    s5 = simulate_verdicts(n_trials, 10, 0.02, -0.05, seed + 1)
    fn = simulate_verdicts(n_trials, 4, 0.15, -0.03, seed + 2)
    return {
        "aa_false_call_rate": (aa["slower"] + aa["faster"]) / n_trials,
        "shift5_detect_rate": s5["slower"] / n_trials,
        "few_noisy_wrong_rate": (fn["faster"] + fn["same"]) / n_trials,
        "few_noisy_unknown_rate": fn["unknown"] / n_trials,
    }
