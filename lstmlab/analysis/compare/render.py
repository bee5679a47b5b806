"""A Comparison as text: a rich table, Markdown, CSV or the JSON object whose fields docs/statistics.md lists.

    render(comparison, fmt) -> str | rich renderable
    json_object(comparison) -> dict

The text formats share one table (one row per group) and the same notes; the JSON object carries every
number unrounded, with today's field names kept and new ones added beside them.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from lstmlab.analysis.compare.analysis import Comparison, Group, fmt, run_converged
from lstmlab.errors import UserError

FORMATS = ("table", "markdown", "csv", "json")


def render(comparison: Comparison, fmt_name: str):
    """A str for markdown, csv and json; a rich renderable for table."""
    if fmt_name == "json":
        return json.dumps(json_object(comparison), indent=2, ensure_ascii=False)
    if fmt_name == "csv":
        return render_csv(comparison)
    if fmt_name == "markdown":
        return render_markdown(comparison)
    if fmt_name == "table":
        return render_table(comparison)
    raise UserError(f"--format: unknown format {fmt_name!r}; valid formats: {', '.join(FORMATS)}")


# -- json -------------------------------------------------------------------------------------------------


def json_object(c: Comparison) -> dict[str, Any]:
    """The `compare --format json` object (its fields: docs/statistics.md, "Per group" and "Per step")."""
    groups = []
    for g in c.groups:
        s = g.stats
        groups.append({
            "key": g.key, "n": g.n, "mean": s.mean, "std": s.std, "ci95": s.ci95, "median": s.median,
            "best": s.best, "solved": g.solved, "n_solved": g.n_solved, "params": g.params(),
            "hidden_size": g.hidden_sizes(), "baseline": g.baseline(), "mixed": g.mixed(c.pooled_keys()),
            "tuned": g.tuning.chosen.value if g.tuning else None,
            "grid": g.tuning.grid if g.tuning else None,
            "tuning": [{"value": cand.value, "n": len(cand.runs), "failed": cand.failed, "val_mean": cand.val_mean}
                       for cand in g.tuning.candidates] if g.tuning else None,
            "mean_ci95": s.mean_ci95, "median_ci95": s.median_ci95, "iqm": s.iqm, "iqm_ci95": s.iqm_ci95,
            "solved_ci95": s.solved_ci95, "converged": g.n_converged, "not_converged": g.n_not_converged,
            "runs": [{"run": r.name, "path": str(r.path), "seed": r.seed, "value": r.test, "solved": r.solved,
                      "params": r.params, "wall_s": r.wall_s, "val": r.val, "converged": run_converged(r),
                      "status": r.status}
                     for r in g.runs],
        })
    steps = [{
        "axis": s.axis, "from": s.lower.key, "to": s.upper.key, "diff": s.diff, "ci95": s.ci95,
        "relative": s.relative, "df": s.df, "better": s.better, "verdict": s.verdict,
        "evidence": s.evidence, "test": s.test, "p": s.p, "p_adjusted": s.p_adjusted, "family": s.family,
        "p_solved": s.p_solved, "prob_improvement": s.prob_improvement,
        "prob_improvement_ci95": s.prob_improvement_ci95, "seeds_needed": s.seeds_needed,
        "evidence_asked": c.evidence, "at_step": c.at_step,
        "learned": s.learned, "over_training": [_point(p) for p in s.over_training],
        "over_training_split": "val", "over_training_verdict": s.reading.text if s.reading else None,
        "ordering_changes": s.reading.ordering_changes if s.reading else [],
        "distinguishable_from": s.reading.distinguishable_from if s.reading else None,
    } for s in c.steps]
    return finite({
        "by": list(c.by),
        "metric": {"name": c.metric, "task": c.task, "higher_is_better": c.higher_is_better,
                   "baseline": c.baseline, "baselines": c.baselines, "solve_threshold": c.solve_threshold,
                   "split": c.split},
        "groups": groups,
        "steps": steps,
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in c.skipped],
        "at_step": c.at_step,  # --at-step N, or null: the verdict at the end
        "unfinished_runs": c.unfinished,  # runs compared at --at-step that are still training or interrupted
    })


def _point(p) -> dict[str, Any]:
    """One shared evaluation step of a step's verdict over training."""
    return {"step": p.step, "difference": p.difference, "ci95": p.ci95, "p": p.p, "p_adjusted": p.p_adjusted,
            "family": p.family, "verdict": p.verdict, "n": list(p.n), "mean_from": p.mean_lower,
            "mean_to": p.mean_upper, "sequences": p.sequences, "characters": p.characters}


def finite(obj: Any) -> Any:
    """JSON has no NaN or Infinity: those become null; tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


# -- the shared table ---------------------------------------------------------------------------------------


def header_line(c: Comparison) -> str:
    if not c.groups:
        return f"no completed runs to compare; {len(c.skipped)} run folder(s) skipped"
    direction = "higher" if c.higher_is_better else "lower"
    what = f"test {c.metric}" if c.at_step is None else f"validation {c.metric} at step {c.at_step:,}"
    parts = [f"{c.task}: {what} ({direction} is better)"]
    if c.baseline is not None:
        parts.append(f"trivial baseline {fmt(c.baseline)}")
    elif c.groups:
        parts.append("baselines differ between groups (see the baseline column)")
    if c.solve_threshold is not None:
        parts.append(f"solved: {c.metric} {'≥' if c.higher_is_better else '≤'} {fmt(c.solve_threshold)}")
    n_runs = sum(g.n for g in c.groups)
    parts.append(f"{n_runs} run(s) in {len(c.groups)} group(s) by {', '.join(c.by)}")
    if c.unfinished:
        parts.append(f"{c.unfinished} of them still training or interrupted (read where they stood at that step)")
    if c.tune:
        parts.append(f"{', '.join(c.tune)} tuned per group on validation {c.metric}")
    if c.evidence != "auto":
        parts.append(f"verdicts rest on {'the means' if c.evidence == 'means' else 'the solve rates'} (--evidence)")
    return "; ".join(parts)


def _tuned_text(group: Group, key: str) -> str:
    edges = {k for k, _, _ in group.tuning.edges()}
    return fmt_value(group.tuning.chosen.value[key]) + (" (edge)" if key in edges else "")


def fmt_value(value: Any) -> str:
    return fmt(value) if isinstance(value, float) else str(value)


def _interval(ci: tuple[float, float] | None, digits: int = 3) -> str:
    return f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]" if ci else "— (n=1)"


def _rows(c: Comparison, digits: int = 4) -> tuple[list[str], list[list[str]]]:
    """The table every text format shares: one row per group."""
    solve_counts = any(g.n_solved is not None for g in c.groups)  # none: no threshold (an arrays task unless set)
    convergence = any(g.n_converged is not None for g in c.groups)
    columns = [*c.by, *(f"{k} (tuned)" for k in c.tune), "n", "mean", "std", "95% CI", "IQM", "median", "best",
               *(["solved"] if solve_counts else []), *(["converged"] if convergence else []), "params", "hidden"]
    if c.baseline is None:
        columns.append("baseline")
    rows = []
    for g in c.groups:
        s = g.stats
        params = g.params()
        if params is None:
            params_text = "—"
        elif params["min"] == params["max"]:
            params_text = f"{params['min']:,}"
        else:
            params_text = f"{params['mean']:,.0f} ({params['min']:,}–{params['max']:,})"
        solved = "?"
        if g.n_solved is not None:
            low, high = s.solved_ci95
            solved = f"{g.n_solved}/{g.n} ({low:.0%}–{high:.0%})"
        row: list[str] = [
            *(str(g.key[k]) for k in c.by), *(_tuned_text(g, k) for k in c.tune), str(g.n), fmt(s.mean, digits),
            fmt(s.std, 3) if s.std is not None else "— (n=1)", _interval(s.mean_ci95), fmt(s.iqm, digits),
            fmt(s.median, digits), fmt(s.best, digits), *([solved] if solve_counts else []),
            *([_converged_text(g)] if convergence else []), params_text,
            ", ".join(map(str, g.hidden_sizes())) or "—",
        ]
        if c.baseline is None:
            row.append(fmt(g.baseline()))
        rows.append(row)
    return columns, rows


def _converged_text(group: Group) -> str:
    """'2/3': runs converged of those whose convergence is known; '?' when none is."""
    if group.n_converged is None:
        return "?"
    known = group.n_converged + group.n_not_converged
    return f"{group.n_converged}/{known}" + ("" if known == group.n else f" (of {group.n})")


def _over_training_lines(c: Comparison) -> list[str]:
    return [s.reading.text for s in c.steps if s.reading is not None]


def _notes(c: Comparison, iqm_shown: bool = True) -> list[str]:
    notes = []
    if c.groups:
        parts = ["95% CI: percentile bootstrap of the mean (inside the metric's range; at n < 10 narrower than it "
                 "should be)"]
        if iqm_shown:
            parts.append("IQM: mean of the middle half")
        if any(g.n_solved is not None for g in c.groups):
            parts.append("solved: count and its exact 95% interval")
        if any(g.n_converged is not None for g in c.groups):
            parts.append("converged: runs whose validation curve had flattened by the end (docs/statistics.md)")
        notes.append("; ".join(parts) + ".")
        if c.steps:
            notes.append("over training: the same step read on the validation split at every evaluation all its runs "
                         "share (Welch, Holm over the steps at each evaluation).")
    if any(g.n == 1 for g in c.groups):
        notes.append("n=1 groups have no std or interval: one seed cannot show the spread between seeds.")
    notes += _tuning_notes(c)
    warning = comparison_warning(c)
    if warning:
        notes.append(warning)
    for g in c.groups:
        if g.repeated_seeds():
            notes.append(f"warning: group {_where(g)} holds several runs of seed(s) {g.repeated_seeds()}: repeats of "
                         "one seed are not independent samples, so its spread and interval understate seed noise.")
    return notes


def pooling_warning(mixed: list[str], by: tuple[str, ...] = (), tune: tuple[str, ...] = ()) -> str | None:
    """The warning for groups that pool runs whose configs differ in the keys `mixed` (mixed_keys), or None:
    compare's, given the same way by every command that groups runs (inspect, export tensorboard). The advice
    is a set of flags that works as written: the grouping in use (`by`, `tune`) and the mixed keys."""
    if not mixed:
        return None
    flags = " ".join([*(f"--by {k}" for k in (*by, *mixed)), *(f"--tune {k}" for k in tune)])
    advice = (f"use {flags} to separate them" if len(mixed) <= 3
              else "compare those experiments separately, or add --by for the keys that matter")
    return f"warning: groups pool runs whose configs differ in {', '.join(mixed)}, not only in the seed; {advice}."


def comparison_warning(c: Comparison) -> str | None:
    """pooling_warning for a Comparison's groups (the exports group runs through compare)."""
    return pooling_warning(sorted({k for g in c.groups for k in g.mixed(c.pooled_keys())}), c.by, c.tune)


def _where(group: Group) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.key.items())


def _tuning_notes(c: Comparison) -> list[str]:
    """Per group: the chosen value, the grid with each value's mean validation metric; warnings at the edges."""
    notes, warnings = [], []
    for g in c.groups:
        if g.tuning is None:
            continue
        t = g.tuning
        chosen = ", ".join(f"{k}={fmt_value(v)}" for k, v in t.chosen.value.items())
        scores = []
        for cand in t.candidates:
            point = ", ".join(fmt_value(v) for v in cand.value.values())
            score = fmt(cand.val_mean, 3) if cand.val_mean is not None else "—"
            failed = f", {cand.failed} failed" if cand.failed else ""
            scores.append(f"{point}: {score} (n={len(cand.runs)}{failed})")
        notes.append(f"tuned {_where(g)}: {chosen} chosen by mean validation {c.metric} — {'; '.join(scores)}")
        for key, value, side in t.edges():
            warnings.append(f"warning: {_where(g)}: {key}={fmt_value(value)} is the {side} value tried; the best "
                            "may lie beyond it: tune wider.")
        for key in t.single_valued():
            warnings.append(f"warning: {_where(g)}: {key} takes one value here; nothing was tuned.")
    return notes + warnings


# -- the formats -------------------------------------------------------------------------------------------


def render_markdown(c: Comparison) -> str:
    columns, rows = _rows(c)
    keys = len(c.by) + len(c.tune)
    lines = [f"**{header_line(c)}**", ""]
    if rows:
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "|".join("---" if i < keys else "---:" for i in range(len(columns))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    if c.steps:
        lines += [f"- {s.verdict}" for s in c.steps] + [""]
        lines += [f"- {t}" for t in _over_training_lines(c)] + [""]
    lines += [f"_{n}_" for n in _notes(c)]
    if c.skipped:
        lines += ["", f"Skipped {len(c.skipped)} run(s):", ""] + [f"- `{s.path}`: {s.reason}" for s in c.skipped]
    return "\n".join(lines).rstrip() + "\n"


CSV_COLUMNS = ["n", "mean", "std", "ci95_low", "ci95_high", "median", "best", "solved", "n_solved", "params_mean",
               "params_min", "params_max", "hidden_size", "baseline", "metric", "higher_is_better",
               "mean_ci95_low", "mean_ci95_high", "median_ci95_low", "median_ci95_high", "iqm", "iqm_ci95_low",
               "iqm_ci95_high", "solved_ci95_low", "solved_ci95_high", "converged", "not_converged"]


def render_csv(c: Comparison) -> str:
    """One row per group, numbers unrounded; steps and skipped runs are in the json format."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*c.by, *c.tune, *CSV_COLUMNS])
    none = (None, None)
    for g in c.groups:
        s = g.stats
        params = g.params() or {}
        row = [*(g.key[k] for k in c.by), *(g.tuning.chosen.value[k] for k in c.tune), g.n, s.mean, s.std,
               *(s.ci95 or none), s.median, s.best, g.solved, g.n_solved, params.get("mean"), params.get("min"),
               params.get("max"), " ".join(map(str, g.hidden_sizes())), g.baseline(), c.metric, c.higher_is_better,
               *(s.mean_ci95 or none), *(s.median_ci95 or none), s.iqm, *(s.iqm_ci95 or none),
               *(s.solved_ci95 or none), g.n_converged, g.n_not_converged]
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def render_table(c: Comparison):
    from rich import box
    from rich.console import Group as RichGroup
    from rich.table import Table
    from rich.text import Text

    columns, rows = _rows(c, digits=3)
    iqm_shown = not all(g.n <= 2 for g in c.groups)
    if not iqm_shown:  # the median and IQM of two values are their mean: give the width to the rest
        keep = [i for i, name in enumerate(columns) if name not in ("median", "IQM")]
        columns, rows = [columns[i] for i in keep], [[row[i] for i in keep] for row in rows]
    keys = len(c.by) + len(c.tune)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0))  # one space between columns
    for i, name in enumerate(columns):
        short = name.split(".")[-1] if i < keys else name  # model.layers -> layers, train.lr (tuned) -> lr (tuned)
        table.add_column(short, justify="left" if i < keys else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    parts: list[Any] = [Text(header_line(c), style="bold")] + ([table] if rows else [])
    parts += [Text(s.verdict) for s in c.steps]
    parts += [Text(t) for t in _over_training_lines(c)]
    parts += [Text(n, style="yellow" if n.startswith("warning") else "dim") for n in _notes(c, iqm_shown)]
    if c.skipped:
        parts.append(Text(f"skipped {len(c.skipped)} run(s):", style="yellow"))
        parts += [Text(f"  {s.path}: {s.reason}") for s in c.skipped]
    return RichGroup(*parts)
