"""A comparison as a picture: validation curves per group, and every seed's final test metric.

    left   validation metric vs step: the mean over a group's seeds, its min–max band across seeds
    right  test metric per group: one dot per seed, the mean with its 95% t-interval
    both   the task's trivial baseline as a dashed line

matplotlib comes from the [plot] extra and is imported only here, when a plot is asked for. The figure
is drawn without pyplot (no display, no global state); the file suffix picks PNG, SVG or PDF.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lstmlab.errors import UserError

if TYPE_CHECKING:
    from lstmlab.compare import Comparison, Group

SUFFIXES = (".png", ".svg", ".pdf")


def plot_comparison(comparison: Comparison, path: Path) -> None:
    if path.suffix.lower() not in SUFFIXES:
        raise UserError(f"--plot {path}: unknown image type {path.suffix!r}; valid suffixes: {', '.join(SUFFIXES)}")
    if not comparison.groups:
        raise UserError(f"--plot {path}: no completed runs to plot")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("--plot needs matplotlib: install lstmlab[plot] (pip install 'lstmlab[plot]')") from None

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    curves, finals = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    colors = [f"C{i % 10}" for i in range(len(comparison.groups))]
    metric = comparison.metric or "metric"
    log_scale = _wants_log_scale(comparison)

    for group, color in zip(comparison.groups, colors, strict=True):
        steps, mean, low, high = _curve_band(group)
        if steps:
            curves.plot(steps, mean, color=color, marker="o" if len(steps) < 15 else None, markersize=3,
                        label=f"{label(comparison, group)} (n={group.n})")
            curves.fill_between(steps, low, high, color=color, alpha=0.18, linewidth=0)
    curves.set_xlabel("step")
    curves.set_ylabel(f"validation {metric}")
    curves.set_title("validation curves: mean over seeds, band = min–max")

    xs = range(len(comparison.groups))
    for x, group, color in zip(xs, comparison.groups, colors, strict=True):
        values = group.values
        offsets = [(i - (len(values) - 1) / 2) * 0.06 for i in range(len(values))]
        finals.scatter([x + o for o in offsets], values, color=color, alpha=0.6, s=22, zorder=3)
        s = comparison.group_stats(group)
        if s["ci95"]:
            finals.errorbar([x + 0.22], [s["mean"]], yerr=[[s["mean"] - s["ci95"][0]], [s["ci95"][1] - s["mean"]]],
                            fmt="D", color=color, capsize=4, markersize=5, zorder=4)
        else:
            finals.plot([x + 0.22], [s["mean"]], "D", color=color, markersize=5, zorder=4)
    finals.set_xticks(list(xs), [label(comparison, g) for g in comparison.groups])
    finals.set_xlim(-0.5, len(comparison.groups) - 0.5)
    direction = "higher" if comparison.higher_is_better else "lower"
    finals.set_ylabel(f"test {metric} ({direction} is better)")
    finals.set_title("test: dots = seeds, ◆ = mean with 95% CI")

    baseline_shown = comparison.baseline is not None and (log_scale or _near_data(comparison, comparison.baseline))
    for axes in (curves, finals):
        if baseline_shown:
            axes.axhline(comparison.baseline, color="0.4", linestyle="--", linewidth=1, label="trivial baseline")
        elif comparison.baseline is not None:  # far from every run: drawing it would flatten the data to a line
            axes.text(0.99, 0.98, f"trivial baseline {comparison.baseline:.3g} (off the axis)", ha="right", va="top",
                      transform=axes.transAxes, fontsize="small", color="0.4")
        if log_scale:
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
    curves.legend(fontsize="small")
    figure.suptitle(f"{comparison.task}: does depth help? ({', '.join(comparison.by)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def label(comparison: Comparison, group: Group) -> str:
    if comparison.by == ("model.layers",):
        return f"{group.key['model.layers']} layer{'s' if group.key['model.layers'] != 1 else ''}"
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in group.key.items())


def _curve_band(group: Group) -> tuple[list[int], list[float], list[float], list[float]]:
    """Mean, min and max across seeds at the steps every seed evaluated."""
    by_step: dict[int, list[float]] = {}
    for run in group.runs:
        for step, value in run.curve:
            by_step.setdefault(step, []).append(value)
    steps = sorted(s for s, values in by_step.items() if len(values) == group.n)
    return (steps, [sum(by_step[s]) / group.n for s in steps], [min(by_step[s]) for s in steps],
            [max(by_step[s]) for s in steps])


def _near_data(comparison: Comparison, value: float) -> bool:
    """Within two data spans of the runs' values: close enough to share a linear axis with them."""
    values = [v for g in comparison.groups for r in g.runs for v in [r.value, *(c for _, c in r.curve)]]
    low, high = min(values), max(values)
    span = max(high - low, 1e-12)
    return low - 2 * span <= value <= high + 2 * span


def _wants_log_scale(comparison: Comparison) -> bool:
    """Losses spanning more than 1.5 decades with the baseline (a solved run far below it) read better on a log axis."""
    values = [v for g in comparison.groups for r in g.runs for v in [r.value, *(c for _, c in r.curve)]]
    if comparison.baseline is not None:
        values.append(comparison.baseline)
    if comparison.higher_is_better or not values or min(values) <= 0:
        return False
    return max(values) / min(values) > 30
