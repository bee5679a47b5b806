"""The statistics a depth comparison needs, each beside its equation; docs/statistics.md says when each is used.

Per group of seeds (one config, several seeds):
    mean, std, t_interval          x̄, s (ddof 1), x̄ ± t·s/√n (may leave the metric's range)
    bootstrap_interval             percentile bootstrap of the mean, median or IQM (inside the values' range)
    iqm                            interquartile mean: the mean of the middle half
    clopper_pearson                exact interval of a solve rate k/n
Per step between two groups (a = the shallower, b = the deeper):
    welch_interval                 mean(b) - mean(a), Welch's interval and p-value (scipy)
    solve_rate_test                exact test of k_a/n_a against k_b/n_b (Boschloo's, or Fisher's for large n)
    prob_improvement               P(a run of b beats a run of a), ties counted ½, with a bootstrap interval
    holm                           Holm–Bonferroni adjustment of a family of p-values
    seeds_for_mean, seeds_for_rates   seeds per group for 80% power at the observed difference

Seeds are few (3 to 10), so nothing leans on the normal approximation where an exact or t-based method
exists. A statistic that n cannot support (a spread from one value) is None, never 0 and never NaN.
Bootstraps are seeded: the same values always give the same interval.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy import stats as _scipy

CONFIDENCE = 0.95
ALPHA = 0.05  # two-sided level of every test
POWER = 0.80  # the power `seeds_for_*` size a study for
BOOTSTRAP_RESAMPLES = 9999  # scipy's default; rliable uses 50,000 for published figures
BOOTSTRAP_WORK = 10_000_000  # resamples × values at most: groups of over 1000 runs get fewer resamples
BOOTSTRAP_MIN_RESAMPLES = 2000  # but never fewer than this (Efron & Tibshirani: ≥ 1000 for percentile intervals)
BOOTSTRAP_SEED = 0
BOSCHLOO_MAX_N = 100  # above this many runs per group, Fisher's test (Boschloo's optimisation grows ~n², Fisher's ~n)
EXACT_POWER_MAX_N = 150  # exact power of Fisher's test up to this n per group; the arcsine approximation above
MAX_SEEDS = 100_000  # seeds_for_* gives None beyond this: no practical study settles the difference


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


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean (Agarwal et al. 2021, rliable): the mean after cutting ⌊n/4⌋ values from each end.

    scipy.stats.trim_mean(x, 0.25), as rliable computes it; at n < 4 nothing is cut and it is the mean.
    """
    if not values:
        raise ValueError("IQM of no values")
    return float(_scipy.trim_mean(values, 0.25))


def t_quantile(p: float, df: float) -> float:
    return float(_scipy.t.ppf(p, df))


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Confidence interval of the mean: x̄ ± t_{(1+c)/2, n-1} · s / √n. None when n < 2."""
    n = len(values)
    s = std(values)
    if s is None:
        return None
    m = mean(values)
    half = t_quantile((1 + confidence) / 2, n - 1) * s / math.sqrt(n)
    return (m - half, m + half)


# -- bootstrap intervals --------------------------------------------------------------------------------

Statistic = Callable[..., np.ndarray]  # statistic(x, axis=-1): one value per resample


def _iqm_along(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return _scipy.trim_mean(x, 0.25, axis=axis)


STATISTICS: dict[str, Statistic] = {"mean": np.mean, "median": np.median, "iqm": _iqm_along}


def bootstrap_interval(values: Sequence[float], statistic: str | Statistic = "mean",
                       confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Percentile bootstrap interval of a statistic of the values; None when n < 2.

        draw B resamples of n values with replacement (seeded), compute the statistic θ*_b of each;
        CI = [q_{(1-c)/2}(θ*), q_{(1+c)/2}(θ*)]

    B = 9999, or fewer for groups of over 1000 runs (B·n ≤ 10⁷, B ≥ 2000), where a run count that
    large makes the interval narrow anyway and the time would grow with n.

    Every resample's mean, median or IQM lies between the smallest and largest value, so the interval
    does too: it never leaves the metric's range (accuracy in [0, 1], a loss ≥ 0). At n = 2 it spans the
    two values. At small n it is narrower than a 95% interval should be (it cannot reach beyond the values
    seen); the verdicts therefore rest on Welch's and exact tests, not on these intervals.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return None
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    function = STATISTICS[statistic] if isinstance(statistic, str) else statistic
    result = _scipy.bootstrap((x,), function, n_resamples=_resamples(x.size), batch=_batch(x.size),
                              vectorized=True, confidence_level=confidence, method="percentile",
                              rng=np.random.default_rng(BOOTSTRAP_SEED))
    ci = result.confidence_interval
    low, high = x.min(), x.max()  # exact in theory; this guards against rounding (a mean of 0.9s is 0.9000000000000001)
    return (float(np.clip(ci.low, low, high)), float(np.clip(ci.high, low, high)))


def _resamples(n: int) -> int:
    return max(BOOTSTRAP_MIN_RESAMPLES, min(BOOTSTRAP_RESAMPLES, BOOTSTRAP_WORK // n))


def _batch(n: int) -> int:
    """Resamples per batch: about a million values (8 MB) in memory at once."""
    return max(1, min(BOOTSTRAP_RESAMPLES, 1_000_000 // max(n, 1)))


# -- solve rates ----------------------------------------------------------------------------------------


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Exact (Clopper–Pearson) interval of a rate k/n: the p whose binomial tails at k are (1-c)/2 each.

        low = B^{-1}((1-c)/2; k, n-k+1)   (0 when k = 0)      high = B^{-1}((1+c)/2; k+1, n-k)   (1 when k = n)
    """
    if n < 1:
        return None
    ci = _scipy.binomtest(k, n).proportion_ci(confidence, method="exact")
    return (float(ci.low), float(ci.high))


@dataclass(frozen=True)
class RateTest:
    p: float
    test: str  # "boschloo" | "fisher"


def solve_rate_test(k_a: int, n_a: int, k_b: int, n_b: int) -> RateTest:
    """Two-sided exact test of equal solve rates from k_a of n_a and k_b of n_b solved runs.

    Boschloo's unconditional test (uniformly more powerful than Fisher's: 3/3 against 0/3 gives
    p = 0.031 where Fisher's gives 0.1) while both groups have at most BOSCHLOO_MAX_N runs; Fisher's
    above, where the two agree closely and Boschloo's optimisation over the nuisance rate gets slow.
    """
    table = [[k_b, k_a], [n_b - k_b, n_a - k_a]]
    if max(n_a, n_b) <= BOSCHLOO_MAX_N:
        return RateTest(min(1.0, float(_scipy.boschloo_exact(table, alternative="two-sided").pvalue)), "boschloo")
    return RateTest(float(_scipy.fisher_exact(table).pvalue), "fisher")


# -- differences of location ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """b - a with Welch's interval (unequal variances) and p-value."""

    diff: float
    low: float
    high: float
    se: float
    df: float | None  # None when both samples have zero spread: the interval is the point itself
    p: float = math.nan


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Difference | None:
    """Confidence interval and p-value of mean(b) - mean(a) without assuming equal variances; None when n < 2.

        se² = s_a²/n_a + s_b²/n_b
        df  = se⁴ / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1))     (Welch–Satterthwaite)
        CI  = (x̄_b - x̄_a) ± t_{(1+c)/2, df} · se,    p = 2 P(T_df > |x̄_b - x̄_a| / se)

    Computed by scipy.stats.ttest_ind(b, a, equal_var=False). Without spread in either group the
    interval is the point and p is 0 (or 1 when the means are equal).
    """
    sa, sb = std(a), std(b)
    if sa is None or sb is None:
        return None
    diff = mean(b) - mean(a)
    se = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    if se == 0.0:
        return Difference(diff, diff, diff, 0.0, None, 0.0 if diff != 0 else 1.0)
    with warnings.catch_warnings():  # scipy warns of precision loss when a group's values are (nearly) all equal
        warnings.simplefilter("ignore", RuntimeWarning)
        result = _scipy.ttest_ind(b, a, equal_var=False)
        ci = result.confidence_interval(confidence)
    return Difference(diff, float(ci.low), float(ci.high), se, float(result.df), float(result.pvalue))


def prob_improvement(a: Sequence[float], b: Sequence[float], higher_is_better: bool) -> float:
    """P(a run of b beats a run of a), ties counted ½ (rliable's probability of improvement):

        P = (1 / n_a n_b) Σ_i Σ_j [b_j better than a_i] + ½ [b_j = a_i]  =  U_b / (n_a n_b)

    with U_b the Mann–Whitney statistic of b (scipy.stats.mannwhitneyu). 0.5: no tendency either way.
    """
    sign = 1.0 if higher_is_better else -1.0
    u = _scipy.mannwhitneyu(sign * np.asarray(b, float), sign * np.asarray(a, float)).statistic
    return float(u) / (len(a) * len(b))


def prob_improvement_interval(a: Sequence[float], b: Sequence[float], higher_is_better: bool,
                              confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Percentile bootstrap interval of prob_improvement, resampling each group on its own (seeded);
    None when either group has n < 2. Inside [0, 1] by construction."""
    if len(a) < 2 or len(b) < 2:
        return None
    sign = 1.0 if higher_is_better else -1.0
    xa, xb = sign * np.asarray(a, float), sign * np.asarray(b, float)
    if np.all(xa == xa[0]) and np.all(xb == xb[0]):
        point = prob_improvement(a, b, higher_is_better)
        return (point, point)
    n_a, n_b = xa.size, xb.size
    # only the order of the values matters: resample their ranks among the distinct values (0 .. levels-1)
    distinct = np.unique(np.concatenate([xa, xb]))
    levels = distinct.size
    code_a, code_b = np.searchsorted(distinct, xa), np.searchsorted(distinct, xb)

    def counts(sample: np.ndarray) -> np.ndarray:
        """(resamples, levels): how often each distinct value occurs in each resample."""
        codes = np.atleast_2d(sample)
        rows = codes.shape[0]
        flat = (codes + levels * np.arange(rows)[:, None]).ravel()
        return np.bincount(flat, minlength=rows * levels).reshape(rows, levels)

    def statistic(sample_b: np.ndarray, sample_a: np.ndarray, axis: int = -1) -> np.ndarray:
        # U_b = Σ_v count_b(v) · (#a below v + ½ #a at v), by counting each resample's values per level
        count_a, count_b = counts(sample_a), counts(sample_b)
        below_a = np.cumsum(count_a, axis=-1) - count_a
        u = (count_b * (below_a + 0.5 * count_a)).sum(axis=-1) / (n_a * n_b)
        return u if np.ndim(sample_b) > 1 else u[0]

    result = _scipy.bootstrap((code_b, code_a), statistic, n_resamples=_resamples(n_a + n_b), batch=_batch(n_a + n_b),
                              vectorized=True, paired=False, confidence_level=confidence, method="percentile",
                              rng=np.random.default_rng(BOOTSTRAP_SEED))
    ci = result.confidence_interval
    return (float(ci.low), float(ci.high))


# -- families of tests ----------------------------------------------------------------------------------


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values: with p_(1) ≤ … ≤ p_(m) sorted,

        p̃_(i) = max_{j ≤ i} min(1, (m - j + 1) · p_(j))

    A step is distinguishable at level α when its adjusted p ≤ α; the family's chance of any false claim
    stays ≤ α whatever the dependence between the steps.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


# -- power: how many seeds would settle it ----------------------------------------------------------------


def welch_power(diff: float, sa: float, sb: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided Welch test with n seeds per group if the true difference and spreads are these:

        se = √((s_a² + s_b²) / n),   δ = diff / se,   df = (s_a² + s_b²)² (n - 1) / (s_a⁴ + s_b⁴)
        power = P(T' > t_c) + P(T' < -t_c),   T' ~ noncentral t(df, δ),   t_c = t_{1-α/2, df}
    """
    va, vb = sa**2, sb**2
    se = math.sqrt((va + vb) / n)
    df = (va + vb) ** 2 * (n - 1) / (va**2 + vb**2)
    t_c = t_quantile(1 - alpha / 2, df)
    delta = abs(diff) / se
    return float(_scipy.nct.sf(t_c, df, delta) + _scipy.nct.cdf(-t_c, df, delta))


def seeds_for_mean(diff: float, sa: float | None, sb: float | None, alpha: float = ALPHA,
                   power: float = POWER) -> int | None:
    """Smallest n per group at which Welch's test has `power` for a difference `diff` with spreads s_a, s_b.

    None when it cannot be said (a group without spread estimate, or no difference) or n > MAX_SEEDS.
    Power grows with n, so a doubling search brackets n and bisection finds it.
    """
    if sa is None or sb is None or diff == 0 or not math.isfinite(diff):
        return None
    if sa == 0 and sb == 0:
        return 2  # no spread at all: two seeds each already separate the means
    if welch_power(diff, sa, sb, 2, alpha) >= power:
        return 2
    low, high = 2, 4
    while welch_power(diff, sa, sb, high, alpha) < power:
        low, high = high, high * 2
        if low > MAX_SEEDS:
            return None
    while high - low > 1:  # power(low) < target ≤ power(high)
        middle = (low + high) // 2
        low, high = (low, middle) if welch_power(diff, sa, sb, middle, alpha) >= power else (middle, high)
    return high if high <= MAX_SEEDS else None


def fisher_power(p_a: float, p_b: float, n: int, alpha: float = ALPHA) -> float:
    """Exact power of Fisher's two-sided test with n runs per group if the solve rates are p_a and p_b.

    Every table (x_a, x_b) with x_a, x_b in 0..n: its p-value given the margin s = x_a + x_b is the sum of
    the hypergeometric probabilities f(k) = C(n, k) C(n, s-k) / C(2n, s) not above f(x_b) (scipy's rule,
    with its 1e-7 relative tolerance for ties); the power is the binomial probability of the tables with
    p ≤ α:  power = Σ_{x_a, x_b} Bin(x_a; n, p_a) Bin(x_b; n, p_b) [p(x_a, x_b) ≤ α].
    """
    k = np.arange(n + 1)
    log_choose = special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
    reject = np.zeros((n + 1, n + 1), dtype=bool)  # [x_a, x_b]
    for s in range(2 * n + 1):
        x_b = np.arange(max(0, s - n), min(s, n) + 1)
        log_f = log_choose[x_b] + log_choose[s - x_b]
        f = np.exp(log_f - log_f.max())
        f /= f.sum()
        ascending = np.sort(f)
        tails = np.cumsum(ascending)
        p = tails[np.searchsorted(ascending, f * (1 + 1e-7), side="right") - 1]
        reject[s - x_b, x_b] = p <= alpha * (1 + 1e-12)
    weight_a = _scipy.binom.pmf(k, n, p_a)
    weight_b = _scipy.binom.pmf(k, n, p_b)
    return float(weight_a @ reject.astype(float) @ weight_b)


def seeds_for_rates(p_a: float, p_b: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Runs per group at which an exact test of solve rates p_a against p_b reaches `power`.

    The smallest n ≥ 2 with Fisher's exact power ≥ target, scanned up to EXACT_POWER_MAX_N; Boschloo's
    test is uniformly more powerful, so for it this is an upper estimate. Beyond that the arcsine
    approximation n = ((z_{1-α/2} + z_{power}) / h)², h = 2 asin√p_b - 2 asin√p_a (Cohen's h).
    None when the rates are equal or n > MAX_SEEDS.
    """
    if p_a == p_b:
        return None
    h = abs(2 * math.asin(math.sqrt(p_b)) - 2 * math.asin(math.sqrt(p_a)))
    approx = ((_scipy.norm.ppf(1 - alpha / 2) + _scipy.norm.ppf(power)) / h) ** 2
    if approx > 2 * EXACT_POWER_MAX_N:
        n = math.ceil(approx)
        return n if n <= MAX_SEEDS else None
    for n in range(2, EXACT_POWER_MAX_N + 1):
        if fisher_power(p_a, p_b, n, alpha) >= power:
            return n
    return max(EXACT_POWER_MAX_N + 1, math.ceil(approx))
