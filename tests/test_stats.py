"""lstmlab.stats against values worked by hand (the arithmetic is in each test)."""

import math

import pytest
from scipy import stats as scipy_stats

from lstmlab import stats


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
