"""The few statistics a depth comparison needs: mean, sample spread, and t-based confidence intervals.

Seeds are few (2 to 5), so intervals use Student's t, not the normal approximation: at n = 3 the 95%
factor is t_{0.975,2} = 4.303, not 1.96. A statistic that n cannot support (a spread from one value)
is None, never 0 and never NaN.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as _scipy


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof = 1): s = sqrt(Σ (x - x̄)² / (n - 1)); None when n < 2."""
    n = len(values)
    if n < 2:
        return None
    m = mean(values)
    return math.sqrt(math.fsum((x - m) ** 2 for x in values) / (n - 1))


def t_quantile(p: float, df: float) -> float:
    return float(_scipy.t.ppf(p, df))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Confidence interval of the mean: x̄ ± t_{(1+c)/2, n-1} · s / √n. None when n < 2."""
    n = len(values)
    s = std(values)
    if s is None:
        return None
    m = mean(values)
    half = t_quantile((1 + confidence) / 2, n - 1) * s / math.sqrt(n)
    return (m - half, m + half)


@dataclass(frozen=True)
class Difference:
    """b - a with Welch's interval (unequal variances)."""

    diff: float
    low: float
    high: float
    se: float
    df: float | None  # None when both samples have zero spread: the interval is the point itself


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference | None:
    """Confidence interval of mean(b) - mean(a) without assuming equal variances. None when n < 2 in either.

        se² = s_a²/n_a + s_b²/n_b
        df  = se⁴ / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1))     (Welch–Satterthwaite)
        CI  = (x̄_b - x̄_a) ± t_{(1+c)/2, df} · se
    """
    sa, sb = std(a), std(b)
    if sa is None or sb is None:
        return None
    va, vb = sa**2 / len(a), sb**2 / len(b)
    diff = mean(b) - mean(a)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Difference(diff, diff, diff, 0.0, None)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile((1 + confidence) / 2, df) * se
    return Difference(diff, diff - half, diff + half, se, df)


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)
