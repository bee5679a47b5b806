"""Turn run folders into a verdict: group runs by config keys across seeds, and weigh each step up in depth.

    compare_runs(paths, by=("model.layers",)) -> Comparison     read, group, summarise, compare neighbours
    render(comparison, fmt)                   -> str | rich     table | markdown | csv | json
    plot(comparison, path)                                      learning curves and final metrics (lstmlab.plot)

Every group reports its seeds' test metric as n, mean, sample std, a 95% t-interval, median and best, and
the fraction of runs that solved the task. Neighbouring groups along the first --by key (2 vs 1 layers,
3 vs 2, within equal values of any other --by key) get the difference of means with a Welch 95% interval
and a verdict in words. Long-lag tasks are bimodal across seeds (a run solves the task or stays at the
baseline), so a verdict also says when the solved fraction changes: a mean alone misleads there.

Runs that cannot be compared (unfinished, failed, another task, unreadable files) are listed with the
reason, never dropped silently. Run folders of earlier versions are read as far as their fields allow.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lstmlab import stats
from lstmlab.errors import UserError
from lstmlab.runs import RunFolder, find_runs

FORMATS = ("table", "markdown", "csv", "json")
EQUAL_PARAMS_TOLERANCE = 0.05  # groups whose mean parameter counts differ by more are flagged in the verdict
POOLED_KEYS = {"train.seed", "experiment"}  # keys that may differ within a group: seeds are what a group pools


@dataclass
class Run:
    """One completed run, as compare needs it."""

    path: Path
    name: str
    key: tuple[Any, ...]
    seed: int | None
    value: float  # the task's metric on the test split
    solved: bool | None
    params: int | None
    hidden_size: int | None
    baseline: float | None
    wall_s: float | None
    curve: list[tuple[int, float]]  # (step, validation metric)
    config: dict = field(default_factory=dict, repr=False)


@dataclass
class Group:
    key: dict[str, Any]
    runs: list[Run]

    @property
    def values(self) -> list[float]:
        return [r.value for r in self.runs]

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

    def mixed(self) -> list[str]:
        """Config keys, other than the seed, whose values differ between this group's runs."""
        leaves = sorted(set().union(*(_leaves(r.config) for r in self.runs)) - POOLED_KEYS)
        return [k for k in leaves if len({json.dumps(_dotted(r.config, k), sort_keys=True) for r in self.runs}) > 1]


@dataclass
class Step:
    """The effect of moving from group `lower` to group `upper` along the first --by key."""

    axis: str
    lower: Group
    upper: Group
    diff: float
    ci95: tuple[float, float] | None
    relative: float | None  # diff / |mean of lower|
    df: float | None
    better: bool | None  # None: the interval includes 0, or there is none
    verdict: str


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
    groups: list[Group] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def better(self, a: float, b: float) -> float:
        return max(a, b) if self.higher_is_better else min(a, b)

    def group_stats(self, group: Group) -> dict[str, Any]:
        values = group.values
        best = values[0]
        for v in values[1:]:
            best = self.better(best, v)
        return {
            "mean": stats.mean(values),
            "std": stats.std(values),
            "ci95": stats.t_interval(values),
            "median": stats.median(values),
            "best": best,
        }

    def to_dict(self) -> dict[str, Any]:
        """The `compare --format json` object (DESIGN.md's contract)."""
        groups = []
        for g in self.groups:
            s = self.group_stats(g)
            groups.append({
                "key": g.key, "n": g.n, "mean": s["mean"], "std": s["std"],
                "ci95": list(s["ci95"]) if s["ci95"] else None, "median": s["median"], "best": s["best"],
                "solved": g.solved, "n_solved": g.n_solved, "params": g.params(), "hidden_size": g.hidden_sizes(),
                "baseline": g.baseline(), "mixed": g.mixed(),
                "runs": [{"run": r.name, "path": str(r.path), "seed": r.seed, "value": r.value, "solved": r.solved,
                          "params": r.params, "wall_s": r.wall_s} for r in g.runs],
            })
        steps = [{
            "axis": s.axis, "from": s.lower.key, "to": s.upper.key, "diff": s.diff,
            "ci95": list(s.ci95) if s.ci95 else None, "relative": s.relative, "df": s.df, "better": s.better,
            "verdict": s.verdict,
        } for s in self.steps]
        return _finite({
            "by": list(self.by),
            "metric": {"name": self.metric, "task": self.task, "higher_is_better": self.higher_is_better,
                       "baseline": self.baseline, "baselines": self.baselines,
                       "solve_threshold": self.solve_threshold, "split": "test"},
            "groups": groups,
            "steps": steps,
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
        })


# -- reading and grouping ------------------------------------------------------------------------------


def compare_runs(paths: list[str | Path] | tuple[str | Path, ...], by: tuple[str, ...] = ("model.layers",)
                 ) -> Comparison:
    """Read every run folder at or below `paths`, group completed runs by the dotted config keys `by`."""
    by = tuple(by) or ("model.layers",)
    folders = find_runs(list(paths))
    if not folders:
        raise UserError(
            f"no run folders under {', '.join(map(str, paths))}: a run folder holds a config.yaml "
            "(give a run folder, or a folder above run folders such as runs/ or runs/<experiment>)"
        )
    readable: list[tuple[RunFolder, dict, dict]] = []
    skipped: list[Skipped] = []
    for folder in folders:
        config, summary, reason = _read(folder)
        if reason:
            skipped.append(Skipped(folder.path, reason))
        if config is not None:
            readable.append((folder, config, summary if not reason else {}))
    _check_keys(by, [config for _, config, _ in readable])

    # the runs to compare: completed, with the majority's task and metric
    complete = [(f, c, s) for f, c, s in readable if s]
    kinds = Counter(_kind(c, s) for _, c, s in complete)
    majority = kinds.most_common(1)[0][0] if kinds else (None, None)
    runs: list[Run] = []
    first_summary: dict | None = None
    for folder, config, summary in complete:
        task, metric = _kind(config, summary)
        if (task, metric) != majority:
            skipped.append(Skipped(folder.path, f"task {task} (metric {metric}) differs from the majority's "
                                                f"{majority[0]} ({majority[1]}); compare those runs separately"))
            continue
        key, missing = _key(config, by)
        if missing:
            skipped.append(Skipped(folder.path, f"config has no {missing} (a run folder of an earlier version?)"))
            continue
        runs.append(_run(folder, config, summary, metric, key))
        first_summary = first_summary or summary

    comparison = _header(by, majority, first_summary, runs)
    comparison.skipped = sorted(skipped, key=lambda s: str(s.path))
    grouped: dict[tuple, list[Run]] = {}
    for run in runs:
        grouped.setdefault(run.key, []).append(run)
    comparison.groups = [
        Group(dict(zip(by, key, strict=True)), sorted(grouped[key], key=lambda r: (_order(r.seed), r.name)))
        for key in sorted(grouped, key=lambda k: tuple(_order(v) for v in k))
    ]
    comparison.steps = _steps(comparison)
    return comparison


def _read(folder: RunFolder) -> tuple[dict | None, dict | None, str | None]:
    """(config, summary, reason it cannot be compared or None)."""
    try:
        config = folder.config()
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        return None, None, f"unreadable config.yaml: {_first_line(e)}"
    if not isinstance(config, dict):
        return None, None, "unreadable config.yaml: not a mapping of sections"
    try:
        summary = folder.summary()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return config, None, f"unreadable summary.json: {_first_line(e)}"
    if summary is None:
        return config, None, "no summary.json: the run never started, or an earlier version wrote no summary"
    if not isinstance(summary, dict):
        return config, None, "unreadable summary.json: not an object"
    status = summary.get("status")
    progress = f"step {summary.get('step', '?')} of {summary.get('steps', '?')}"
    if status == "failed":
        return config, None, f"failed: {summary.get('error') or 'no error message recorded'}"
    if status == "interrupted":
        return config, None, f"interrupted at {progress}; run the same train command again to resume it"
    if status == "running":
        last = _last_step(folder)
        at = f" at step {last} of {summary.get('steps', '?')} (last evaluation)" if last is not None else ""
        return config, None, (f"incomplete: status running{at}: still training, or killed before it could say "
                              "otherwise; the same train command resumes it")
    if status != "completed":
        return config, None, f"status {status!r} is not completed"
    metric = summary.get("metric")
    value = summary.get("test_metric")
    if value is None and metric and isinstance(summary.get("test"), dict):
        value = summary["test"].get(metric)
    if value is None:
        value = _last_test_value(folder, metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return config, None, "completed, but no test metric in summary.json or metrics.csv"
    if not math.isfinite(value):
        return config, None, f"completed with a non-finite test metric ({value})"
    return config, {**summary, "test_metric": float(value)}, None


def _last_step(folder: RunFolder) -> int | None:
    try:
        steps = [r["step"] for r in folder.metrics() if isinstance(r.get("step"), int)]
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return steps[-1] if steps else None


def _last_test_value(folder: RunFolder, metric: str | None) -> float | None:
    if not metric:
        return None
    try:
        rows = [r for r in folder.metrics() if r.get("split") == "test"]
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return rows[-1].get(metric) if rows else None


def _kind(config: dict, summary: dict) -> tuple[str | None, str | None]:
    task = summary.get("task") or (config.get("task") or {}).get("name")
    metric = summary.get("metric")
    if metric is None and task is not None:
        metric = _task_attr(task, "metric")
    return task, metric


def _task_attr(task: str, name: str) -> Any:
    try:
        from lstmlab.tasks import TASKS
    except ImportError:  # pragma: no cover - a broken install; compare still reads what summaries say
        return None
    cls = TASKS.get(task)
    return getattr(cls, name, None) if cls else None


def _key(config: dict, by: tuple[str, ...]) -> tuple[tuple, str | None]:
    values = []
    for key in by:
        found, value = _dotted(config, key)
        if not found:
            return (), key
        values.append(_hashable(value))
    return tuple(values), None


def _dotted(raw: Any, key: str) -> tuple[bool, Any]:
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _order(value: Any) -> tuple:
    """Sort numbers numerically, then strings, then None; never compare across types."""
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def _check_keys(by: tuple[str, ...], configs: list[dict]) -> None:
    if not configs:
        return
    for key in by:
        if not any(_dotted(c, key)[0] for c in configs):
            leaves = sorted(set().union(*(_leaves(c) for c in configs)))
            varying = [k for k in leaves if len({json.dumps(_dotted(c, k)[1], sort_keys=True) for c in configs}) > 1]
            hint = f"keys that vary across these runs: {', '.join(varying)}; " if varying else ""
            raise UserError(f"--by {key}: not a config key of these runs; {hint}valid keys: {', '.join(leaves)}")


def _leaves(raw: dict, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for k, v in raw.items():
        if isinstance(v, dict) and v:
            keys |= _leaves(v, f"{prefix}{k}.")
        else:
            keys.add(f"{prefix}{k}")
    return keys


def _run(folder: RunFolder, config: dict, summary: dict, metric: str, key: tuple) -> Run:
    seed = _dotted(config, "train.seed")[1]
    value = summary["test_metric"]
    solved = summary.get("solved")
    higher = summary.get("higher_is_better")
    if higher is None:
        higher = _task_attr(_kind(config, summary)[0], "higher_is_better")
    if solved is None and summary.get("solve_threshold") is not None and higher is not None:
        threshold = summary["solve_threshold"]
        solved = value >= threshold if higher else value <= threshold
    try:
        rows = folder.metrics()
    except (OSError, UnicodeDecodeError, ValueError):
        rows = []
    curve = [(r["step"], r[metric]) for r in rows
             if r.get("split") == "val" and isinstance(r.get("step"), int) and isinstance(r.get(metric), (int, float))]
    hidden = summary.get("hidden_size", _dotted(config, "model.hidden_size")[1])
    return Run(
        path=folder.path, name=summary.get("run") or folder.path.name, key=key,
        seed=seed if isinstance(seed, int) else None, value=value,
        solved=None if solved is None else bool(solved), params=summary.get("params"),
        hidden_size=hidden if isinstance(hidden, int) else None, baseline=summary.get("baseline"),
        wall_s=summary.get("wall_s"), curve=curve, config=config,
    )


def _header(by: tuple[str, ...], kind: tuple, summary: dict | None, runs: list[Run]) -> Comparison:
    task, metric = kind
    summary = summary or {}
    higher = summary.get("higher_is_better")
    if higher is None:
        higher = bool(_task_attr(task, "higher_is_better")) if task else False
    baselines = {r.baseline for r in runs if r.baseline is not None}
    common = baselines.pop() if len(baselines) == 1 else None  # several datasets (e.g. --by task.seq_len): per group
    return Comparison(
        by=by, task=task, metric=metric, higher_is_better=bool(higher), baseline=common,
        baselines=summary.get("baselines") or {} if common is not None else {},
        solve_threshold=summary.get("solve_threshold") if common is not None else None,
    )


# -- steps between neighbouring groups -------------------------------------------------------------------


def _steps(comparison: Comparison) -> list[Step]:
    axis, others = comparison.by[0], comparison.by[1:]
    strata: dict[tuple, list[Group]] = {}
    for group in comparison.groups:  # already sorted by every key
        strata.setdefault(tuple(_hashable(group.key[k]) for k in others), []).append(group)
    ordered = sorted(strata.items(), key=lambda item: tuple(_order(v) for v in item[0]))
    steps = []
    for _, groups in ordered:
        groups = sorted(groups, key=lambda g: _order(g.key[axis]))
        steps += [_step(comparison, axis, a, b) for a, b in zip(groups, groups[1:], strict=False)]
    return steps


def _step(comparison: Comparison, axis: str, lower: Group, upper: Group) -> Step:
    mean_a, mean_b = stats.mean(lower.values), stats.mean(upper.values)
    diff = mean_b - mean_a
    welch = stats.welch_interval(lower.values, upper.values)
    ci = (welch.low, welch.high) if welch else None
    relative = diff / abs(mean_a) if mean_a != 0 else None
    improved = diff > 0 if comparison.higher_is_better else diff < 0
    better = None if ci is None or ci[0] <= 0 <= ci[1] else improved
    step = Step(axis, lower, upper, diff, ci, relative, welch.df if welch else None, better, "")
    step.verdict = _verdict(comparison, step)
    return step


def step_label(axis: str, lower: Group, upper: Group) -> str:
    """'3 vs 2 layers', or 'model.type=lstm vs gru'; other --by keys in brackets."""
    a, b = lower.key[axis], upper.key[axis]
    label = f"{b} vs {a} layers" if axis == "model.layers" else f"{axis}={b} vs {a}"
    context = [f"{k}={v}" for k, v in lower.key.items() if k != axis]
    return f"{label} ({', '.join(context)})" if context else label


def _verdict(comparison: Comparison, step: Step) -> str:
    """One line in plain words: the change, its interval, and whether seed noise can explain it."""
    lower, upper = step.lower, step.upper
    label = f"{step_label(step.axis, lower, upper)}: {comparison.metric}"
    at_n = f"n={lower.n}" if lower.n == upper.n else f"n={lower.n} vs {upper.n}"
    notes = []
    if len(set(lower.values + upper.values)) == 1:
        text = f"{label} the same — every run of both groups scored {fmt(lower.values[0])}"
        if lower.n_solved == lower.n and upper.n_solved == upper.n:
            notes.append("all solved: at this ceiling the metric cannot tell the depths apart")
    else:
        text = f"{label} {fmt_signed(step.diff)}"
        if step.relative is not None and abs(step.relative) >= 10:  # +24000% reads worse than ×241
            text += f" (×{1 + step.relative:.3g})" if step.relative > 0 else f" ({step.relative:+.0%})"
        elif step.relative is not None:
            text += f" ({step.relative:+.0%})" if abs(step.relative) >= 0.01 else f" ({step.relative:+.1%})"
        if step.ci95 is None:
            text += " — no interval: a group has n=1, and one seed cannot separate an effect from seed noise"
        else:
            text += f", 95% CI [{fmt(step.ci95[0], 3)}, {fmt(step.ci95[1], 3)}] — "
            if step.better is None:
                text += f"not distinguishable from seed noise at {at_n}"
            else:
                text += f"{'better' if step.better else 'worse'}, beyond seed noise at {at_n}"
    if lower.solved is not None and upper.solved is not None and lower.n_solved / lower.n != upper.n_solved / upper.n:
        note = f"solved {lower.n_solved}/{lower.n} → {upper.n_solved}/{upper.n}"
        if 0 < lower.n_solved < lower.n or 0 < upper.n_solved < upper.n:
            note += " (bimodal across seeds: the mean mixes solved and unsolved runs; read the per-seed values)"
        notes.append(note)
    pa, pb = lower.params(), upper.params()
    if pa and pb and abs(pb["mean"] - pa["mean"]) > EQUAL_PARAMS_TOLERANCE * max(pa["mean"], pb["mean"]):
        notes.append(f"parameters differ: {pa['mean']:,.0f} → {pb['mean']:,.0f} (not an equal-budget comparison)")
    return text + ("; " + "; ".join(notes) if notes else "")


# -- rendering -------------------------------------------------------------------------------------------


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


def header_line(c: Comparison) -> str:
    if not c.groups:
        return f"no completed runs to compare; {len(c.skipped)} run folder(s) skipped"
    direction = "higher" if c.higher_is_better else "lower"
    parts = [f"{c.task}: test {c.metric} ({direction} is better)"]
    if c.baseline is not None:
        parts.append(f"trivial baseline {fmt(c.baseline)}")
    elif c.groups:
        parts.append("baselines differ between groups (see the baseline column)")
    if c.solve_threshold is not None:
        parts.append(f"solved: {c.metric} {'≥' if c.higher_is_better else '≤'} {fmt(c.solve_threshold)}")
    n_runs = sum(g.n for g in c.groups)
    parts.append(f"{n_runs} run(s) in {len(c.groups)} group(s) by {', '.join(c.by)}")
    return "; ".join(parts)


def _rows(c: Comparison, digits: int = 4) -> tuple[list[str], list[list[str]]]:
    """The table every text format shares: one row per group."""
    columns = [*c.by, "n", "mean", "std", "95% CI", "median", "best", "solved", "params", "hidden"]
    if c.baseline is None:
        columns.append("baseline")
    rows = []
    for g in c.groups:
        s = c.group_stats(g)
        params = g.params()
        if params is None:
            params_text = "—"
        elif params["min"] == params["max"]:
            params_text = f"{params['min']:,}"
        else:
            params_text = f"{params['mean']:,.0f} ({params['min']:,}–{params['max']:,})"
        row: list[str] = [
            *(str(g.key[k]) for k in c.by), str(g.n), fmt(s["mean"], digits),
            fmt(s["std"], 3) if s["std"] is not None else "— (n=1)",
            f"[{fmt(s['ci95'][0], 3)}, {fmt(s['ci95'][1], 3)}]" if s["ci95"] else "— (n=1)",
            fmt(s["median"], digits), fmt(s["best"], digits),
            f"{g.n_solved}/{g.n}" if g.n_solved is not None else "?",
            params_text, ", ".join(map(str, g.hidden_sizes())) or "—",
        ]
        if c.baseline is None:
            row.append(fmt(g.baseline()))
        rows.append(row)
    return columns, rows


def _notes(c: Comparison) -> list[str]:
    notes = []
    if any(g.n == 1 for g in c.groups):
        notes.append("n=1 groups have no std or interval: one seed cannot show the spread between seeds.")
    mixed = sorted({k for g in c.groups for k in g.mixed()})
    if mixed:
        advice = (f"add --by {' --by '.join(mixed)} to separate them" if len(mixed) <= 3
                  else "compare those experiments separately, or add --by for the keys that matter")
        notes.append(f"warning: groups pool runs whose configs differ in {', '.join(mixed)}, not only in the seed; "
                     f"{advice}.")
    for g in c.groups:
        if g.repeated_seeds():
            where = ", ".join(f"{k}={v}" for k, v in g.key.items())
            notes.append(f"warning: group {where} holds several runs of seed(s) {g.repeated_seeds()}: repeats of "
                         "one seed are not independent samples, so its spread and interval understate seed noise.")
    return notes


def render(comparison: Comparison, fmt_name: str):
    """A str for markdown, csv and json; a rich renderable for table."""
    if fmt_name == "json":
        return json.dumps(comparison.to_dict(), indent=2, ensure_ascii=False)
    if fmt_name == "csv":
        return render_csv(comparison)
    if fmt_name == "markdown":
        return render_markdown(comparison)
    if fmt_name == "table":
        return render_table(comparison)
    raise UserError(f"--format: unknown format {fmt_name!r}; valid formats: {', '.join(FORMATS)}")


def render_markdown(c: Comparison) -> str:
    columns, rows = _rows(c)
    lines = [f"**{header_line(c)}**", ""]
    if rows:
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "|".join("---" if i < len(c.by) else "---:" for i in range(len(columns))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    if c.steps:
        lines += [f"- {s.verdict}" for s in c.steps] + [""]
    lines += [f"_{n}_" for n in _notes(c)]
    if c.skipped:
        lines += [f"Skipped {len(c.skipped)} run(s):", ""] + [f"- `{s.path}`: {s.reason}" for s in c.skipped]
    return "\n".join(lines).rstrip() + "\n"


def render_csv(c: Comparison) -> str:
    """One row per group, numbers unrounded; steps and skipped runs are in the json format."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*c.by, "n", "mean", "std", "ci95_low", "ci95_high", "median", "best", "solved", "n_solved",
                     "params_mean", "params_min", "params_max", "hidden_size", "baseline", "metric",
                     "higher_is_better"])
    for g in c.groups:
        s = c.group_stats(g)
        params = g.params() or {}
        ci = s["ci95"] or (None, None)
        row = [*(g.key[k] for k in c.by), g.n, s["mean"], s["std"], ci[0], ci[1], s["median"], s["best"],
               g.solved, g.n_solved, params.get("mean"), params.get("min"), params.get("max"),
               " ".join(map(str, g.hidden_sizes())), g.baseline(), c.metric, c.higher_is_better]
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def render_table(c: Comparison):
    from rich import box
    from rich.console import Group as RichGroup
    from rich.table import Table
    from rich.text import Text

    columns, rows = _rows(c, digits=3)
    if all(g.n <= 2 for g in c.groups):  # the median of two values is their mean: give the width to the rest
        drop = columns.index("median")
        columns, rows = columns[:drop] + columns[drop + 1 :], [row[:drop] + row[drop + 1 :] for row in rows]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0))  # one space between columns
    for i, name in enumerate(columns):
        short = name.split(".")[-1] if i < len(c.by) else name  # model.layers -> layers
        table.add_column(short, justify="left" if i < len(c.by) else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    parts: list[Any] = [Text(header_line(c), style="bold")] + ([table] if rows else [])
    parts += [Text(s.verdict) for s in c.steps]
    parts += [Text(n, style="dim") for n in _notes(c)]
    if c.skipped:
        parts.append(Text(f"skipped {len(c.skipped)} run(s):", style="yellow"))
        parts += [Text(f"  {s.path}: {s.reason}") for s in c.skipped]
    return RichGroup(*parts)


def plot(comparison: Comparison, path: str | Path) -> None:
    """Learning curves and final test metrics per group to PATH (PNG, SVG or PDF); needs lstmlab[plot]."""
    from lstmlab.plot import plot_comparison

    plot_comparison(comparison, Path(path))


def _finite(obj: Any) -> Any:
    """JSON has no NaN or Infinity: those become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
