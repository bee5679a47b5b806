"""The verdict at each budget as one Markdown table: `lstmlab compare --at-step N` for every N given, each row
tuned at its own budget when --tune is given (docs/depth-map.md uses it). It only lays compare's results out.

    python benchmarks/budget_table.py runs/positive-charlm --tune train.lr --steps 250,500,1000,2000,4000,8000
    python benchmarks/budget_table.py runs/depthmap-charlm --by model.layers --by task.n_train --steps ... --calls-only

Per row: each group's mean of its runs' best validation metric up to step N (n, and the tuned value, "edge" at
either end of the values trained by then), each step's call (better / worse / n.d., Holm-adjusted p,
P(deeper beats shallower)), runs converged per group (judged on the curve up to N; None: too few
evaluations), and how many of the runs compared were still training or interrupted. With several --by keys
each step is taken along the first within each value of the others (a column per value); --calls-only keeps
the step columns alone: the depth map's layout, one row per budget.
"""

from __future__ import annotations

import argparse

from lstmlab.analysis.compare import compare_runs
from lstmlab.analysis.compare.analysis import Comparison


def group_cell(group) -> str:
    tuned = ""
    if group.tuning:
        edge = " edge" if group.tuning.edges() else ""
        tuned = ", " + ", ".join(f"{k.split('.')[-1]} {v}" for k, v in group.tuning.chosen.value.items()) + edge
    return f"{group.stats.mean:.4f} ({group.n}{tuned})"


def step_cell(step) -> str:
    call = {True: "**better**", False: "**worse**"}.get(step.better, "n.d.")
    parts = [
        f"{step.relative:+.1%}" if step.relative is not None else "",
        f"Holm p = {step.p_adjusted:.2g}" if step.p_adjusted is not None else "no test",
    ]
    if step.prob_improvement is not None:
        parts.append(f"P = {step.prob_improvement:.2f}")
    return f"{call} ({', '.join(p for p in parts if p)})"


def name(key: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]} {v}" for k, v in key.items())


def step_name(step) -> str:
    """"2 vs 1", and the other --by keys' values where there are any ("2 vs 1, n_train 500")."""
    others = {k: v for k, v in step.upper.key.items() if k != step.axis}
    return f"{step.upper.key[step.axis]} vs {step.lower.key[step.axis]}" + (f", {name(others)}" if others else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--steps", required=True, help="comma-separated evaluation steps")
    parser.add_argument("--by", action="append", default=[])
    parser.add_argument("--tune", action="append", default=[])
    parser.add_argument("--calls-only", action="store_true", help="the step columns alone")
    parser.add_argument("--evidence", default="auto", help="as compare's --evidence: auto | means | solve-rate")
    args = parser.parse_args()

    readings: list[tuple[int, Comparison]] = []
    for n in (int(s) for s in args.steps.split(",")):
        readings.append(
            (n, compare_runs(args.paths, by=tuple(args.by or ["model.layers"]), tune_keys=tuple(args.tune), at_step=n,
                         evidence=args.evidence))
        )
    widest = max((c for _, c in readings), key=lambda c: len(c.groups))  # a group may lack the late steps
    groups = [] if args.calls_only else [name(g.key) for g in widest.groups]
    steps = [step_name(s) for s in widest.steps]
    tail = [] if args.calls_only else ["converged", "unfinished"]
    print("| step | " + " | ".join(groups + steps + tail) + " |")
    print("|---|" + "---|" * (len(groups) + len(steps) + len(tail)))
    for n, c in readings:
        by_group = {name(g.key): group_cell(g) for g in c.groups}
        by_step = {step_name(s): step_cell(s) for s in c.steps}
        cells = [by_group.get(g, "—") for g in groups] + [by_step.get(s, "—") for s in steps]
        if not args.calls_only:
            cells += ["/".join(str(g.n_converged) for g in c.groups), str(c.unfinished)]
        print(f"| {n:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
