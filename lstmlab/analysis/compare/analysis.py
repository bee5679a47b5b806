"""From run records to a verdict: group runs across seeds, tune within groups, weigh each step between neighbours.

    compare_runs(paths, by=("model.layers",), tune=()) -> Comparison

Groups: completed runs of the majority's task and metric with equal values of every --by key (seeds,
and with --tune the tuned keys, are what a group pools). Each group is summarised once (GroupStats).

Steps: neighbouring groups along the first --by key (2 vs 1 layers, 3 vs 2), within equal values of
the other --by keys. Each step's evidence is chosen from the data (--evidence auto; docs/statistics.md):
  - solve rates, by an exact test, when the two groups' runs include at least MIN_PER_SIDE solved and
    MIN_PER_SIDE unsolved ones (bimodal outcomes: a mean over them describes none of the runs; one run
    across the threshold is not enough to call a unimodal cloud bimodal);
  - otherwise the difference of means, by Welch's test.
--evidence means | solve-rate forces one. Each step is also read at every evaluation its runs share
(training.py: the verdict over training), and each run's convergence (lstmlab.run.convergence) is counted
per group: a verdict between runs still improving is about learning speed at this budget, and says so.
When a comparison has several steps they are one family: a step is called better or worse only when
its Holm-adjusted p-value is at most 5%. Every step also reports the probability of improvement and,
when it is not distinguishable, how many seeds per group would settle a difference of the observed size.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lstmlab.analysis.compare import stats, training
from lstmlab.analysis.compare.read import DEFAULT_BY, RunRecord, dotted, flat_config, hashable, order, read_runs
from lstmlab.analysis.compare.tune import Tuning, tune
from lstmlab.errors import UserError
from lstmlab.run import convergence

EQUAL_PARAMS_TOLERANCE = 0.05  # groups whose mean parameter counts differ by more are flagged in the verdict
POOLED_KEYS = {"train.seed", "experiment"}  # keys that may differ within a group: seeds are what a group pools
EVIDENCE = ("auto", "means", "solve-rate")  # --evidence: what a step's verdict rests on
MIN_PER_SIDE = 2  # auto: solve rates decide only with at least this many runs solved and this many unsolved
LEARNED_FRACTION = 0.05  # a run learned the task when it closed this much of the gap from the baseline to perfect


@dataclass
class GroupStats:
    """A group's test metric, summarised once. Intervals are None where n cannot support them (n = 1)."""

    mean: float
    std: float | None
    ci95: tuple[float, float] | None  # Student t: may leave the metric's range
    median: float
    best: float
    iqm: float
    mean_ci95: tuple[float, float] | None  # percentile bootstrap: inside the metric's range
    median_ci95: tuple[float, float] | None
    iqm_ci95: tuple[float, float] | None
    solved_ci95: tuple[float, float] | None  # Clopper–Pearson


@dataclass
class Group:
    key: dict[str, Any]
    runs: list[RunRecord]
    tuning: Tuning | None = None
    stats: GroupStats | None = field(default=None, repr=False)

    @property
    def values(self) -> list[float]:
        return [r.test for r in self.runs]

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def n_solved(self) -> int | None:
        if any(r.solved is None for r in self.runs):
            return None
        return sum(bool(r.solved) for r in self.runs)

    @property
    def solved(self) -> float | None:
        return None if self.n_solved is None else self.n_solved / self.n

    @property
    def n_converged(self) -> int | None:
        """Runs that converged (lstmlab.run.convergence); None when no run has enough evaluations to tell."""
        known = [c for c in (run_converged(r) for r in self.runs) if c is not None]
        return sum(known) if known else None

    @property
    def n_not_converged(self) -> int:
        return sum(run_converged(r) is False for r in self.runs)

    def params(self) -> dict[str, float] | None:
        counts = [r.params for r in self.runs if r.params is not None]
        return {"mean": stats.mean(counts), "min": min(counts), "max": max(counts)} if counts else None

    def hidden_sizes(self) -> list[int]:
        return sorted({r.hidden_size for r in self.runs if r.hidden_size is not None})

    def baseline(self) -> float | None:
        values = [r.baseline for r in self.runs if r.baseline is not None]
        return stats.mean(values) if values else None

    def repeated_seeds(self) -> list[int]:
        """Seeds that appear more than once: repeats of one run (e.g. copied folders), not independent samples."""
        counts = Counter(r.seed for r in self.runs if r.seed is not None)
        return sorted(seed for seed, n in counts.items() if n > 1)

    def mixed(self, pooled: set[str] = POOLED_KEYS) -> list[str]:
        """Config keys, other than the pooled ones (seed, tuned keys), whose values differ between this group's runs."""
        return mixed_keys([r.flat for r in self.runs], pooled)


def mixed_keys(flats: list[dict[str, Any]], pooled: set[str] = POOLED_KEYS) -> list[str]:
    """Config keys, other than the pooled ones, whose values differ between runs given as flat configs (dotted
    keys, hashable values: lstmlab.analysis.compare.read.flatten). compare, inspect and the exports share it."""
    keys = set().union(*flats) - pooled
    missing = object()
    return sorted(k for k in keys if len({flat.get(k, missing) for flat in flats}) > 1)


@dataclass
class Step:
    """The effect of moving from group `lower` to group `upper` along the first --by key."""

    axis: str
    lower: Group
    upper: Group
    diff: float  # mean(upper) - mean(lower)
    ci95: tuple[float, float] | None  # Welch
    relative: float | None  # diff / |mean of lower|
    df: float | None
    evidence: str  # "solved" (the solve rates decide) | "mean" (the means decide)
    test: str | None  # "welch" | "boschloo" | "fisher"; None: no test possible (n = 1)
    p: float | None  # the chosen test's two-sided p-value
    p_solved: float | None  # the exact test of the solve rates, whichever evidence decides
    prob_improvement: float  # P(a run of upper beats a run of lower), ties ½
    prob_improvement_ci95: tuple[float, float] | None
    family: int = 1  # steps tested together (Holm)
    p_adjusted: float | None = None
    better: bool | None = None  # None: not distinguishable, or no test
    seeds_needed: int | None = None  # per group, for 80% power at the observed difference; None when distinguishable
    verdict: str = ""
    learned: bool = True  # some run of either group beat the trivial baseline (else: "no depth learned the task")
    over_training: list[training.Point] = field(default_factory=list, repr=False)  # per shared evaluation step
    reading: training.Reading | None = field(default=None, repr=False)  # the trace in words


@dataclass
class Skipped:
    path: Path
    reason: str


@dataclass
class Comparison:
    by: tuple[str, ...]
    task: str | None
    metric: str | None
    higher_is_better: bool
    baseline: float | None
    baselines: dict[str, float]
    solve_threshold: float | None
    tune: tuple[str, ...] = ()
    evidence: str = "auto"  # --evidence
    at_step: int | None = None  # --at-step: the groups' values are each run's best validation metric up to this step
    unfinished: int = 0  # of the runs compared at --at-step, those still training or interrupted
    groups: list[Group] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def pooled_keys(self) -> set[str]:
        return POOLED_KEYS | set(self.tune)

    @property
    def split(self) -> str:
        """The split the groups' values come from: test, or validation with --at-step."""
        return "test" if self.at_step is None else "val"


# -- reading and grouping ------------------------------------------------------------------------------


def compare_runs(paths: list[str | Path] | tuple[str | Path, ...], by: tuple[str, ...] = DEFAULT_BY,
                 tune_keys: tuple[str, ...] = (), *, evidence: str = "auto", at_step: int | None = None) -> Comparison:
    """Read every run folder at or below `paths`; group completed runs by the dotted config keys `by`,
    choosing within each group the value of `tune_keys` with the best mean validation metric.

    `evidence` (auto | means | solve-rate) picks what each step's verdict rests on; `at_step` compares each
    run's validation metric at that step instead of its test metric at the end (the verdict at a budget)."""
    by, tune_keys = tuple(by) or DEFAULT_BY, tuple(dict.fromkeys(tune_keys))
    if evidence not in EVIDENCE:
        raise UserError(f"--evidence: unknown choice {evidence!r}; valid choices: {', '.join(EVIDENCE)}")
    if at_step is not None and at_step < 0:
        raise UserError(f"--at-step {at_step}: a step is 0 or more")
    both = sorted(set(by) & set(tune_keys))
    if both:
        raise UserError(f"--tune {both[0]} is also a --by key: a key is either compared (--by) or tuned (--tune)")
    records = read_runs(list(paths))
    if not records:
        raise UserError(
            f"no run folders under {', '.join(map(str, paths))}: a run folder holds a config.yaml "
            "(give a run folder, or a folder above run folders such as runs/ or runs/<experiment>)"
        )
    readable = [r for r in records if r.config is not None]
    check_keys(by, [r.config for r in readable], "--by")
    check_keys(tune_keys, [r.config for r in readable], "--tune")
    # the runs to compare: completed, with the majority's task and metric; at a step, also the runs still
    # training (or interrupted) that have reached it, so that a study can be read while it runs
    at_a_step = at_step is not None
    complete = [r for r in readable if r.reason is None or (at_a_step and r.unfinished)]
    skipped = [Skipped(r.path, r.reason) for r in records if r.reason is not None and not (at_a_step and r.unfinished)]
    kinds = Counter((r.task, r.metric) for r in complete)
    majority = kinds.most_common(1)[0][0] if kinds else (None, None)
    runs: dict[tuple, list[RunRecord]] = {}
    at_step_misses: list[str] = []
    for run in complete:
        if (run.task, run.metric) != majority:
            skipped.append(Skipped(run.path, f"task {run.task} (metric {run.metric}) differs from the majority's "
                                             f"{majority[0]} ({majority[1]}); compare those runs separately"))
            continue
        key, missing = _key(run, by + tune_keys)
        if missing:
            skipped.append(Skipped(run.path, f"config has no {missing} (a run folder of an earlier version?)"))
            continue
        if run.task == "arrays" and run.flat.get("task.solve_threshold") is None and run.solved is not None:
            # earlier versions judged a user's data by a default threshold; solving it is now the user's to define
            run = dataclasses.replace(run, solved=None, solve_threshold=None)
        if at_step is not None:
            run, reason = _at_step(run, at_step)
            if reason:
                skipped.append(Skipped(run.path, f"{reason}; {run.reason}" if run.unfinished else reason))
                at_step_misses.append(reason)
                continue
        if tune_keys and run.val is None:
            skipped.append(Skipped(run.path, f"no validation {run.metric} (summary.json best_val, or val rows in "
                                             f"metrics.csv) to choose {', '.join(tune_keys)} by"))
            continue
        runs.setdefault(key[: len(by)], []).append(run)

    if at_step_misses and not runs:  # not one run evaluated there: a mistyped step, not a reason to print nothing
        raise UserError(f"--at-step {at_step}: no run has a validation row at step {at_step} "
                        f"(the first: {at_step_misses[0].split('(', 1)[1].split(')')[0]})")
    comparison = _header(by, tune_keys, majority, [r for group in runs.values() for r in group])
    comparison.evidence, comparison.at_step = evidence, at_step
    failed = _failed_by_key(readable, by, tune_keys, majority) if tune_keys else {}
    for key in sorted(runs, key=lambda k: tuple(order(v) for v in k)):
        members = runs[key]
        tuning = None
        if tune_keys:
            tuning = tune(members, failed.get(key, []), tune_keys, comparison.higher_is_better)
            members = tuning.chosen.runs
        group = Group(dict(zip(by, key, strict=True)), sorted(members, key=lambda r: (order(r.seed), r.name)),
                      tuning)
        group.stats = summarise(group.values, group.n_solved, comparison.higher_is_better)
        comparison.groups.append(group)
    comparison.skipped = sorted(skipped, key=lambda s: str(s.path))
    comparison.unfinished = sum(r.unfinished for group in comparison.groups for r in group.runs)
    if evidence == "solve-rate" and comparison.groups and all(g.n_solved is None for g in comparison.groups):
        raise UserError("--evidence solve-rate: these runs have no solve threshold (an arrays task has none unless "
                        "task.solve_threshold is set in its config); use --evidence means or auto")
    comparison.steps = _steps(comparison)
    return comparison


def run_converged(run: RunRecord) -> bool | None:
    """summary.json's `converged`, or for run folders of earlier versions the same rule on metrics.csv."""
    if run.converged is not None:
        return run.converged
    if run.higher_is_better is None or not run.curve:
        return None
    return convergence.converged(run.curve, run.higher_is_better)


def _at_step(run: RunRecord, step: int) -> tuple[RunRecord, str | None]:
    """The run as it stood at `step`: its best validation metric up to there in place of its test metric (and
    `solved` judged on it), its curve cut at `step`."""
    curve = dict(run.curve)
    if step not in curve:
        return run, f"--at-step {step}: no validation row at step {step} in metrics.csv ({evaluations(sorted(curve))})"
    # the best validation value up to step N: the weights a run stopped at N would have kept
    value = dict(training.kept(run.curve, bool(run.higher_is_better)))[step]
    solved = None
    if run.solve_threshold is not None and run.higher_is_better is not None:
        solved = value >= run.solve_threshold if run.higher_is_better else value <= run.solve_threshold
    # as if training had stopped at step N: the curve up to N, convergence judged on it (summary.json's flag is
    # about the end), the verdict over training up to N, and --tune choosing by the value at N (the best
    # validation value of the whole run would choose with what training found after N)
    return dataclasses.replace(run, test=value, val=value, solved=solved, converged=None,
                               _curve=[(s, v) for s, v in run.curve if s <= step]), None


def summarise(values: list[float], n_solved: int | None, higher_is_better: bool) -> GroupStats:
    best = max(values) if higher_is_better else min(values)
    return GroupStats(
        mean=stats.mean(values), std=stats.std(values), ci95=stats.t_interval(values), median=stats.median(values),
        best=best, iqm=stats.iqm(values), mean_ci95=stats.bootstrap_interval(values, "mean"),
        median_ci95=stats.bootstrap_interval(values, "median"), iqm_ci95=stats.bootstrap_interval(values, "iqm"),
        solved_ci95=stats.clopper_pearson(n_solved, len(values)) if n_solved is not None else None,
    )


def _failed_by_key(records: list[RunRecord], by: tuple[str, ...], tune_keys: tuple[str, ...],
                   kind: tuple) -> dict[tuple, list[RunRecord]]:
    """Failed runs of the compared task by their --by key: tuning counts them against their value."""
    failed: dict[tuple, list[RunRecord]] = {}
    for run in records:
        if run.status != "failed" or (run.task, run.metric) != kind:
            continue
        key, missing = _key(run, by + tune_keys)
        if not missing:
            failed.setdefault(key[: len(by)], []).append(run)
    return failed


def _key(run: RunRecord, keys: tuple[str, ...]) -> tuple[tuple, str | None]:
    values = []
    for key in keys:
        found, value = run.lookup(key)
        if not found:
            return (), key
        values.append(value)
    return tuple(values), None


def check_keys(keys: tuple[str, ...], configs: list[dict], flag: str = "--by") -> None:
    """Each key must be a config key of at least one run; else bad input naming the valid keys."""
    if not configs:
        return
    for key in keys:
        if not any(dotted(c, key)[0] for c in configs):
            flat = [flat_config(c) for c in configs]
            leaves = sorted(set().union(*flat))
            missing = object()
            varying = [k for k in leaves if len({f.get(k, missing) for f in flat}) > 1]
            hint = f"keys that vary across these runs: {', '.join(varying)}; " if varying else ""
            raise UserError(f"{flag} {key}: not a config key of these runs; {hint}valid keys: {', '.join(leaves)}")


def _header(by: tuple[str, ...], tune_keys: tuple[str, ...], kind: tuple, runs: list[RunRecord]) -> Comparison:
    task, metric = kind
    first = runs[0] if runs else None
    higher = first.higher_is_better if first else None
    baselines = {r.baseline for r in runs if r.baseline is not None}
    common = baselines.pop() if len(baselines) == 1 else None  # several datasets (e.g. --by task.seq_len): per group
    return Comparison(
        by=by, tune=tune_keys, task=task, metric=metric, higher_is_better=bool(higher), baseline=common,
        baselines=first.baselines if first and common is not None else {},
        solve_threshold=first.solve_threshold if first and common is not None else None,
    )


# -- steps between neighbouring groups -------------------------------------------------------------------


def _steps(comparison: Comparison) -> list[Step]:
    axis, others = comparison.by[0], comparison.by[1:]
    strata: dict[tuple, list[Group]] = {}
    for group in comparison.groups:  # already sorted by every key
        strata.setdefault(tuple(hashable(group.key[k]) for k in others), []).append(group)
    ordered = sorted(strata.items(), key=lambda item: tuple(order(v) for v in item[0]))
    steps = []
    for _, groups in ordered:
        groups = sorted(groups, key=lambda g: order(g.key[axis]))
        steps += [_step(comparison, axis, a, b) for a, b in zip(groups, groups[1:], strict=False)]
    _decide(comparison, steps)
    _over_training(comparison, steps)
    return steps


def _over_training(comparison: Comparison, steps: list[Step]) -> None:
    """Each step's verdict at every evaluation its runs share (lstmlab.analysis.compare.training)."""
    higher = comparison.higher_is_better
    for step in steps:
        step.over_training = training.trace(step.lower.runs, step.upper.runs, higher)
    training.adjust([s.over_training for s in steps], higher)
    for step in steps:
        a, b = step.lower.key[step.axis], step.upper.key[step.axis]
        names = (_group_name(step.axis, b), _group_name(step.axis, a))
        step.reading = training.describe(step.over_training, higher, step_label(step.axis, step.lower, step.upper),
                                         *names, comparison.metric or "metric")


def _group_name(axis: str, value) -> str:
    if axis == "model.layers":
        return f"{value} layer" + ("" if value == 1 else "s")
    return f"{axis}={value}"


def _step(comparison: Comparison, axis: str, lower: Group, upper: Group) -> Step:
    a, b, higher = lower.values, upper.values, comparison.higher_is_better
    mean_a = lower.stats.mean
    diff = upper.stats.mean - mean_a
    welch = stats.welch_interval(a, b)
    rates = None
    if lower.n_solved is not None and upper.n_solved is not None:
        rates = stats.solve_rate_test(lower.n_solved, lower.n, upper.n_solved, upper.n)
    if comparison.evidence == "solve-rate":
        by_rates = rates is not None
    elif comparison.evidence == "means":
        by_rates = False
    else:  # auto: runs on both sides of the threshold, at least MIN_PER_SIDE on each (one outlier does not switch)
        solved = (lower.n_solved or 0) + (upper.n_solved or 0)
        by_rates = rates is not None and min(solved, lower.n + upper.n - solved) >= MIN_PER_SIDE
    if by_rates:
        evidence, test, p = "solved", rates.test, rates.p
    else:
        evidence, test, p = "mean", ("welch" if welch else None), (welch.p if welch else None)
    return Step(
        axis, lower, upper, diff, ci95=(welch.low, welch.high) if welch else None,
        relative=diff / abs(mean_a) if mean_a != 0 else None, df=welch.df if welch else None,
        evidence=evidence, test=test, p=p, p_solved=rates.p if rates else None,
        prob_improvement=stats.prob_improvement(a, b, higher),
        prob_improvement_ci95=stats.prob_improvement_interval(a, b, higher),
        learned=_learned(lower) or _learned(upper),
    )


def evaluations(steps: list[int]) -> str:
    """'evaluated every 100 steps from 100 to 1000', or the steps themselves when irregular."""
    if not steps:
        return "no validation rows"
    gaps = {b - a for a, b in zip(steps, steps[1:], strict=False)}
    if len(steps) > 2 and len(gaps) == 1:
        return f"evaluated every {gaps.pop()} steps from {steps[0]} to {steps[-1]}"
    return "evaluated at step " + ", ".join(map(str, steps[:8])) + (f", ... {steps[-1]}" if len(steps) > 8 else "")


def _learned(group: Group) -> bool:
    """Some run beat the trivial baseline by LEARNED_FRACTION of the way to a perfect score (0 for a loss,
    1 for an accuracy). True when the baseline is unknown (nothing to say otherwise)."""
    baseline, higher = group.baseline(), group.runs[0].higher_is_better
    if baseline is None or higher is None:
        return True
    if higher:
        return any(v >= baseline + LEARNED_FRACTION * (1.0 - baseline) for v in group.values)
    return any(v <= (1.0 - LEARNED_FRACTION) * baseline for v in group.values)


def _decide(comparison: Comparison, steps: list[Step]) -> None:
    """Holm over the steps that have a test; then each step's call, seeds needed and verdict."""
    tested = [s for s in steps if s.p is not None]
    for step, adjusted in zip(tested, stats.holm([s.p for s in tested]), strict=True):
        step.family, step.p_adjusted = len(tested), adjusted
    alpha = stats.ALPHA / max(len(tested), 1)  # sizing for the family's strictest level (Bonferroni)
    for step in steps:
        if step.p_adjusted is not None and step.p_adjusted <= stats.ALPHA:
            step.better = _improved(comparison, step)
        elif step.p is not None and step.learned:
            step.seeds_needed = _seeds_needed(step, alpha)
        step.verdict = verdict(comparison, step)


def _improved(comparison: Comparison, step: Step) -> bool:
    if step.evidence == "solved":
        return step.upper.solved > step.lower.solved
    return step.diff > 0 if comparison.higher_is_better else step.diff < 0


def _seeds_needed(step: Step, alpha: float) -> int | None:
    if step.evidence == "solved":
        return stats.seeds_for_rates(step.lower.solved, step.upper.solved, alpha)
    return stats.seeds_for_mean(step.diff, step.lower.stats.std, step.upper.stats.std, alpha)


# -- the verdict in words --------------------------------------------------------------------------------


def step_label(axis: str, lower: Group, upper: Group) -> str:
    """'3 vs 2 layers', or 'model.type=lstm vs gru'; other --by keys in brackets."""
    a, b = lower.key[axis], upper.key[axis]
    label = f"{b} vs {a} layers" if axis == "model.layers" else f"{axis}={b} vs {a}"
    context = [f"{k}={v}" for k, v in lower.key.items() if k != axis]
    return f"{label} ({', '.join(context)})" if context else label


def verdict(comparison: Comparison, step: Step) -> str:
    """One line in plain words: the change, the evidence that decides, and whether seed noise can explain it."""
    lower, upper = step.lower, step.upper
    label = f"{step_label(step.axis, lower, upper)}: "
    at_n = f"n={lower.n}" if lower.n == upper.n else f"n={lower.n} vs {upper.n}"
    change = f"{comparison.metric} {fmt_signed(step.diff)}{_relative(step.relative)}"
    notes = []
    if len(set(lower.values + upper.values)) == 1:
        text = f"{label}{comparison.metric} the same — every run of both groups scored {fmt(lower.values[0])}"
        if lower.n_solved == lower.n and upper.n_solved == upper.n:
            notes.append("all solved: at this ceiling the metric cannot tell the depths apart")
        return "; ".join([text, *notes, *_parameter_notes(lower, upper)])
    if step.evidence == "solved":
        text = f"{label}solved {lower.n_solved}/{lower.n} → {upper.n_solved}/{upper.n} — {_call(step, at_n)}"
        notes.append(f"{change}, a mean over solved and unsolved runs: read the per-seed values")
    else:
        text = label + change
        if step.ci95 is None:
            text += " — no interval: a group has n=1, and one seed cannot separate an effect from seed noise"
        else:
            text += f", 95% CI [{fmt(step.ci95[0], 3)}, {fmt(step.ci95[1], 3)}] — {_call(step, at_n)}"
        if lower.solved is not None and upper.solved is not None and lower.solved != upper.solved:
            notes.append(f"solved {lower.n_solved}/{lower.n} → {upper.n_solved}/{upper.n}")
    notes += _parameter_notes(lower, upper)
    notes.append(_improvement_text(step))
    if step.p is not None:
        notes.append(_p_text(step))
    if step.better is None and step.p is not None:
        notes.append(_seeds_text(step) if step.learned else NOTHING_LEARNED)
    notes += _budget_notes(comparison, step)
    return "; ".join([text, *notes])


NOTHING_LEARNED = "no depth learned the task: train longer (no run of either group beat the trivial baseline)"


def _budget_notes(comparison: Comparison, step: Step) -> list[str]:
    """Say when the runs had not converged: then the verdict compares learning speed at this budget."""
    if not step.learned and (step.better is not None or step.p is None):
        notes = [NOTHING_LEARNED]
    else:
        notes = []
    runs = step.lower.runs + step.upper.runs
    still = sum(run_converged(r) is False for r in runs)
    steps = sorted({r.flat.get("train.steps") for r in runs if isinstance(r.flat.get("train.steps"), int)})
    at = comparison.at_step
    if at is not None and steps and steps[-1] > at:
        of = f"{steps[0]:,}" if len(steps) == 1 else "more"
        unfinished = sum(r.unfinished for r in runs)
        on = f"{unfinished} of {len(runs)} runs are still to train on" if unfinished else "the runs trained on"
        by = f"; {still} of {len(runs)} runs still improving by then" if still else ""
        notes.append(f"read at step {at:,} of {of}: {on}{by}, so this compares learning speed at "
                     "this budget, not what each can reach")
    elif still:
        budget = f"{steps[0]:,} steps" if len(steps) == 1 else "this budget"
        if at is not None:
            budget = f"step {at:,}"
        notes.append(f"{still} of {len(runs)} runs had not converged (validation {comparison.metric} still improving "
                     f"at the end): this compares learning speed at {budget}, not what each can reach")
    return notes


def _call(step: Step, at_n: str) -> str:
    if step.better is not None:
        return f"{'better' if step.better else 'worse'}, beyond seed noise at {at_n}"
    if step.p is not None and step.p <= stats.ALPHA:
        return f"not distinguishable from seed noise at {at_n} once the {step.family} steps are tested together"
    return f"not distinguishable from seed noise at {at_n}"


def _relative(relative: float | None) -> str:
    if relative is None:
        return ""
    if abs(relative) >= 10:  # +24000% reads worse than ×241
        return f" (×{1 + relative:.3g})" if relative > 0 else f" ({relative:+.0%})"
    return f" ({relative:+.0%})" if abs(relative) >= 0.01 else f" ({relative:+.1%})"


def _parameter_notes(lower: Group, upper: Group) -> list[str]:
    pa, pb = lower.params(), upper.params()
    if pa and pb and abs(pb["mean"] - pa["mean"]) > EQUAL_PARAMS_TOLERANCE * max(pa["mean"], pb["mean"]):
        text = f"parameters differ: {pa['mean']:,.0f} → {pb['mean']:,.0f}"
        budgets = {r.flat.get("model.param_budget") for r in lower.runs + upper.runs}
        if len(budgets) == 1 and isinstance(budget := budgets.pop(), int):
            return [f"{text}: both sizes were derived from model.param_budget {budget:,}, but at that budget one "
                    f"hidden unit moves the count of a model this deep by more than {EQUAL_PARAMS_TOLERANCE:.0%}, so "
                    "the depths cannot be matched (not an equal-budget comparison); set a larger "
                    "model.param_budget"]
        return [f"{text} (not an equal-budget comparison)"]
    return []


def _improvement_text(step: Step) -> str:
    a, b = step.lower.key[step.axis], step.upper.key[step.axis]
    who = f"{b} layers beats {a}" if step.axis == "model.layers" else f"{step.axis}={b} beats {a}"
    if min(step.lower.n, step.upper.n) <= 2:
        return f"P({who}): too few runs to estimate (n={step.lower.n} vs {step.upper.n}; 3 or more per group)"
    text = f"P({who}) = {step.prob_improvement:.2f}"
    ci = step.prob_improvement_ci95
    return text + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


TEST_NAMES = {"welch": "Welch", "boschloo": "Boschloo", "fisher": "Fisher"}


def _p_text(step: Step) -> str:
    text = f"{TEST_NAMES[step.test]} p = {fmt(step.p, 2)}"
    if step.family > 1:
        text += f", Holm-adjusted p = {fmt(step.p_adjusted, 2)} over {step.family} steps"
    return text


def _seeds_text(step: Step) -> str:
    per = "per depth" if step.axis == "model.layers" else "per group"
    if step.seeds_needed is not None:
        what = "solve rates like these" if step.evidence == "solved" else "a difference of this size"
        return f"about {step.seeds_needed} seeds {per} would settle this (80% power for {what})"
    no_difference = step.lower.solved == step.upper.solved if step.evidence == "solved" else step.diff == 0
    if no_difference:
        return "no difference to size a study for"
    if step.lower.n < 2 or step.upper.n < 2:
        return "one seed gives no spread to size a study by"
    return f"more than {stats.MAX_SEEDS:,} seeds {per} would be needed"


# -- number formats shared by the verdict and the tables ---------------------------------------------------


def fmt(value: float | None, digits: int = 4) -> str:
    """`digits` significant digits; below 0.001 as 1.23e-4 (shorter than 0.000123, and easier to compare)."""
    if value is None:
        return "—"
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.{digits}g}"
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def fmt_signed(value: float) -> str:
    text = fmt(value, 3)
    return text if text.startswith("-") else "+" + text
