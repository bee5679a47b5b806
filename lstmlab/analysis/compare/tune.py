"""Tuning within a group: pick the value of the --tune key(s) by validation, report test at that value only.

A deeper, narrower network at the shallower one's best learning rate is not a fair opponent (Melis et
al. 2018 tuned each depth on its own). So within each group (one value of every --by key), the runs
are split by the values of the tuned keys (e.g. train.lr); each value is scored by the mean over its
seeds of the *validation* metric that chose each run's weights (summary.json best_val), and the group
keeps only the runs of the best value. The test metric never takes part in the choice: it is measured
on a split the choice never saw.

Ranking of the values, best first:
  1. the fraction of its runs that failed (a learning rate that diverges for some seeds is no choice);
  2. the mean best-validation metric (lower or higher, as the task says);
  3. more runs, then the grid's order (so ties resolve the same way every time).

A choice at the smallest or largest value of a numeric grid is reported (the best may lie beyond it), unless
another value scores exactly as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lstmlab.analysis.compare import stats
from lstmlab.analysis.compare.read import RunRecord, is_number, order


@dataclass
class Candidate:
    """One value (one point of the tuned keys' grid) within a group."""

    value: dict[str, Any]
    runs: list[RunRecord]  # completed runs at this value
    failed: int  # runs at this value whose training failed

    @property
    def val_mean(self) -> float | None:
        values = [r.val for r in self.runs if r.val is not None]
        return stats.mean(values) if values else None

    @property
    def failed_fraction(self) -> float:
        return self.failed / (self.failed + len(self.runs)) if self.failed + len(self.runs) else 1.0


@dataclass
class Tuning:
    keys: tuple[str, ...]
    chosen: Candidate
    candidates: list[Candidate]  # in grid order
    grid: dict[str, list[Any]]  # every value each key takes in this group, sorted

    def edges(self) -> list[tuple[str, Any, str]]:
        """(key, chosen value, "smallest" | "largest") for each numeric key whose choice is at its grid's edge.
        None where another value scores exactly as well (a flat optimum, e.g. every value at a ceiling): the
        choice there is the grid's order, not a sign that the best lies beyond it."""
        score = (self.chosen.failed_fraction, self.chosen.val_mean)
        if any(c is not self.chosen and (c.failed_fraction, c.val_mean) == score for c in self.candidates):
            return []
        found = []
        for key in self.keys:
            values, chosen = self.grid[key], self.chosen.value[key]
            if len(values) < 2 or not all(is_number(v) for v in values):
                continue
            if chosen == values[0]:
                found.append((key, chosen, "smallest"))
            elif chosen == values[-1]:
                found.append((key, chosen, "largest"))
        return found

    def single_valued(self) -> list[str]:
        return [key for key in self.keys if len(self.grid[key]) == 1]


def tune(runs: list[RunRecord], failed: list[RunRecord], keys: tuple[str, ...], higher_is_better: bool) -> Tuning:
    """Choose among `runs` (completed, each with a validation metric) the value of `keys` with the best mean
    validation metric; `failed` are this group's failed runs, counted against their value."""
    by_value: dict[tuple, Candidate] = {}
    for run in runs:
        point = tuple(run.lookup(k)[1] for k in keys)
        by_value.setdefault(point, Candidate(dict(zip(keys, point, strict=True)), [], 0)).runs.append(run)
    for run in failed:  # a value all of whose runs failed stays in the grid, ranked last
        point = tuple(run.lookup(k)[1] for k in keys)
        by_value.setdefault(point, Candidate(dict(zip(keys, point, strict=True)), [], 0)).failed += 1
    ordered = [by_value[p] for p in sorted(by_value, key=lambda p: tuple(order(v) for v in p))]
    sign = -1.0 if higher_is_better else 1.0

    def rank(item: tuple[int, Candidate]) -> tuple:
        index, candidate = item
        val = candidate.val_mean
        return (candidate.failed_fraction, math.inf if val is None else sign * val, -len(candidate.runs), index)

    _, chosen = min(enumerate(ordered), key=rank)
    grid = {k: sorted({c.value[k] for c in ordered}, key=order) for k in keys}
    return Tuning(keys, chosen, ordered, grid)
