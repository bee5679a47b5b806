"""The verdict over training: each step's difference at every evaluation its runs share, not only at the end.

    trace(lower, upper, higher_is_better)  -> list[Point]     one Point per shared evaluation step
    adjust(traces)                                            Holm at each evaluation step, over the steps
    describe(points, ...)                  -> Reading         where the ordering changes, from when it is clear

A depth study stops at one budget, so "2 layers are worse" may mean "2 layers learn more slowly". Reading the
same comparison at every evaluation shows whether the ordering was still moving when training stopped.

What is compared: the **validation** split's metric (metrics.csv's `val` rows; the test split is measured only
once, at the end), each run's best value up to that evaluation step (`kept`: train keeps the weights of the best
evaluation, so a run stopped there would have reported that value, as it reports its best at the end), the mean
over each group's seeds, by Welch's test, as at the end.
Holm's family at an evaluation step is the comparison's steps there (2 vs 1 and 3 vs 2 read at step 400 are
one family, as at the end); the evaluation steps are *not* one family: they are repeated looks at the same
runs, and `distinguishable_from` asks for the call to hold at every later evaluation, not at one (docs/statistics.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lstmlab.analysis.compare import stats
from lstmlab.analysis.compare.read import RunRecord


@dataclass
class Point:
    """One evaluation step that every run of both groups logged."""

    step: int
    n: tuple[int, int]  # runs of (lower, upper)
    mean_lower: float
    mean_upper: float
    difference: float  # mean(upper) - mean(lower) of the validation metric
    ci95: tuple[float, float] | None  # Welch; None at n = 1
    p: float | None
    sequences: int | None  # training sequences seen by then: step × batch_size (None when the groups differ)
    characters: int | None  # step × batch_size × seq_len (time steps seen; characters for charlm)
    family: int = 1  # steps tested together at this evaluation (Holm)
    p_adjusted: float | None = None
    verdict: str = "no test"  # better | worse | not distinguishable | no test


@dataclass
class Reading:
    """A trace in a few facts and one line of words."""

    ordering_changes: list[int] = field(default_factory=list)  # evaluation steps where the leader changes
    distinguishable_from: int | None = None  # first step from which every evaluation gives the final call
    text: str = ""


def shared_steps(runs: Sequence[RunRecord]) -> list[int]:
    """Evaluation steps at which every run has a validation value."""
    if not runs:
        return []
    common = set.intersection(*(set(s for s, _ in run.curve) for run in runs))
    return sorted(common)


def kept(curve: Sequence[tuple[int, float]], higher_is_better: bool) -> list[tuple[int, float]]:
    """(step, the best validation value up to that step): what a run stopped at that step would report.

    Train keeps the weights of the best evaluation, so a run that starts to overfit keeps its best value; the
    value at the step itself would count the overfitting against it."""
    best, kept_values = None, []
    for step, value in curve:
        if best is None or (value > best if higher_is_better else value < best):
            best = value
        kept_values.append((step, best))
    return kept_values


def trace(lower: Sequence[RunRecord], upper: Sequence[RunRecord], higher_is_better: bool) -> list[Point]:
    """The step's difference of validation means (each run's best so far) at each evaluation both groups'
    runs share."""
    curves = {id(run): dict(kept(run.curve, higher_is_better)) for run in (*lower, *upper)}  # metrics.csv, read once
    sequences_per_step, characters_per_step = _seen_per_step([*lower, *upper])
    points = []
    for step in shared_steps([*lower, *upper]):
        a = [curves[id(run)][step] for run in lower]
        b = [curves[id(run)][step] for run in upper]
        welch = stats.welch_interval(a, b)
        mean_a, mean_b = stats.mean(a), stats.mean(b)
        points.append(Point(
            step, (len(a), len(b)), mean_a, mean_b, mean_b - mean_a,
            ci95=(welch.low, welch.high) if welch else None, p=welch.p if welch else None,
            sequences=step * sequences_per_step if sequences_per_step else None,
            characters=step * characters_per_step if characters_per_step else None,
        ))
    return points


def _seen_per_step(runs: Sequence[RunRecord]) -> tuple[int | None, int | None]:
    """(batch_size, batch_size × seq_len) when every run shares them; None where they differ or are unknown."""
    batch = {run.flat.get("train.batch_size") for run in runs}
    seq_len = {run.flat.get("task.seq_len") for run in runs}
    b = batch.pop() if len(batch) == 1 else None
    t = seq_len.pop() if len(seq_len) == 1 else None
    b = b if isinstance(b, int) and not isinstance(b, bool) else None
    t = t if isinstance(t, int) and not isinstance(t, bool) else None
    return b, (b * t if b and t else None)


def adjust(traces: Sequence[list[Point]], higher_is_better: bool) -> None:
    """Holm at each evaluation step over the traces (the comparison's steps) tested there; then each call."""
    by_step: dict[int, list[Point]] = {}
    for points in traces:
        for point in points:
            if point.p is not None:
                by_step.setdefault(point.step, []).append(point)
    for family in by_step.values():
        for point, adjusted in zip(family, stats.holm([p.p for p in family]), strict=True):
            point.family, point.p_adjusted = len(family), adjusted
    for points in traces:
        for point in points:
            if point.p_adjusted is None:
                point.verdict = "no test"
            elif point.p_adjusted <= stats.ALPHA and point.difference != 0:
                point.verdict = "better" if (point.difference > 0) == higher_is_better else "worse"
            else:
                point.verdict = "not distinguishable"


def leader(point: Point, higher_is_better: bool) -> int:
    """+1 when the upper group is ahead at this point, -1 when the lower is, 0 on a tie."""
    if point.difference == 0:
        return 0
    return 1 if (point.difference > 0) == higher_is_better else -1


def describe(points: list[Point], higher_is_better: bool, label: str, upper: str, lower: str,
             metric: str) -> Reading:
    """Where the leader changes and from which evaluation the final call holds, in one line.

    `label` names the step ("2 vs 1 layers"), `upper`/`lower` its groups ("2 layers", "1 layer")."""
    reading = Reading()
    if not points:
        reading.text = f"{label} over training: no evaluation step shared by every run (validation rows of metrics.csv)"
        return reading
    previous = 0
    for point in points:
        now = leader(point, higher_is_better)
        if now != 0 and previous != 0 and now != previous:
            reading.ordering_changes.append(point.step)
        previous = now or previous
    last = points[-1]
    if last.verdict in ("better", "worse"):
        start = len(points) - 1
        while start > 0 and points[start - 1].verdict == last.verdict:
            start -= 1
        reading.distinguishable_from = points[start].step

    evaluations = "1 shared evaluation" if len(points) == 1 else f"{len(points)} shared evaluations"
    span = f"step {points[0].step:,}" if len(points) == 1 else f"steps {points[0].step:,}–{last.step:,}"
    parts = [f"{label} over training (validation {metric} at {evaluations}, {span})"]
    final = leader(last, higher_is_better)
    ahead = {1: f"{upper} ahead", -1: f"{lower} ahead", 0: "level"}
    if len(reading.ordering_changes) == 1:
        change = reading.ordering_changes[0]
        at = [p.step for p in points].index(change)
        after = leader(points[at], higher_is_better)
        parts.append(f"{ahead[-after]} until step {points[at - 1].step:,}, {ahead[after]} from step {change:,} on")
    elif reading.ordering_changes:
        changes = ", ".join(f"{s:,}" for s in reading.ordering_changes)
        parts.append(f"the ordering changes at steps {changes}; {ahead[final]} at the last")
    else:
        signs = {leader(p, higher_is_better) for p in points} - {0}
        parts.append(f"{ahead[signs.pop()]} at every evaluation" if signs else "level at every evaluation")
    if reading.distinguishable_from is not None:
        holm = f", Holm over {last.family} steps at each evaluation" if last.family > 1 else ""
        parts.append(f"{last.verdict} beyond seed noise from step {reading.distinguishable_from:,} on{holm}")
    elif last.verdict == "no test":
        parts.append("no test (a group has one run)")
    else:
        earlier = [f"{p.verdict} at step {p.step:,}" for p in points if p.verdict in ("better", "worse")]
        note = f" (it was earlier: {', '.join(earlier)})" if earlier else ""
        parts.append(f"not distinguishable from seed noise at the last evaluation{note}")
    reading.text = parts[0] + ": " + "; ".join(parts[1:])
    return reading
