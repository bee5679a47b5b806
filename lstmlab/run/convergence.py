"""Has a run converged? One stated rule on its validation curve, used by train (summary.json) and compare.

    converged(curve, higher_is_better) -> True | False | None     curve: [(step, validation metric), ...]
    run_converged(rows, metric, higher_is_better)                 the same, from metrics.csv rows

The rule (docs/statistics.md, "Convergence"): fit a straight line to the last third of the evaluations
(at least MIN_WINDOW of them) by least squares,

    m_k ≈ a + b · s_k                                  s_k: the step of evaluation k in the window
    Δ = b · (s_last − s_first) · (+1 if higher is better else −1)
                                                       the improvement the trend predicts over as many
                                                       steps again as the window spans
    σ = sqrt(Σ (m_k − a − b·s_k)² / (w − 2))           the curve's own noise around the line (w points)

and call the run converged when Δ ≤ max(σ, RELATIVE_FLOOR · |mean of the window|): the improvement still
under way is within the noise of the curve itself, or below 1% of the metric's level. A flat or worsening
curve (Δ ≤ 0: a plateau, or overfitting) is converged. Fewer than MIN_EVALUATIONS evaluations give None:
too few points to tell a trend from noise.

It uses one run's curve only, so train can write it for each run; compare reads it back (and applies the
same rule to metrics.csv for run folders of earlier versions, which lack it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

MIN_EVALUATIONS = 6  # fewer validation rows: None (too few to fit a trend and judge its noise)
WINDOW_FRACTION = 1 / 3  # the window: the last third of the evaluations ...
MIN_WINDOW = 4  # ... but at least this many (a line through 3 points has 1 degree of freedom for its noise)
RELATIVE_FLOOR = 0.01  # an improvement under 1% of the metric's level over the window counts as none


def converged(curve: Sequence[tuple[int, float]], higher_is_better: bool) -> bool | None:
    """The rule above on one validation curve, ordered by step; None when it has too few evaluations."""
    points = [(float(s), float(v)) for s, v in curve if math.isfinite(v)]
    if len(points) < MIN_EVALUATIONS:
        return None
    w = max(MIN_WINDOW, math.ceil(len(points) * WINDOW_FRACTION))
    window = points[-w:]
    steps, values = [s for s, _ in window], [v for _, v in window]
    s_mean, v_mean = math.fsum(steps) / w, math.fsum(values) / w
    sxx = math.fsum((s - s_mean) ** 2 for s in steps)
    if sxx == 0:  # every evaluation at one step: no trend to fit
        return None
    b = math.fsum((s - s_mean) * (v - v_mean) for s, v in window) / sxx  # least-squares slope
    a = v_mean - b * s_mean
    residual = math.sqrt(math.fsum((v - a - b * s) ** 2 for s, v in window) / (w - 2))
    improvement = b * (steps[-1] - steps[0]) * (1.0 if higher_is_better else -1.0)
    return improvement <= max(residual, RELATIVE_FLOOR * abs(v_mean))


def validation_curve(rows: Iterable[dict[str, Any]], metric: str) -> list[tuple[int, float]]:
    """(step, metric) of the validation rows of metrics.csv (as RunFolder.metrics() reads them), by step."""
    curve = []
    for row in rows:
        value = row.get(metric)
        if row.get("split") == "val" and isinstance(row.get("step"), int) and isinstance(value, (int, float)):
            curve.append((row["step"], float(value)))
    return sorted(curve)


def run_converged(rows: Iterable[dict[str, Any]], metric: str, higher_is_better: bool) -> bool | None:
    """converged() of a run's metrics.csv rows: what train writes into summary.json as `converged`."""
    return converged(validation_curve(rows, metric), higher_is_better)
