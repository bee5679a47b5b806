"""A comparison as a picture: validation curves per group, and every seed's final test metric.
(`plot_over_training`, at the end: each step's difference at every shared evaluation, for --plot-over-training.)

    left   validation metric vs step: the mean over a group's seeds, its min–max band across seeds
    right  test metric per group: one dot per seed; the mean ◆ with its bootstrap 95% interval (thick, inside
           the metric's range) and the t-interval (thin); an interval that leaves the axis is cut at the
           axis and marked there with ▲ or ▼
    both   the task's trivial baseline (dashed) and its solve threshold (dotted), or a note when either is far
           off the data

With several --by keys, colours tell the other keys apart (one hue each) and shades the first key's
values; the right panel groups the first key's values under a label per value of the others, so no
label overlaps another. The title says what is compared.

matplotlib comes from the [plot] extra and is imported only here, when a plot is asked for. The figure
is drawn without pyplot (no display, no global state); the file suffix picks PNG, SVG or PDF.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lstmlab.errors import UserError

if TYPE_CHECKING:
    from lstmlab.analysis.compare import Comparison, Group

SUFFIXES = (".png", ".svg", ".pdf")
HUES = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")  # one colour map per value of the other --by keys


def check_plot_path(path: str | Path) -> None:
    """Refuse an unknown suffix, and say what to install without matplotlib, before any work is done (compare's
    and inspect's --plot)."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise UserError(f"--plot {path}: unknown image type {path.suffix!r}; valid suffixes: {', '.join(SUFFIXES)}")
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise UserError("--plot needs matplotlib: install lstmlab[plot] (pip install 'lstmlab[plot]')") from None


def plot_comparison(comparison: Comparison, path: Path):
    """Draw the comparison to PATH (PNG, SVG or PDF); returns the matplotlib Figure."""
    path = Path(path)
    check_plot_path(path)
    if not comparison.groups:
        raise UserError(f"--plot {path}: no completed runs to plot")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 5), layout="constrained")
    curves, finals = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    groups = plot_order(comparison)
    colors = group_colors(comparison, groups)
    metric = comparison.metric or "metric"
    log_scale = _wants_log_scale(comparison)

    for group, color in zip(groups, colors, strict=True):
        steps, mean, low, high = _curve_band(group)
        if steps:
            curves.plot(steps, mean, color=color, marker="o" if len(steps) < 15 else None, markersize=3,
                        label=f"{label(comparison, group)} (n={group.n})")
            curves.fill_between(steps, low, high, color=color, alpha=0.18, linewidth=0)
    curves.set_xlabel("step")
    curves.set_ylabel(f"validation {metric}")
    curves.set_title("validation: mean over seeds, band = min–max", fontsize="medium")

    xs = positions(comparison, groups)
    for x, group, color in zip(xs, groups, colors, strict=True):
        values = group.values
        offsets = [(i - (len(values) - 1) / 2) * min(0.06, 0.5 / len(values)) for i in range(len(values))]
        finals.scatter([x + o for o in offsets], values, color=color, alpha=0.6, s=18, zorder=3)
    direction = "higher" if comparison.higher_is_better else "lower"
    finals.set_ylabel(f"test {metric} ({direction} is better)")
    finals.set_title("test: dots = seeds, ◆ = mean with 95% CI: bootstrap (thick),\nt-interval (thin), "
                     "▲▼ where it leaves the axis", fontsize="medium")
    _axis_labels(comparison, finals, groups, xs)

    for axes in (curves, finals):
        if log_scale:
            axes.set_yscale("log")
        _reference_lines(comparison, axes, log_scale)
        axes.grid(alpha=0.3)
    finals.set_ylim(*_limits(comparison, finals, log_scale))
    for x, group, color in zip(xs, groups, colors, strict=True):
        _mean_with_intervals(finals, x + 0.25, group, color)

    handles, labels = curves.get_legend_handles_labels()
    if not labels:  # no run had a curve to draw (compare names the files it could not read)
        pass
    elif len(comparison.groups) <= 4:
        curves.legend(fontsize="small", loc="best")
    else:
        figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize="small")
    figure.suptitle(title(comparison))
    return save(figure, path, "--plot")


def save(figure, path: Path, flag: str):
    """Write the figure to `path` (its folder made if missing); UserError naming the flag when it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write the file: {e.strerror or e}") from None
    return figure


def title(comparison: Comparison) -> str:
    axis, others = comparison.by[0], comparison.by[1:]
    what = f"test {comparison.metric} by {axis}"
    if others:
        what += f", within each {' and '.join(others)}"
    if comparison.tune:
        what += f" ({', '.join(comparison.tune)} tuned per group)"
    question = "does depth help? " if axis == "model.layers" else ""
    return f"{comparison.task}: {question}{what}"


def label(comparison: Comparison, group: Group) -> str:
    """'2 layers', 'type=gru', or '2 layers, type=gru' with several --by keys."""
    return ", ".join(_value_text(k, group.key[k]) for k in comparison.by)


def _value_text(key: str, value) -> str:
    if key == "model.layers":
        return f"{value} layer{'s' if value != 1 else ''}"
    return f"{key.split('.')[-1]}={value}"


def _stratum(comparison: Comparison, group: Group) -> tuple:
    return tuple(str(group.key[k]) for k in comparison.by[1:])


def plot_order(comparison: Comparison) -> list[Group]:
    """Groups by the values of the other --by keys first, then along the first key: each stratum side by side."""
    from lstmlab.analysis.compare.read import order

    axis, others = comparison.by[0], comparison.by[1:]
    return sorted(comparison.groups, key=lambda g: (tuple(order(g.key[k]) for k in others), order(g.key[axis])))


def positions(comparison: Comparison, groups: list[Group]) -> list[float]:
    """x of each group (in plot order): consecutive along the first key, a gap between strata."""
    xs, x, previous = [], 0.0, None
    for group in groups:
        stratum = _stratum(comparison, group)
        if previous is not None:
            x += 1.0 if stratum == previous else 1.8
        xs.append(x)
        previous = stratum
    return xs


def group_colors(comparison: Comparison, groups: list[Group]) -> list:
    """One colour per group: with one --by key matplotlib's cycle; with more, a hue per value of the other keys
    and a shade per value of the first (darker = later)."""
    if len(comparison.by) == 1:
        return [f"C{i % 10}" for i in range(len(groups))]
    from matplotlib import colormaps

    strata: dict[tuple, list[int]] = {}
    for i, group in enumerate(groups):
        strata.setdefault(_stratum(comparison, group), []).append(i)
    colors: list = [None] * len(groups)
    for s, members in enumerate(strata.values()):
        cmap = colormaps[HUES[s % len(HUES)]]
        for j, i in enumerate(members):
            colors[i] = cmap(0.45 + 0.45 * (j / max(len(members) - 1, 1)))
    return colors


def _axis_labels(comparison: Comparison, axes, groups: list[Group], xs: list[float]) -> None:
    axis = comparison.by[0]
    wordy = axis == "model.layers" and len(groups) <= 6  # '2 layers' while there is room, else '2'
    axes.set_xticks(xs, [_value_text(axis, g.key[axis]) if wordy else str(g.key[axis]) for g in groups])
    axes.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    if len(comparison.by) == 1:
        axes.set_xlabel("" if wordy else axis)
        return
    centres: dict[tuple, list[float]] = {}
    for x, group in zip(xs, groups, strict=True):
        centres.setdefault(_stratum(comparison, group), []).append(x)
    names = [", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(comparison.by[1:], s, strict=True)) for s in centres]
    nested = axes.secondary_xaxis("bottom")
    nested.set_xticks([sum(c) / len(c) for c in centres.values()], names)
    nested.tick_params(length=0, pad=16)
    nested.set_xlabel(f"{axis} within {' and '.join(comparison.by[1:])}")
    for gap in [(a + b) / 2 for a, b in zip(xs, xs[1:], strict=False) if b - a > 1.0]:
        axes.axvline(gap, color="0.8", linewidth=0.8)


def _mean_with_intervals(axes, x: float, group: Group, color) -> None:
    s = group.stats
    axes.plot([x], [s.mean], "D", color=color, markersize=5, zorder=5, markeredgecolor="black", markeredgewidth=0.5)
    low, high = axes.get_ylim()
    for interval, width, dx in ((s.mean_ci95, 3.0, 0.0), (s.ci95, 1.0, 0.09)):
        if interval is None:
            continue
        shown_low, shown_high, cut_low, cut_high = clip_to_axis(interval, (low, high))
        if shown_low is None:
            continue
        axes.plot([x + dx, x + dx], [shown_low, shown_high], color=color, linewidth=width, zorder=4,
                  solid_capstyle="butt")
        if cut_low:
            axes.plot([x + dx], [low], "v", color=color, markersize=6, zorder=6, clip_on=False)
        if cut_high:
            axes.plot([x + dx], [high], "^", color=color, markersize=6, zorder=6, clip_on=False)


def clip_to_axis(interval: tuple[float, float], limits: tuple[float, float]
                 ) -> tuple[float | None, float | None, bool, bool]:
    """(shown low, shown high, cut below, cut above): the part of `interval` inside `limits`, and which ends
    were cut. Shown ends are None when the interval lies wholly outside (it is then marked at the edge it
    passes, not drawn)."""
    low, high = interval
    bottom, top = limits
    cut_low, cut_high = low < bottom, high > top
    if high < bottom or low > top:
        return None, None, low < bottom, high > top
    return max(low, bottom), min(high, top), cut_low, cut_high


def _limits(comparison: Comparison, axes, log_scale: bool) -> tuple[float, float]:
    """The seeds' values (and a reference line near them), with a margin; intervals do not widen the axis."""
    values = [v for g in comparison.groups for v in g.values]
    values += [v for v in (comparison.baseline, comparison.solve_threshold) if v is not None
               and (log_scale or _near_data(comparison, v))]
    low, high = min(values), max(values)
    if log_scale:
        return low / 1.6, high * 1.6
    span = (high - low) or max(abs(high), 1e-12)
    return low - 0.08 * span, high + 0.08 * span


def _reference_lines(comparison: Comparison, axes, log_scale: bool) -> None:
    """The trivial baseline (dashed) and the solve threshold (dotted); a note instead where one is far off."""
    notes = []
    sign = "≥" if comparison.higher_is_better else "≤"
    lines = ((comparison.baseline, "trivial baseline", {"color": "0.4", "linestyle": "--"}),
             (comparison.solve_threshold, f"solved {sign} threshold", {"color": "tab:green", "linestyle": ":"}))
    for value, name, style in lines:
        if value is None:
            continue
        if log_scale or _near_data(comparison, value):
            axes.axhline(value, linewidth=1.2, label=f"{name} {value:.3g}", **style)
        else:  # far from every run: drawing it would flatten the data to a line
            notes.append(f"{name} {value:.3g} (off the axis)")
    if notes:
        axes.text(0.99, 0.98, "\n".join(notes), ha="right", va="top", transform=axes.transAxes, fontsize="small",
                  color="0.4")


def _curve_band(group: Group) -> tuple[list[int], list[float], list[float], list[float]]:
    """Mean, min and max across seeds at the steps every seed evaluated."""
    by_step: dict[int, list[float]] = {}
    for run in group.runs:
        for step, value in run.curve:
            by_step.setdefault(step, []).append(value)
    steps = sorted(s for s, values in by_step.items() if len(values) == group.n)
    return (steps, [sum(by_step[s]) / group.n for s in steps], [min(by_step[s]) for s in steps],
            [max(by_step[s]) for s in steps])


def _all_values(comparison: Comparison) -> list[float]:
    return [v for g in comparison.groups for r in g.runs for v in [r.test, *(c for _, c in r.curve)]]


def _near_data(comparison: Comparison, value: float) -> bool:
    """Within two data spans of the runs' values: close enough to share a linear axis with them."""
    values = _all_values(comparison)
    low, high = min(values), max(values)
    span = max(high - low, 1e-12)
    return low - 2 * span <= value <= high + 2 * span


def _wants_log_scale(comparison: Comparison) -> bool:
    """Losses spanning more than 1.5 decades with the baseline (a solved run far below it) read better on a log axis."""
    values = _all_values(comparison)
    if comparison.baseline is not None:
        values.append(comparison.baseline)
    if comparison.higher_is_better or not values or min(values) <= 0:
        return False
    return max(values) / min(values) > 30


# -- the verdict over training ------------------------------------------------------------------------------


def plot_over_training(comparison: Comparison, path: Path):
    """Each step's difference of validation means (deeper − shallower) with its Welch 95% interval, at every
    evaluation its runs share: against training steps (left) and against sequences seen (right; time steps
    seen when every run shares task.seq_len). Filled markers: beyond seed noise there (Holm over the steps at
    that evaluation). Returns the matplotlib Figure."""
    path = Path(path)
    check_plot_path(path)
    steps = [s for s in comparison.steps if s.over_training]
    if not steps:
        raise UserError(f"--plot-over-training {path}: no step with an evaluation shared by all its runs "
                        "(it needs two groups whose runs logged validation rows at the same steps)")
    from matplotlib.figure import Figure

    from lstmlab.analysis.compare.analysis import step_label

    figure = Figure(figsize=(12, 5), layout="constrained")
    by_step, by_seen = figure.subplots(1, 2, sharey=True)
    metric = comparison.metric or "metric"
    seen_kind = "characters" if all(p.characters for s in steps for p in s.over_training) else "sequences"
    for i, step in enumerate(steps):
        color = f"C{i % 10}"
        points = step.over_training
        seen = [getattr(p, seen_kind) for p in points]
        for axes, xs in ((by_step, [p.step for p in points]), (by_seen, seen)):
            if any(x is None for x in xs):
                continue
            axes.plot(xs, [p.difference for p in points], color=color, label=step_label(step.axis, step.lower,
                                                                                        step.upper))
            with_ci = [(x, p) for x, p in zip(xs, points, strict=True) if p.ci95 is not None]
            if with_ci:
                axes.fill_between([x for x, _ in with_ci], [p.ci95[0] for _, p in with_ci],
                                  [p.ci95[1] for _, p in with_ci], color=color, alpha=0.18, linewidth=0)
            clear = [(x, p.difference) for x, p in zip(xs, points, strict=True) if p.verdict in ("better", "worse")]
            unclear = [(x, p.difference) for x, p in zip(xs, points, strict=True)
                       if p.verdict not in ("better", "worse")]
            for marks, face in ((clear, color), (unclear, "white")):
                if marks:
                    axes.scatter(*zip(*marks, strict=True), color=color, facecolor=face, s=22, zorder=3)
    direction = "higher" if comparison.higher_is_better else "lower"
    order = "deeper − shallower" if comparison.by[0] == "model.layers" else f"next − previous {comparison.by[0]}"
    by_step.set_ylabel(f"mean validation {metric}: {order} ({direction} is better)")
    by_step.set_xlabel("training step")
    by_seen.set_xlabel(f"{'time steps (batch × seq_len × step)' if seen_kind == 'characters' else 'sequences'} seen")
    if not by_seen.lines:
        by_seen.text(0.5, 0.5, "batch size differs between groups or is unknown:\nno common axis of data seen",
                     ha="center", va="center", transform=by_seen.transAxes, color="0.4")
    for axes in (by_step, by_seen):
        axes.axhline(0.0, color="0.3", linewidth=0.8)
        axes.grid(alpha=0.3)
    by_step.legend(fontsize="small")
    figure.suptitle(f"{comparison.task}: {comparison.by[0]} steps over training — difference of validation means "
                    "with Welch 95% interval; filled = beyond seed noise (Holm over the steps at each evaluation)",
                    fontsize="medium")
    return save(figure, path, "--plot-over-training")
