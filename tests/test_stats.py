"""lstmlab.analysis.compare.stats against values worked by hand (the arithmetic is in each test)."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from lstmlab.analysis.compare import stats


def test_mean_and_sample_std():
    # [1, 2, 3, 4]: mean 10/4 = 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; s = sqrt(5/3) = 1.290994
    assert stats.mean([1, 2, 3, 4]) == 2.5
    assert stats.std([1, 2, 3, 4]) == pytest.approx(1.2909944, abs=1e-7)
    # the sample std (ddof = 1), not the population one (sqrt(5/4) = 1.118)
    assert stats.std([1, 2, 3, 4]) != pytest.approx(math.sqrt(5 / 4))


def test_one_value_has_no_spread_and_no_interval():
    assert stats.std([0.3]) is None
    assert stats.t_interval([0.3]) is None
    assert stats.welch_interval([0.3], [0.1, 0.2]) is None
    with pytest.raises(ValueError):
        stats.mean([])


def test_t_interval_by_hand():
    # t_{0.975, 3} = 3.182446; half width = 3.182446 · 1.290994 / sqrt(4) = 2.054260
    low, high = stats.t_interval([1, 2, 3, 4])
    assert stats.t_quantile(0.975, 3) == pytest.approx(3.182446, abs=1e-6)
    assert low == pytest.approx(2.5 - 2.054260, abs=1e-6)
    assert high == pytest.approx(2.5 + 2.054260, abs=1e-6)


def test_t_interval_two_seeds_is_wide():
    # [0.1, 0.3]: mean 0.2, s = sqrt(0.02) = 0.141421; t_{0.975, 1} = 12.706205; half = 12.706205 · 0.141421 / sqrt(2)
    #           = 1.2706205 -> [-1.0706, 1.4706]: two seeds say little
    low, high = stats.t_interval([0.1, 0.3])
    assert (low, high) == (pytest.approx(0.2 - 1.2706205, abs=1e-6), pytest.approx(0.2 + 1.2706205, abs=1e-6))


def test_welch_interval_by_hand():
    # a = [1, 2, 3, 4]: mean 2.5, s² = 5/3, s²/n = 0.416667
    # b = [2, 4, 6]:    mean 4,   s² = 4,   s²/n = 1.333333
    # diff = 4 - 2.5 = 1.5; se² = 1.75, se = 1.322876
    # df = 1.75² / (0.416667²/3 + 1.333333²/2) = 3.0625 / 0.946759 = 3.234719
    # t_{0.975, 3.234719} = 3.055713; half = 3.055713 · 1.322876 = 4.042328
    d = stats.welch_interval([1, 2, 3, 4], [2, 4, 6])
    assert d.diff == pytest.approx(1.5)
    assert d.se == pytest.approx(1.322876, abs=1e-6)
    assert d.df == pytest.approx(3.234719, abs=1e-6)
    assert d.low == pytest.approx(1.5 - 4.042328, abs=1e-5)
    assert d.high == pytest.approx(1.5 + 4.042328, abs=1e-5)


def test_welch_interval_matches_scipy():
    a, b = [0.162, 0.171, 0.158], [0.011, 0.160, 0.004, 0.009]
    d = stats.welch_interval(a, b)
    result = scipy_stats.ttest_ind(b, a, equal_var=False)
    ci = result.confidence_interval(0.95)
    assert (d.low, d.high, d.df) == (pytest.approx(ci.low), pytest.approx(ci.high), pytest.approx(result.df))


def test_welch_interval_without_spread_is_the_point():
    d = stats.welch_interval([1.0, 1.0], [3.0, 3.0])
    assert (d.diff, d.low, d.high, d.df) == (2.0, 2.0, 2.0, None)


def test_median():
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 3, 2]) == 2.5


# -- round 2: bounded intervals, exact tests, probability of improvement, Holm, power --------------------


def test_iqm_cuts_a_quarter_from_each_end():
    # n = 8: ⌊8/4⌋ = 2 cut from each end of [1, 2, 3, 4, 5, 6, 7, 100] -> mean(3, 4, 5, 6) = 4.5 (the mean is 16)
    assert stats.iqm([100, 1, 7, 2, 6, 3, 5, 4]) == 4.5
    assert stats.iqm([1, 2, 3]) == 2  # n < 4: nothing to cut, the mean
    assert stats.iqm([0.3, 0.1, 0.9, 0.5, 0.7]) == pytest.approx(scipy_stats.trim_mean([0.3, 0.1, 0.9, 0.5, 0.7], 0.25))


def test_bootstrap_interval_against_the_exact_bootstrap_distribution():
    # [0, 1, 2, 10]: the 4^4 = 256 equally likely resamples have means 0 (1 way), 0.25 (4 ways: three 0s and a 1),
    # 0.5 (4 + 6 ways), ...: P(mean ≤ 0.25) = 5/256 = 2.0% < 2.5% < P(mean ≤ 0.5) = 15/256 = 5.9%, so the 2.5%
    # quantile is 0.5. From the top: 10 (1 way), 8 (4: three 10s and a 2), 7.75 (4: three 10s and a 1):
    # P(mean ≥ 8) = 2.0% < 2.5% < P(mean ≥ 7.75) = 3.5%, so the 97.5% quantile is 7.75.
    assert stats.bootstrap_interval([0, 1, 2, 10], "mean") == (0.5, 7.75)
    # 3 values: each extreme resample has probability 1/27 = 3.7% > 2.5%: the interval is the values' range
    assert stats.bootstrap_interval([0.2, 0.5, 0.9], "mean") == (pytest.approx(0.2), pytest.approx(0.9))
    assert stats.bootstrap_interval([0.2, 0.9], "median") == (0.2, 0.9)  # n = 2: the two values


def test_bootstrap_intervals_stay_in_the_metric_range():
    groups = {"all solved": [1.0, 1.0, 1.0], "none solved": [0.25, 0.31, 0.26, 0.5],
              "mixed": [1.0, 0.26, 0.99, 0.3, 1.0], "two": [0.0, 1.0]}
    for name, values in groups.items():
        for statistic in ("mean", "median", "iqm"):
            low, high = stats.bootstrap_interval(values, statistic)
            assert min(values) <= low <= high <= max(values), (name, statistic)
    # the t-interval of the mixed group leaves [0, 1]; the bootstrap one cannot
    assert stats.t_interval(groups["two"])[1] > 1 and stats.t_interval(groups["two"])[0] < 0
    assert stats.bootstrap_interval([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert stats.bootstrap_interval([0.3]) is None  # n = 1: no interval
    mse = [1e-4, 2e-4, 0.16]
    assert stats.bootstrap_interval(mse)[0] >= 0 > stats.t_interval(mse)[0]


def test_bootstrap_is_deterministic():
    values = [0.12, 0.5, 0.33, 0.91, 0.05, 0.4]
    assert stats.bootstrap_interval(values, "iqm") == stats.bootstrap_interval(values, "iqm")
    assert stats.prob_improvement_interval(values, values[::-1], True) == \
        stats.prob_improvement_interval(values, values[::-1], True)


def test_clopper_pearson_by_hand():
    # k = 0: high solves (1-p)^n = 0.025 -> 1 - 0.025^(1/3); k = n: low = 0.025^(1/3)
    assert stats.clopper_pearson(0, 3) == (0.0, pytest.approx(1 - 0.025 ** (1 / 3)))
    assert stats.clopper_pearson(3, 3) == (pytest.approx(0.025 ** (1 / 3)), 1.0)
    low, high = stats.clopper_pearson(4, 10)  # beta quantiles: B(0.025; 4, 7) and B(0.975; 5, 6)
    assert low == pytest.approx(scipy_stats.beta.ppf(0.025, 4, 7))
    assert high == pytest.approx(scipy_stats.beta.ppf(0.975, 5, 6))
    assert stats.clopper_pearson(0, 0) is None


def test_solve_rate_test_by_hand_and_scipy():
    # 3/3 against 0/3: Boschloo's p is the largest chance, over the common rate π, of a table this extreme:
    # 2 π³ (1-π)³ at π = ½ -> 2/64 = 0.03125 (Fisher's conditional test gives 2/C(6,3) = 0.1)
    result = stats.solve_rate_test(3, 3, 0, 3)
    assert (result.test, result.p) == ("boschloo", pytest.approx(0.03125))
    assert stats.solve_rate_test(0, 3, 3, 3).p == pytest.approx(0.03125)
    assert stats.solve_rate_test(2, 3, 2, 3).p == 1.0
    big = stats.solve_rate_test(80, 150, 60, 150)  # above BOSCHLOO_MAX_N runs: Fisher's
    assert (big.test, big.p) == ("fisher", pytest.approx(scipy_stats.fisher_exact([[60, 80], [90, 70]]).pvalue))


def test_welch_p_value_matches_scipy():
    a, b = [0.162, 0.171, 0.158], [0.011, 0.160, 0.004, 0.009]
    assert stats.welch_interval(a, b).p == pytest.approx(scipy_stats.ttest_ind(b, a, equal_var=False).pvalue)
    assert stats.welch_interval([1.0, 1.0], [3.0, 3.0]).p == 0.0
    assert stats.welch_interval([1.0, 1.0], [1.0, 1.0]).p == 1.0


def test_probability_of_improvement_by_hand():
    # b = [2, 3, 4] against a = [1, 2, 3], higher is better: b=2 beats 1, ties 2 (1.5); b=3 beats 1, 2, ties 3 (2.5);
    # b=4 beats all (3): 7 of 9 pairs. Lower is better: the complement, 2/9 (ties count ½ either way)
    assert stats.prob_improvement([1, 2, 3], [2, 3, 4], higher_is_better=True) == pytest.approx(7 / 9)
    assert stats.prob_improvement([1, 2, 3], [2, 3, 4], higher_is_better=False) == pytest.approx(2 / 9)
    assert stats.prob_improvement([1, 1], [1, 1], True) == 0.5


def test_probability_of_improvement_interval():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, 12).round(1), rng.normal(0.8, 1, 9).round(1)  # rounded: ties occur
    low, high = stats.prob_improvement_interval(a, b, True)
    point = stats.prob_improvement(a, b, True)
    assert 0 <= low <= point <= high <= 1
    # an independent bootstrap of the same statistic (each group resampled on its own) agrees within Monte Carlo error
    draws = np.random.default_rng(1)
    boot = [stats.prob_improvement(draws.choice(a, a.size), draws.choice(b, b.size), True) for _ in range(4000)]
    assert (low, high) == (pytest.approx(np.percentile(boot, 2.5), abs=0.03),
                           pytest.approx(np.percentile(boot, 97.5), abs=0.03))
    assert stats.prob_improvement_interval([1.0], [2.0, 3.0], True) is None  # n = 1
    assert stats.prob_improvement_interval([1.0, 1.0], [2.0, 2.0], True) == (1.0, 1.0)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 (m = 3): 3·0.01 = 0.03; 2·0.03 = 0.06; 1·0.04 = 0.04 -> max(0.06, 0.04) = 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06)]
    assert stats.holm([0.04]) == [0.04]
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]


def test_seeds_for_a_difference_of_means_textbook_values():
    # Cohen (1988): a two-sided 5% t-test with 80% power needs 64 per group at d = 0.5, 26 at d = 0.8, 17 at d = 1
    assert [stats.seeds_for_mean(d, 1.0, 1.0) for d in (0.5, 0.8, 1.0)] == [64, 26, 17]
    assert stats.welch_power(0.5, 1.0, 1.0, 64) >= 0.8 > stats.welch_power(0.5, 1.0, 1.0, 63)
    assert stats.seeds_for_mean(0.0, 1.0, 1.0) is None and stats.seeds_for_mean(1.0, None, 1.0) is None
    assert stats.seeds_for_mean(1.0, 1.0, 1.0, alpha=0.025) > 17  # a family's stricter level needs more


def test_exact_power_of_fishers_test_against_enumeration():
    n, p_a, p_b = 6, 0.2, 0.7
    expected = sum(scipy_stats.binom.pmf(x_a, n, p_a) * scipy_stats.binom.pmf(x_b, n, p_b)
                   for x_a in range(n + 1) for x_b in range(n + 1)
                   if scipy_stats.fisher_exact([[x_b, x_a], [n - x_b, n - x_a]]).pvalue <= 0.05)
    assert stats.fisher_power(p_a, p_b, n) == pytest.approx(expected)
    # rates 0 and 1 are certain outcomes: n/n against 0/n has Fisher p = 2 / C(2n, n): 0.1 at n = 3, 0.029 at n = 4
    assert stats.seeds_for_rates(1.0, 0.0) == 4
    assert stats.seeds_for_rates(0.5, 0.5) is None
    # beyond the exact range: the arcsine approximation ((1.96 + 0.84) / h)², h = 2 asin √0.6 - 2 asin √0.5
    h = 2 * math.asin(math.sqrt(0.6)) - 2 * math.asin(math.sqrt(0.5))
    assert stats.seeds_for_rates(0.5, 0.6) == math.ceil(((1.959964 + 0.841621) / h) ** 2)
