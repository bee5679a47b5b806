"""Run folders as compare sees them: one RunRecord per folder, read through lstmlab.run.reader's RunView.

    read_runs(paths) -> list[RunRecord]       every run folder at or below the paths, sorted

A record carries what compare uses (config leaves by dotted key, status, test metric, best validation
metric, solved, params, the validation curve) and `reason`: why the run cannot be compared, naming the
file at fault, or None for a completed run with a finite test metric. A run still training, or interrupted,
has a reason (no result at the end) and is `unfinished`: compare --at-step reads it at a step it reached.
Nothing here raises on a bad file: the view's UnreadableFile becomes the reason.

Speed over thousands of folders: the view parses config.yaml with libyaml and summary.json with json, and
metrics.csv only for runs whose curve or last step is needed (plots, unfinished runs, format-1 folders
whose summary lacks a result); no schema validation (a run folder is read as written). Which fields a
folder must hold, and which are derived, follows its format (lstmlab.run.folder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lstmlab.files import UnreadableFile
from lstmlab.run.folder import CONFIG, METRICS, SUMMARY, find_runs
from lstmlab.run.reader import DEFAULT_BY, RunView, dotted, flat_config, hashable, is_number, task_attribute

UNFINISHED = ("running", "interrupted")  # statuses with rows to read at a step, and no result at the end yet

__all__ = ["DEFAULT_BY", "RunRecord", "dotted", "flat_config", "hashable", "is_number", "order", "read_run",
           "read_runs", "task_attribute"]


@dataclass
class RunRecord:
    """One run folder as compare sees it."""

    view: RunView = field(repr=False)
    name: str
    config: dict | None  # None: config.yaml unreadable
    status: str | None = None
    reason: str | None = None  # why it cannot be compared; None: completed, with a finite test metric
    task: str | None = None
    metric: str | None = None
    higher_is_better: bool | None = None
    test: float | None = None  # the task's metric on the test split, with the best-validation weights
    val: float | None = None  # the best validation metric: the one that chose those weights
    solved: bool | None = None
    params: int | None = None
    hidden_size: int | None = None
    baseline: float | None = None
    baselines: dict[str, float] = field(default_factory=dict, repr=False)
    solve_threshold: float | None = None
    wall_s: float | None = None
    converged: bool | None = None  # summary.json's converged (lstmlab.run.convergence); None: not recorded
    unfinished: bool = False  # running or interrupted: no result at the end yet, but readable at a step it reached
    _curve: list[tuple[int, float]] | None = field(default=None, repr=False)  # set: the curve cut at --at-step

    @property
    def path(self) -> Path:
        return self.view.path

    @property
    def flat(self) -> dict[str, Any]:
        """Config leaves by dotted key, hashable (lists as tuples); {} when config.yaml is unreadable."""
        return self.view.flat if self.config is not None else {}

    @property
    def curve(self) -> list[tuple[int, float]]:
        """(step, validation metric) per evaluation, from metrics.csv, read on first use (plots need it, tables
        not). An unreadable file gives no curve: the numbers compare reports come from summary.json."""
        if self._curve is not None:
            return self._curve
        try:
            return self.view.val_curve(self.metric) if self.metric else []
        except UnreadableFile:
            return []

    @property
    def curve_problem(self) -> str | None:
        """Why the run has no curve (metrics.csv unreadable, naming it), or None: plots say it, not leave it out
        silently."""
        try:
            _ = self.view.rows  # read once (cached): the reason it fails is the problem
        except UnreadableFile as e:
            return str(e)
        return None

    @property
    def seed(self) -> int | None:
        seed = self.flat.get("train.seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    def lookup(self, key: str) -> tuple[bool, Any]:
        """(found, value) of a dotted config key, hashable; a section (e.g. `task`) as JSON text."""
        return self.view.lookup(key) if self.config is not None else (False, None)


def read_runs(paths: list[str | Path] | tuple[str | Path, ...]) -> list[RunRecord]:
    return [read_run(folder.path) for folder in find_runs(list(paths))]


def read_run(path: Path) -> RunRecord:
    view = RunView(path)
    try:
        config = view.config
    except UnreadableFile as e:
        return RunRecord(view, view.path.name, None, reason=f"unreadable {CONFIG}: {e.problem}")
    record = RunRecord(view, view.path.name, config)
    if not view.has_summary():
        record.reason = f"no {SUMMARY}: the run never started, or an earlier version wrote no summary"
        return record
    try:
        summary = view.summary
    except UnreadableFile as e:
        record.reason = f"unreadable {SUMMARY}: {e.problem}"
        return record
    record.name, record.status = view.name, view.status
    record.task, record.metric, record.higher_is_better = view.task, view.metric, view.higher_is_better
    record.reason = _status_reason(record, summary)
    if record.status == "running":
        last_step = _safely(view.last_step)
        at = f" at step {last_step} of {summary.get('steps', '?')} (last evaluation)" if last_step is not None else ""
        record.reason += (f"{at}: still training, or killed before it could say otherwise; "
                          "the same train command resumes it")
    if record.reason is None:
        _fill_completed(record, summary)
    elif record.status in UNFINISHED:
        record.unfinished = True  # compare --at-step reads it at an evaluation it has reached
        _fill_sizes(record, summary)
    return record


def _status_reason(record: RunRecord, summary: dict) -> str | None:
    progress = f"step {summary.get('step', '?')} of {summary.get('steps', '?')}"
    if record.status == "failed":
        return f"failed: {summary.get('error') or 'no error message recorded'}"
    if record.status == "interrupted":
        return f"interrupted at {progress}; run the same train command again to resume it"
    if record.status == "running":
        return "incomplete: status running"
    if record.status != "completed":
        return f"status {record.status!r} is not completed"
    return None


def _fill_completed(record: RunRecord, summary: dict) -> None:
    view = record.view
    value = _safely(view.test_metric)
    if not is_number(value):
        record.reason = f"completed, but no test metric in {SUMMARY} or {METRICS}"
        return
    if not math.isfinite(value):
        record.reason = f"completed with a non-finite test metric ({value})"
        return
    record.test = float(value)
    val = _safely(view.best_val)
    record.val = val if val is not None and math.isfinite(val) else None
    _fill_sizes(record, summary)
    record.wall_s = summary.get("wall_s")
    record.converged = summary.get("converged")
    record.solved = _safely(view.solved)


def _fill_sizes(record: RunRecord, summary: dict) -> None:
    """What a run's summary says from its start: its size, baselines and solve threshold."""
    record.params = summary.get("params")
    hidden = summary.get("hidden_size", record.flat.get("model.hidden_size"))
    record.hidden_size = hidden if isinstance(hidden, int) and not isinstance(hidden, bool) else None
    record.baseline = summary.get("baseline")
    record.baselines = summary.get("baselines") or {}
    record.solve_threshold = summary.get("solve_threshold")


def _safely(read):
    """A value the view derives from metrics.csv, or None when that file cannot be read."""
    try:
        return read()
    except UnreadableFile:
        return None


# -- helpers --------------------------------------------------------------------------------------------


def order(value: Any) -> tuple:
    """Sort numbers numerically, then strings, then None; never compare across types."""
    if value is None:
        return (2, "")
    if is_number(value):
        return (0, value)
    return (1, str(value))
