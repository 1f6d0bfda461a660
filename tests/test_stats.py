"""coordinator.results.stats: verdicts on synthetic samples with known truth (issue #3), and the
pieces (p-value adjustment, CI width, sample-size estimate) checked by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from coordinator.results.stats import (Comparison, Settings, adjust_pvalues, ci_half_width_pct, compare,
                               compare_many, runs_needed, simulate_rates, simulate_verdicts)

N_TRIALS = 1000


# ------------------------------------------------------------ simulated rates (issue #3)

def test_aa_at_defaults_calls_slower_or_faster_at_most_5_percent():
    counts = simulate_verdicts(N_TRIALS, n=10, cv=0.02, shift=0.0, seed=0)
    rate = (counts["slower"] + counts["faster"]) / N_TRIALS
    print(f"\nA/A CV 2% n=10: {dict(counts)} -> false slower/faster rate {rate:.3f}")
    assert rate <= 0.05


def test_true_5pct_slowdown_cv2_n10_is_called_slower_at_least_90_percent_never_faster():
    counts = simulate_verdicts(N_TRIALS, n=10, cv=0.02, shift=-0.05, seed=1)
    rate = counts["slower"] / N_TRIALS
    print(f"\n5% slowdown CV 2% n=10: {dict(counts)} -> detect rate {rate:.3f}")
    assert rate >= 0.90
    assert counts["faster"] == 0


def test_true_5pct_speedup_is_called_faster():
    counts = simulate_verdicts(200, n=10, cv=0.02, shift=0.05, seed=3)
    assert counts["faster"] / 200 >= 0.90 and counts["slower"] == 0


def test_few_noisy_samples_give_unknown_rather_than_wrong_calls():
    counts = simulate_verdicts(N_TRIALS, n=4, cv=0.15, shift=-0.03, seed=2)
    wrong = (counts["faster"] + counts["same"]) / N_TRIALS
    unknown = counts["unknown"] / N_TRIALS
    print(f"\nn=4 CV 15% true -3%: {dict(counts)} -> wrong {wrong:.3f}, unknown {unknown:.3f}")
    assert unknown >= 0.80
    assert wrong <= 0.05


def test_aa_rate_check_can_fail_when_thresholds_are_loose():
    """The A/A measurement is not vacuous: with no minimum effect and alpha 0.5 it trips."""
    loose = Settings(min_effect=0.0, alpha=0.5)
    counts = simulate_verdicts(200, n=10, cv=0.02, shift=0.0, seed=0, settings=loose)
    assert (counts["slower"] + counts["faster"]) / 200 > 0.05


def test_aa_sweeps_through_compare_many_keep_false_calls_rare_and_fewer_than_uncorrected():
    """100 A/A sweeps of 10 cells. Per cell: <= 5% slower/faster under Holm and BH. Per
    sweep: Holm and BH bound "any false call" near alpha (measured about 3.5% over 1,000
    sweeps; 10% here leaves room for the noise of 100 sweeps), well under the same cells
    judged one at a time without correction (about 25%)."""
    rng = np.random.default_rng(7)
    sweeps = {"holm": 0, "bh": 0, "none": 0}
    cells = {"holm": 0, "bh": 0, "none": 0}
    for _ in range(100):
        pairs = [(rng.normal(100, 2, 10).tolist(), rng.normal(100, 2, 10).tolist(), f"cell{i}")
                 for i in range(10)]
        runs = {"holm": compare_many(pairs, Settings(correction="holm")),
                "bh": compare_many(pairs, Settings(correction="bh")),
                "none": [compare(b, c, m) for b, c, m in pairs]}
        for name, results in runs.items():
            called = sum(r.verdict in ("slower", "faster") for r in results)
            cells[name] += called
            sweeps[name] += called > 0
    print(f"\nA/A sweeps of 10 cells: sweeps with any false call {sweeps}/100, false cells {cells}/1000")
    for name in ("holm", "bh"):
        assert cells[name] / 1000 <= 0.05
        assert sweeps[name] / 100 <= 0.10
        assert sweeps[name] < sweeps["none"]


def test_simulate_rates_reports_the_four_promised_rates():
    rates = simulate_rates(n_trials=300, seed=0)
    print(f"\nsimulate_rates(300): {rates}")
    assert set(rates) == {"aa_false_call_rate", "shift5_detect_rate", "few_noisy_wrong_rate",
                          "few_noisy_unknown_rate"}
    assert rates["aa_false_call_rate"] <= 0.05 and rates["shift5_detect_rate"] >= 0.90
    assert rates["few_noisy_wrong_rate"] <= 0.05 and rates["few_noisy_unknown_rate"] >= 0.80


# ------------------------------------------------------------ multiple-comparison control

def test_holm_matches_hand_computed_example():
    # sorted .001 .03 .04 -> x3 x2 x1 = .003 .06 .04 -> running max .003 .06 .06
    assert adjust_pvalues([0.001, 0.04, 0.03], "holm") == pytest.approx([0.003, 0.06, 0.06])
    # sorted .005 .01 .03 .04 -> x4 x3 x2 x1 = .02 .03 .06 .04 -> running max
    assert adjust_pvalues([0.01, 0.04, 0.03, 0.005], "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_pvalues([0.5, 0.6], "holm") == pytest.approx([1.0, 1.0])  # capped at 1


def test_bh_matches_hand_computed_example():
    # sorted .001 .03 .04 -> x3/1 x3/2 x3/3 = .003 .045 .04 -> running min from the top
    assert adjust_pvalues([0.001, 0.04, 0.03], "bh") == pytest.approx([0.003, 0.04, 0.04])
    # .005*4 .01*2 .03*4/3 .04*1 = .02 .02 .04 .04
    assert adjust_pvalues([0.01, 0.04, 0.03, 0.005], "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_single_pvalue_is_unchanged_and_unknown_method_is_refused():
    assert adjust_pvalues([0.04], "holm") == pytest.approx([0.04])
    assert adjust_pvalues([0.04], "bh") == pytest.approx([0.04])
    assert adjust_pvalues([], "holm") == []
    with pytest.raises(ValueError):
        adjust_pvalues([0.1], "bonferroni-ish")


def _p04_pair():
    """A 2.5% slowdown whose Welch p is about 0.042 on its own (n=10, sd about 2.4)."""
    devs = np.linspace(-1, 1, 10) * 3.8
    return (100 + devs).tolist(), (97.5 + devs).tolist()


def test_p_004_alone_is_slower_but_not_among_20_comparisons_under_holm():
    base, cand = _p04_pair()
    alone = compare(base, cand, "tg_tps", Settings(estimator="mean"))
    assert alone.test == "welch"
    assert 0.03 < alone.p_value < 0.05 and alone.p_adjusted == alone.p_value
    assert alone.verdict == "slower"

    flat = [100.0, 101.0, 99.0, 100.5, 99.5, 100.0, 101.0, 99.0, 100.5, 99.5]
    pairs = [(base, cand, "tg_tps")] + [(flat, flat, f"other{i}") for i in range(19)]
    many = compare_many(pairs, Settings(correction="holm", estimator="mean"))
    assert many[0].p_value == pytest.approx(alone.p_value)
    assert many[0].p_adjusted == pytest.approx(min(1.0, 20 * alone.p_value))
    assert many[0].verdict == "unknown" and many[0].more_runs >= 1
    assert [c.verdict for c in many[1:]] == ["same"] * 19


# ------------------------------------------------------------ verdict rules and reporting

def test_same_binary_short_circuits_without_a_test():
    c = compare([100, 101, 99], [50, 51, 49], "tg_tps", same_binary=True)
    assert c.verdict == "same binary"
    assert c.p_value is None and c.ci_low is None and c.more_runs is None


def test_fewer_than_3_samples_is_unknown_with_more_runs():
    c = compare([100.0, 101.0], [80.0, 81.0, 79.0])
    assert c.verdict == "unknown" and c.p_value is None and c.more_runs >= 1
    assert compare([], [1.0, 2.0, 3.0]).verdict == "unknown"


def test_tight_identical_distributions_are_same():
    rng = np.random.default_rng(11)
    c = compare(rng.normal(100, 0.3, 12).tolist(), rng.normal(100, 0.3, 12).tolist())
    assert c.verdict == "same"
    assert 0.98 <= c.ci_low <= c.ratio <= c.ci_high <= 1.02


def test_warns_on_high_cv_and_fewer_than_9_samples():
    noisy = [100, 110, 90, 105, 95]  # CV about 7.9%
    c = compare(noisy, [100.0] * 12)
    assert any("base CV" in w and "> 5%" in w for w in c.warnings), c.warnings
    assert "base: only 5 samples (< 9)" in c.warnings
    assert not any(w.startswith("cand") for w in c.warnings)
    quiet = compare([100.0, 100.5, 99.5] * 3, [100.0, 100.5, 99.5] * 3)
    assert quiet.warnings == []


def test_non_finite_samples_are_dropped_with_a_warning():
    c = compare([100, 101, float("nan"), 99], [100, 101, 99])
    assert c.n_base == 3 and any("non-finite" in w for w in c.warnings)


def test_welch_p_matches_scipy():
    rng = np.random.default_rng(5)
    a, b = rng.normal(100, 2, 10), rng.normal(102, 4, 7)
    c = compare(a.tolist(), b.tolist(), settings=Settings(test="welch"))
    assert c.p_value == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)


def test_auto_picks_mann_whitney_for_outlier_heavy_samples_and_welch_otherwise_for_the_mean():
    rng = np.random.default_rng(9)
    normal = rng.normal(100, 2, 10).tolist()
    mean = Settings(estimator="mean")
    assert compare(normal, rng.normal(100, 2, 10).tolist(), settings=mean).test == "welch"
    outliers = normal[:9] + [160.0]
    assert compare(outliers, normal, settings=mean).test == "mann-whitney"
    assert compare(normal, normal, settings=Settings(test="mann-whitney")).test == "mann-whitney"


def test_as_dict_round_trips_all_fields():
    c = compare([100, 101, 99], [90, 91, 89], "pp_tps")
    d = c.as_dict()
    assert d["metric"] == "pp_tps" and d["ratio"] == pytest.approx(0.9)
    assert Comparison(**d) == c


# ------------------------------------------------------------ adaptive-loop helpers

def test_ci_half_width_pct_matches_hand_value_and_shrinks_with_more_samples():
    # mean 2, sd 1, n 3: t(0.975, 2) = 4.3027 -> 4.3027 / sqrt(3) / 2 = 124.2%
    assert ci_half_width_pct([1, 2, 3]) == pytest.approx(124.21, abs=0.01)
    assert ci_half_width_pct([5.0]) == math.inf
    rng = np.random.default_rng(4)
    widths = [ci_half_width_pct(rng.normal(100, 3, n).tolist()) for n in (5, 20, 80)]
    print(f"\nci_half_width_pct n=5,20,80: {widths}")
    assert widths[0] > widths[1] > widths[2]


def test_runs_needed_matches_normal_approximation():
    # CV 2% both sides, effect 2%: 2 * (1.96 + 0.8416)^2 = 15.7 -> 16 per side
    assert runs_needed([98, 100, 102], [98, 100, 102], effect=0.02) == 16
    # halving the effect quadruples n
    assert runs_needed([98, 100, 102], [98, 100, 102], effect=0.01) == 63
    assert runs_needed([100, 100], [100, 100]) == 3
    with pytest.raises(ValueError):
        runs_needed([100], [100, 101])


# ---------------------------------------------------------------- the process as the unit

def _record(samples, sizes, binary="x"):
    return {"status": "ok", "origin": "measured", "hardware_class": "c", "params": {},
            "engine": {"binary_hash": binary},
            "metrics": {"tg_tps": {"samples": samples, "process_sizes": sizes, "n": len(samples)}}}


def test_process_means_average_each_process_and_keep_unknown_origins_one_by_one():
    from agent.spec.record import process_means

    assert process_means([1, 3, 10, 20, 30], [2, 3]) == [2.0, 20.0]
    assert process_means([1, 2, 3], [1, 1, 1]) == [1.0, 2.0, 3.0]
    assert process_means([1, 2, 3], []) == [1.0, 2.0, 3.0]        # written before processes were tracked
    assert process_means([1, 2, 3], [2, 2]) == [1.0, 2.0, 3.0]    # sizes that don't add up are not trusted


def test_many_tight_repetitions_in_one_process_each_are_not_enough_for_a_verdict():
    """Within-process repetitions agree closely while processes differ by more: one process
    a side is one sample, so the verdict is unknown, never slower."""
    from coordinator.results.compare import judge

    base = _record([100.0, 100.1, 99.9, 100.0, 100.05] * 2, [10], binary="a")
    cand = _record([90.0, 90.1, 89.9, 90.0, 90.05] * 2, [10], binary="b")
    (result,) = judge([(base, cand, "tg_tps")])
    assert result.n_base == result.n_cand == 1
    assert result.verdict == "unknown" and result.more_runs


def test_the_same_samples_split_into_processes_can_be_called():
    from coordinator.results.compare import judge

    rng = np.random.default_rng(3)
    base = _record(rng.normal(100, 1, 12).tolist(), [1] * 12, binary="a")
    cand = _record(rng.normal(90, 1, 12).tolist(), [1] * 12, binary="b")
    (result,) = judge([(base, cand, "tg_tps")])
    assert result.n_base == 12 and result.verdict == "slower"


def test_records_without_process_sizes_are_tested_per_repetition_with_a_warning():
    from coordinator.results.compare import judge

    rng = np.random.default_rng(4)
    base = _record(rng.normal(100, 1, 12).tolist(), [], binary="a")
    cand = _record(rng.normal(90, 1, 12).tolist(), [], binary="b")
    (result,) = judge([(base, cand, "tg_tps")])
    assert result.n_base == 12 and result.verdict == "slower"
    assert any("processes not recorded" in w for w in result.warnings)


def test_the_default_centre_is_the_20pct_trimmed_mean_tested_by_yuen():
    rng = np.random.default_rng(11)
    base, cand = rng.normal(100, 1, 10), rng.normal(95, 1, 10)
    c = compare(base.tolist(), cand.tolist())
    assert c.test == "yuen"
    trimmed = lambda a: float(np.sort(a)[2:8].mean())       # int(0.2 * 10) = 2 cut from each end
    assert c.ratio == pytest.approx(trimmed(cand) / trimmed(base))
    from scipy import stats as sps
    assert c.p_value == pytest.approx(sps.ttest_ind(base, cand, equal_var=False, trim=0.2).pvalue)


def test_yuens_p_computed_directly_equals_scipys_ttest_ind_trim_for_every_size_and_spread():
    from coordinator.results.stats import _yuen_p
    rng = np.random.default_rng(12)
    for n_a, n_b in [(3, 3), (4, 9), (5, 5), (10, 10), (11, 7), (31, 40), (112, 112)]:
        for scale_b in (0.5, 1.0, 3.0):
            a = rng.normal(100, 2, n_a)
            b = rng.normal(99, 2 * scale_b, n_b) * rng.choice([1.0, 0.8], n_b, p=[0.9, 0.1])
            want = sps.ttest_ind(a, b, equal_var=False, trim=0.2).pvalue
            assert _yuen_p(a, b) == pytest.approx(want, rel=1e-9, abs=1e-15), (n_a, n_b, scale_b)
    flat = np.full(10, 5.0)
    assert _yuen_p(flat, flat) == 1.0 and _yuen_p(flat, flat + 1) == 0.0


def test_two_contended_processes_hide_a_5pct_slowdown_from_the_mean_but_not_from_the_trimmed_mean():
    """Contention only takes time away: two processes of ten that shared the CPU drag the
    mean down and widen it; the trimmed mean drops them and still calls the slowdown."""
    rng = np.random.default_rng(12)
    base = rng.normal(100, 1.5, 10)
    base[[3, 7]] = [55.0, 60.0]                 # two base processes ran next to a neighbour
    cand = rng.normal(95, 1.5, 10)
    assert compare(base.tolist(), cand.tolist(), settings=Settings(estimator="mean")).verdict != "slower"
    trimmed = compare(base.tolist(), cand.tolist())
    assert trimmed.verdict == "slower" and trimmed.ratio == pytest.approx(0.95, abs=0.015)


def test_an_unknown_estimator_is_refused():
    with pytest.raises(ValueError, match="unknown estimator"):
        compare([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], settings=Settings(estimator="mode"))
