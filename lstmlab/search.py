"""`train --tune KEY`: a grid search that widens itself at an edge; `--halving`: successive halving first.

    search(cfg, train, runs_dir, log) -> SearchResult      train(cfg) trains a sweep (sweep_trainer: run_sweep)

Groups. The runs of a sweep are grouped by every other axis but the seeds (as `compare --by` groups them); in
each group the tuned key's values are scored and chosen exactly as `compare --tune KEY` does it
(lstmlab.analysis.compare.tune.tune: fewest failed runs, then the best mean over seeds of the validation metric
that chose each run's weights). The runs are ordinary sweep points in the experiment's folder, named as the
sweep names them, so `compare PATH --tune KEY` reads the result afterwards.

Widening. Where a group's choice is the smallest or largest value of its grid (and no other value scores as
well), the best may lie beyond: the next value on that side is trained for that group alone (all its seeds),
and the group is scored again, until its choice is interior or a limit stops it (tune.max_widen widenings, a
value past tune.min/tune.max, or one the key does not allow). The next value keeps the grid's spacing at that
edge, for a grid v_1 < ... < v_n:

    geometric (all values > 0, ratios steadier than differences):  v_n · (v_n / v_{n-1}),  v_1 / (v_2 / v_1)
    arithmetic (otherwise):                                         v_n + (v_n - v_{n-1}),  v_1 - (v_2 - v_1)

rounded to 6 significant digits (a folder name), and to an integer on a grid of integers.

Halving (Jamieson & Talwalkar 2016, synchronous). With budget T = train.steps, eta and the first rung's
fraction f: rung r trains the group's surviving values to

    b_0 = ⌈T·f / eval_every⌉·eval_every,   b_{r+1} = min(T, eta·b_r),   the last rung's budget is T,

scores them at b_r by the same rule, and keeps the best max(1, ⌊n_r / eta⌋) of them. A run that goes on to the
next rung continues its own folder from its checkpoint (sweep_trainer: `continue_run`), so a survivor trains
T steps in all, and a run trained straight to T and one continued from b_r are the same run (with a schedule
that does not depend on T: constant or plateau; halving refuses cosine). Widening then works on the values at
the full budget, with every value tried (pruned ones included) as the grid whose edge is looked at.

Why not Optuna. Its SuccessiveHalvingPruner is the asynchronous variant (ASHA): a trial is promoted when it is
in the top 1/eta of the values reported at its rung *so far*, so the first trial to report always continues and
the outcome depends on the order in which trials report. Here the values of a rung train together (packed, or
spread over an executor's workers) and are decided together, which is plain successive halving, about twenty
lines. Its GridSampler would only replay the config's own grid, and its storage would duplicate what the run
folders already hold: a search killed at any point is resumed by the same command, which skips the completed
runs, reads their scores from their folders and takes the same decisions again (the folders are the storage).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lstmlab.analysis.compare.read import RunRecord, is_number, read_run
from lstmlab.analysis.compare.tune import Tuning, tune
from lstmlab.config import ExperimentConfig, get_dotted
from lstmlab.errors import ConfigError
from lstmlab.run.extend import check_schedule
from lstmlab.run.folder import RunFolder, run_name
from lstmlab.run.sweep import Outcome

Trainer = Callable[[ExperimentConfig], list[Outcome]]  # train every point of a config's sweep


@dataclass
class GroupResult:
    """One group's search: what it tried, what it chose, and how it ended."""

    where: dict[str, Any]  # the group's value of every other swept axis but the seeds
    grid: list[Any]  # every value of the key tried, pruned ones included, sorted
    full: list[Any]  # the values trained to the full budget
    chosen: Any = None
    widened: int = 0
    ended: str = ""  # "interior" | "flat" | "limit" | "no runs"
    detail: str = ""


@dataclass
class SearchResult:
    key: str
    groups: list[GroupResult]
    outcomes: list[Outcome] = field(default_factory=list)
    steps_trained: int = 0  # member steps held by the groups' run folders
    steps_full_grid: int = 0  # what training every value tried to the full budget takes
    paths: list[Path] = field(default_factory=list)  # the full-budget runs (what compare --tune reads)

    @property
    def saved(self) -> float:
        return 1.0 - self.steps_trained / self.steps_full_grid if self.steps_full_grid else 0.0


# -- the search -----------------------------------------------------------------------------------------


def search(cfg: ExperimentConfig, train: Trainer, runs_dir: str | Path,
           log: Callable[[str], None] = print) -> SearchResult:
    """Tune cfg.tune.key per group (widening at edges; with cfg.halving.enabled, successive halving first)."""
    check(cfg)
    return _Search(cfg, train, Path(runs_dir), log).run()


class _Search:
    def __init__(self, cfg: ExperimentConfig, train: Trainer, runs_dir: Path, log: Callable[[str], None]):
        self.cfg, self.train_fn, self.runs_dir, self.log = cfg, train, runs_dir, log
        self.key = cfg.tune.key
        self.axes = tuple(cfg.sweep)  # the swept keys, in order: they name the run folders
        self.steps = cfg.train.steps
        others = [k for k in cfg.sweep if k not in (self.key, "train.seed")]
        combos = {json.dumps(c, sort_keys=True): c for c in itertools.product(*(cfg.sweep[k] for k in others))}
        grid = sorted(set(cfg.sweep[self.key]))
        self.groups = [GroupResult(dict(zip(others, c, strict=True)), list(grid), []) for c in combos.values()]
        self.outcomes: list[Outcome] = []

    # -- what a group's runs are ------------------------------------------------------------------------
    def config(self, where: dict[str, Any], values: list[Any], steps: int | None = None) -> ExperimentConfig:
        """The sweep of one group at `values` of the key: the same axes (so the same run names), the other axes
        pinned to the group's values."""
        sweep = {k: [where[k]] if k in where else list(values) if k == self.key else self.cfg.sweep[k]
                 for k in self.axes}
        update: dict[str, Any] = {"sweep": sweep}
        if steps is not None and steps != self.steps:
            update["train"] = self.cfg.train.model_copy(update={"steps": steps})
        return self.cfg.model_copy(update=update)

    def folders(self, where: dict[str, Any], values: list[Any]) -> list[Path]:
        cfg = self.config(where, values)
        return list(dict.fromkeys(self.runs_dir / cfg.experiment / run_name(point, self.axes)
                                  for point in cfg.runs()))  # a repeated seed is one run

    def records(self, where: dict[str, Any], values: list[Any], steps: int) -> tuple[list[RunRecord], list[RunRecord]]:
        """(completed runs with a validation metric, failed runs) of the group at `values`, trained to `steps`."""
        runs = [read_run(path) for path in self.folders(where, values) if path.exists()]
        at = [r for r in runs if r.flat.get("train.steps") == steps]
        return ([r for r in at if r.reason is None and r.val is not None],
                [r for r in at if r.status == "failed"])

    def tuning(self, where: dict[str, Any], values: list[Any], steps: int) -> Tuning | None:
        completed, failed = self.records(where, values, steps)
        if not completed and not failed:
            return None
        higher = next((r.higher_is_better for r in completed + failed if r.higher_is_better is not None), False)
        return tune(completed, failed, (self.key,), bool(higher))

    def ranked(self, where: dict[str, Any], values: list[Any], steps: int) -> list[Any]:
        """The values, best first, by compare --tune's rule applied again to what is left after each choice."""
        completed, failed = self.records(where, values, steps)
        higher = next((r.higher_is_better for r in completed + failed if r.higher_is_better is not None), False)
        order: list[Any] = []
        while completed or failed:
            best = tune(completed, failed, (self.key,), bool(higher)).chosen.value[self.key]
            order.append(best)
            completed = [r for r in completed if r.lookup(self.key)[1] != best]
            failed = [r for r in failed if r.lookup(self.key)[1] != best]
        return order + [v for v in values if v not in order]  # a value with no run at all: last

    def train(self, cfg: ExperimentConfig) -> None:
        outcomes = self.train_fn(cfg)
        self.outcomes += outcomes
        if any(o.status == "interrupted" for o in outcomes):
            raise KeyboardInterrupt  # its runs are checkpointed: the same command resumes the search

    # -- the steps ----------------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        if self.cfg.halving.enabled:
            self.halve()
        else:
            self.train(self.cfg)
            for group in self.groups:
                group.full = list(group.grid)
        self.widen()
        return self.result()

    def halve(self) -> None:
        budgets = rung_budgets(self.steps, self.cfg.train.eval_every, self.cfg.halving.eta,
                               self.cfg.halving.min_fraction)
        eta = self.cfg.halving.eta
        self.log(f"halving {self.key}: rungs of {', '.join(map(str, budgets))} steps; each keeps the best 1/{eta}")
        survivors = {id(g): list(g.grid) for g in self.groups}
        for rung, budget in enumerate(budgets):
            if rung == 0:  # every value of every group: the config's whole sweep, at the first budget
                self.train(self.cfg.model_copy(update={"train": self.cfg.train.model_copy(update={"steps": budget})}))
            else:
                for group in self.groups:
                    self.train(self.config(group.where, survivors[id(group)], budget))
            if budget == self.steps:
                break
            for group in self.groups:
                values = survivors[id(group)]
                ranked = self.ranked(group.where, values, budget)
                keep = ranked[: max(1, len(values) // eta)]
                survivors[id(group)] = sorted(keep)
                self.log(f"{label(group.where)}: at {budget} steps, {self.key} best first {fmt_values(ranked)}; "
                         f"{fmt_values(sorted(keep))} go on" + (f", {fmt_values(sorted(set(values) - set(keep)))} "
                                                               "stop here" if len(keep) < len(values) else ""))
        for group in self.groups:
            group.full = list(survivors[id(group)])

    def widen(self) -> None:
        limit = self.cfg.tune.max_widen
        open_groups = list(self.groups)
        while open_groups:
            pending: list[tuple[GroupResult, Any]] = []
            for group in open_groups:
                step = self.next_step(group, limit)
                if step is not None:
                    pending.append((group, step))
            for group, value in pending:
                self.train(self.config(group.where, [value]))
                group.grid = sorted([*group.grid, value])
                group.full = sorted([*group.full, value])
                group.widened += 1
            open_groups = [g for g, _ in pending]

    def next_step(self, group: GroupResult, limit: int) -> Any | None:
        """Score the group; the value to train next, or None when the group is done (its end recorded)."""
        tuning = self.tuning(group.where, group.full, self.steps)
        if tuning is None:
            group.ended, group.detail = "no runs", "no run completed or failed at the full budget"
            self.log(f"{label(group.where)}: {group.detail}; nothing to choose from")
            return None
        group.chosen = tuning.chosen.value[self.key]
        where = f"{label(group.where)}: best {self.key}={group.chosen} of {fmt_values(group.grid)}"
        # the edge as compare --tune sees it, with every value tried as the grid (halving's pruned values too)
        edges = dataclasses.replace(tuning, grid={self.key: group.grid}).edges()
        if not edges:
            at_edge = group.chosen in (group.grid[0], group.grid[-1])
            group.ended = "flat" if at_edge else "interior"
            group.detail = "at an edge, but another value scores exactly as well" if at_edge else "interior"
            self.log(f"{where} is {group.detail}; done")
            return None
        side = edges[0][2]
        if group.widened >= limit:
            group.ended = "limit"
            group.detail = f"the {side} value after {group.widened} widening(s): tune.max_widen {limit} reached"
            self.log(f"{where} is {group.detail}")
            return None
        value = next_value(group.grid, side)
        problem = self.out_of_range(group, value)
        if problem:
            group.ended, group.detail = "limit", f"the {side} value; {problem}"
            self.log(f"{where} is {group.detail}")
            return None
        self.log(f"{where} is the {side} value: widening to {value} (widening {group.widened + 1} of {limit})")
        return value

    def out_of_range(self, group: GroupResult, value: Any) -> str | None:
        low, high = self.cfg.tune.min, self.cfg.tune.max
        if low is not None and value < low:
            return f"the next value {value} is below tune.min {low}"
        if high is not None and value > high:
            return f"the next value {value} is above tune.max {high}"
        try:
            next(self.config(group.where, [value]).runs())
        except ConfigError as e:
            return f"the next value {value} is not allowed ({e})"
        return None

    def result(self) -> SearchResult:
        result = SearchResult(self.key, self.groups, self.outcomes)
        for group in self.groups:
            for path in self.folders(group.where, group.grid):
                summary = RunFolder(path).summary() if (path / "summary.json").exists() else None
                step = summary.get("step") if isinstance(summary, dict) else None
                result.steps_trained += step if isinstance(step, int) else 0
                result.steps_full_grid += self.steps
            result.paths += [p for p in self.folders(group.where, group.full) if p.exists()]
        interior = [g for g in self.groups if g.ended in ("interior", "flat")]
        stopped = [g for g in self.groups if g.ended not in ("interior", "flat")]
        if interior:
            self.log(f"search {self.key}: chosen inside its grid in {len(interior)} group(s): " + "; ".join(
                f"{label(g.where)} {self.key}={g.chosen}" for g in interior))
        if stopped:
            self.log(f"search {self.key}: stopped at a limit in {len(stopped)} group(s): " + "; ".join(
                f"{label(g.where)} {self.key}={g.chosen} ({g.detail})" for g in stopped))
        if self.cfg.halving.enabled:
            self.log(f"halving: {result.steps_trained} member steps trained; every value tried trained to "
                     f"{self.steps} steps would take {result.steps_full_grid} ({result.saved:.0%} saved)")
        return result


def sweep_trainer(runs_dir: str | Path, data_dir: str | Path, log: Callable[[str], None] = print,
                  **sweep_options: Any) -> Trainer:
    """The real trainer: lstmlab.run.sweep.run_sweep (any executor, packing, jobs) on each config the search
    asks for, after continuing in place the runs that a shorter rung completed (lstmlab.run.extend)."""
    from lstmlab.run.extend import continue_shorter
    from lstmlab.run.sweep import distinct_points, run_sweep

    restart = [sweep_options.pop("restart", False)]  # --restart: the first sweep only (the whole grid); later
    # calls train new values or continue runs this search trained, which a restart would throw away

    def train(cfg: ExperimentConfig) -> list[Outcome]:
        if not restart[0]:
            continue_shorter(distinct_points(cfg, lambda _: None), tuple(cfg.sweep), runs_dir, data_dir, log)
        outcomes = run_sweep(cfg, runs_dir=runs_dir, data_dir=data_dir, log=log, restart=restart[0], **sweep_options)
        restart[0] = False
        return outcomes

    return train


# -- checks and arithmetic --------------------------------------------------------------------------------


def check(cfg: ExperimentConfig) -> None:
    """Bad input, named: the key must be a config key, a sweep axis other than the seed, with two or more
    numeric values; halving needs a budget it can cut (no swept train.steps, no cosine schedule)."""
    key = cfg.tune.key
    if not key:
        raise ConfigError("tune.key: no key to tune; give one with --tune KEY (e.g. --tune train.lr)")
    try:
        get_dotted(cfg.model_dump(mode="json"), key)
    except (KeyError, TypeError):
        raise ConfigError(f"--tune {key}: not a config key (use dotted keys like train.lr)") from None
    if key == "train.seed":
        raise ConfigError("--tune train.seed: seeds are what each value's mean is taken over; tune another key")
    if key not in cfg.sweep:
        raise ConfigError(f"--tune {key}: not a sweep axis of experiment {cfg.experiment}; give its grid, e.g. "
                          f"--sweep {key}=V1,V2,V3 (or sweep: {{{key}: [V1, V2, V3]}} in the config)")
    values = set(cfg.sweep[key])
    if len(values) < 2:
        raise ConfigError(f"--tune {key}: its grid has one value ({cfg.sweep[key][0]}); tuning needs two or more, "
                          f"e.g. --sweep {key}=V1,V2,V3")
    if not all(is_number(v) for v in values):
        raise ConfigError(f"--tune {key}: the values {cfg.sweep[key]} are not all numbers; only a numeric grid "
                          "can be searched and widened")
    if cfg.halving.enabled:
        if "train.steps" in cfg.sweep or key == "train.steps":
            raise ConfigError("--halving: train.steps is swept; halving cuts the budget itself, so it cannot be "
                              "an axis too")
        check_schedule(cfg, "--halving")


def next_value(grid: list[Any], side: str) -> Any:
    """The next value beyond the `side` ("smallest" | "largest") edge of the sorted `grid`, with its spacing
    there (see the module's docstring); on a grid of integers, rounded away from the grid."""
    a, b = (grid[0], grid[1]) if side == "smallest" else (grid[-1], grid[-2])  # a: the edge, b: its neighbour
    if geometric(grid):
        value = a * (a / b)  # v_n · (v_n / v_{n-1}), or v_1 / (v_2 / v_1)
    else:
        value = a + (a - b)  # v_n + (v_n - v_{n-1}), or v_1 - (v_2 - v_1)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in grid):
        return int(math.floor(value) if side == "smallest" else math.ceil(value))
    return float(f"{value:.6g}")


def geometric(grid: list[Any]) -> bool:
    """Log-spaced: every value positive and the ratios between neighbours steadier than their differences
    (a two-value grid of positive values counts as log-spaced: learning rates are)."""
    if any(v <= 0 for v in grid):
        return False
    ratios = [b / a for a, b in itertools.pairwise(grid)]
    diffs = [b - a for a, b in itertools.pairwise(grid)]
    return max(ratios) / min(ratios) <= max(diffs) / min(diffs)


def rung_budgets(steps: int, eval_every: int, eta: int, min_fraction: float) -> list[int]:
    """b_0 = ⌈T·f / eval_every⌉·eval_every, b_{r+1} = min(T, eta·b_r), ending at T."""
    budget = min(steps, math.ceil(steps * min_fraction / eval_every) * eval_every)
    budgets = [budget]
    while budgets[-1] < steps:
        budgets.append(min(steps, budgets[-1] * eta))
    return budgets


def label(where: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in where.items()) or "all runs"


def fmt_values(values: list[Any]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"
