"""Read run folders for compare: every file once, into one RunRecord per folder.

    read_runs(paths) -> list[RunRecord]       every run folder at or below the paths, sorted

A record carries what compare uses (config leaves by dotted key, status, test metric, best validation
metric, solved, params, the validation curve) and `reason`: why the run cannot be compared, naming the
file at fault, or None for a completed run with a finite test metric. Nothing here raises on a bad file.

Speed over thousands of folders: config.yaml is parsed with libyaml when PyYAML has it (about ten times
faster than the pure-Python parser, which was most of compare's time), summary.json with json, and
metrics.csv with csv, only for runs whose curve or last step is needed; no schema validation (a run
folder is read as written, and earlier versions' folders as far as their fields allow).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lstmlab import files
from lstmlab.run.folder import CONFIG, METRICS, SUMMARY, find_runs

YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class RunRecord:
    """One run folder as compare sees it."""

    path: Path
    name: str
    config: dict | None  # None: config.yaml unreadable
    flat: dict[str, Any] = field(repr=False)  # config leaf by dotted key, hashable (lists as tuples)
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
    _curve: list[tuple[int, float]] | None = field(default=None, repr=False)

    @property
    def curve(self) -> list[tuple[int, float]]:
        """(step, validation metric) per evaluation, from metrics.csv: read on first use (plots need it, tables not)."""
        if self._curve is None:
            self._curve, _, _ = read_metrics(self.path, self.metric)
        return self._curve

    @property
    def seed(self) -> int | None:
        seed = self.flat.get("train.seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    def lookup(self, key: str) -> tuple[bool, Any]:
        """(found, value) of a dotted config key, hashable; a section (e.g. `task`) as JSON text."""
        if key in self.flat:
            return True, self.flat[key]
        found, value = dotted(self.config, key)
        return found, hashable(value)


def read_runs(paths: list[str | Path] | tuple[str | Path, ...]) -> list[RunRecord]:
    return [read_run(folder.path) for folder in find_runs(list(paths))]


def read_run(path: Path) -> RunRecord:
    try:
        config = yaml.load(files.read_text(path / CONFIG), Loader=YAML_LOADER)  # noqa: S506 (a safe loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, files.UnreadableFile) as e:
        return RunRecord(path, path.name, None, {}, reason=f"unreadable {CONFIG}: {first_line(e)}")
    if not isinstance(config, dict):
        return RunRecord(path, path.name, None, {}, reason=f"unreadable {CONFIG}: not a mapping of sections")
    record = RunRecord(path, path.name, config, flatten(config))
    summary, record.reason = _read_summary(path)
    if summary is None:
        return record
    record.name = summary.get("run") or path.name
    record.status = summary.get("status")
    record.task = summary.get("task") or record.flat.get("task.name")
    record.metric = summary.get("metric") or task_attribute(record.task, "metric")
    record.higher_is_better = summary.get("higher_is_better")
    if record.higher_is_better is None:
        record.higher_is_better = task_attribute(record.task, "higher_is_better")
    record.reason = _status_reason(record, summary)
    if record.status == "running":
        record._curve, last_step, _ = read_metrics(path, record.metric)
        at = f" at step {last_step} of {summary.get('steps', '?')} (last evaluation)" if last_step is not None else ""
        record.reason += (f"{at}: still training, or killed before it could say otherwise; "
                          "the same train command resumes it")
    if record.reason is None:
        _fill_completed(record, summary)
    return record


# -- summary.json ---------------------------------------------------------------------------------------

FIELD_TYPES: dict[str, tuple[type, ...]] = {  # the summary fields compare reads, and the types it accepts
    "status": (str,), "run": (str,), "task": (str,), "metric": (str,), "higher_is_better": (bool,),
    "params": (int,), "hidden_size": (int,), "baseline": (int, float), "baselines": (dict,),
    "solve_threshold": (int, float), "solved": (bool,), "wall_s": (int, float), "test": (dict,),
    "test_metric": (int, float), "best_val": (dict,), "step": (int,), "steps": (int,), "error": (str,),
    "converged": (bool,),
}
TYPE_NAMES = {str: "text", bool: "true or false", int: "an integer", float: "a number", dict: "an object"}


def _read_summary(path: Path) -> tuple[dict | None, str | None]:
    """(summary, reason it cannot be used or None)."""
    if not (path / SUMMARY).exists():
        return None, f"no {SUMMARY}: the run never started, or an earlier version wrote no summary"
    try:
        text = files.read_text(path / SUMMARY)
    except (OSError, UnicodeDecodeError, files.UnreadableFile) as e:
        return None, f"unreadable {SUMMARY}: {first_line(e)}"
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"unreadable {SUMMARY}: not JSON ({e})"
    if not isinstance(summary, dict):
        return None, f"unreadable {SUMMARY}: not an object"
    for key, types in FIELD_TYPES.items():
        value = summary.get(key)
        if value is None:
            continue
        wrong = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if wrong:
            return None, (f"unreadable {SUMMARY}: {key} is {json.dumps(value)[:40]}, not "
                          f"{' or '.join(TYPE_NAMES[t] for t in types)}")
    return summary, None


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
    metric = record.metric
    value = summary.get("test_metric")
    if value is None and metric and isinstance(summary.get("test"), dict):
        value = summary["test"].get(metric)
    if value is None:  # earlier versions: the test row of metrics.csv
        record._curve, _, value = read_metrics(record.path, metric)
    if not is_number(value):
        record.reason = f"completed, but no test metric in {SUMMARY} or {METRICS}"
        return
    if not math.isfinite(value):
        record.reason = f"completed with a non-finite test metric ({value})"
        return
    record.test = float(value)
    best_val = summary.get("best_val")
    val = best_val.get(metric) if isinstance(best_val, dict) and metric else None
    if not is_number(val) and record.curve and record.higher_is_better is not None:  # earlier versions
        val = (max if record.higher_is_better else min)(v for _, v in record.curve)
    record.val = float(val) if is_number(val) and math.isfinite(val) else None
    record.params = summary.get("params")
    hidden = summary.get("hidden_size", record.flat.get("model.hidden_size"))
    record.hidden_size = hidden if isinstance(hidden, int) and not isinstance(hidden, bool) else None
    record.baseline = summary.get("baseline")
    record.baselines = summary.get("baselines") or {}
    record.solve_threshold = summary.get("solve_threshold")
    record.wall_s = summary.get("wall_s")
    record.converged = summary.get("converged")
    solved = summary.get("solved")
    if solved is None and record.solve_threshold is not None and record.higher_is_better is not None:
        threshold = record.solve_threshold
        solved = record.test >= threshold if record.higher_is_better else record.test <= threshold
    record.solved = None if solved is None else bool(solved)


# -- metrics.csv ----------------------------------------------------------------------------------------


def read_metrics(path: Path, metric: str | None) -> tuple[list[tuple[int, float]], int | None, float | None]:
    """(validation curve, last step, last test value) from a run's metrics.csv.

    Only complete lines count (a trailing partial line is a row being written). An unreadable file gives
    no curve: the curve is for plots, and the numbers compare reports come from summary.json.
    """
    curve: list[tuple[int, float]] = []
    try:
        text = files.read_text(path / METRICS)
    except (OSError, UnicodeDecodeError, files.UnreadableFile):
        return curve, None, None
    text = text[: text.rfind("\n") + 1]
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or "step" not in header or "split" not in header:
        return curve, None, None
    i_step, i_split = header.index("step"), header.index("split")
    i_metric = header.index(metric) if metric in header else None
    last_step, last_test = None, None
    for row in reader:
        if len(row) != len(header):
            continue
        try:
            step = int(row[i_step])
            value = float(row[i_metric]) if i_metric is not None and row[i_metric] != "" else None
        except ValueError:
            continue
        last_step = step
        if row[i_split] == "val" and value is not None:
            curve.append((step, value))
        elif row[i_split] == "test":
            last_test = value
    return curve, last_step, last_test


# -- helpers --------------------------------------------------------------------------------------------


def flatten(raw: dict, prefix: str = "") -> dict[str, Any]:
    """Config leaves by dotted key: {"model": {"layers": 2}} -> {"model.layers": 2}; an empty section is a leaf."""
    leaves: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and value:
            leaves.update(flatten(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = hashable(value)
    return leaves


def dotted(config: Any, key: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key in a nested config: dotted(cfg, "model.layers") -> (True, 2)."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


@functools.cache
def task_attribute(task: str | None, name: str) -> Any:
    """A class attribute of a registered task (metric, higher_is_better): for folders whose summary lacks it."""
    if task is None:
        return None
    from lstmlab.tasks import TASKS

    cls = TASKS.get(task)
    return getattr(cls, name, None) if cls else None


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def order(value: Any) -> tuple:
    """Sort numbers numerically, then strings, then None; never compare across types."""
    if value is None:
        return (2, "")
    if is_number(value):
        return (0, value)
    return (1, str(value))
