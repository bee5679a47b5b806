"""The verdict at each budget as one Markdown table: `lstmlab compare --at-step N` for every N given, each row
tuned at its own budget when --tune is given (docs/depth-map.md uses it). It only lays compare's results out.

    python benchmarks/budget_table.py runs/positive-charlm --tune train.lr --steps 250,500,1000,2000,4000,8000

Per row: each group's mean of its runs' best validation metric up to step N (n, and the tuned value, "edge" at
either end of the values trained by then), each step's call (better / worse / n.d., Holm-adjusted p,
P(deeper beats shallower)), runs converged per group (judged on the curve up to N; None: too few
evaluations), and how many of the runs compared were still training or interrupted.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--steps", required=True, help="comma-separated evaluation steps")
    parser.add_argument("--by", action="append", default=[])
    parser.add_argument("--tune", action="append", default=[])
    args = parser.parse_args()

    readings: list[tuple[int, Comparison]] = []
    for n in (int(s) for s in args.steps.split(",")):
        readings.append(
            (n, compare_runs(args.paths, by=tuple(args.by or ["model.layers"]), tune_keys=tuple(args.tune), at_step=n))
        )
    widest = max((c for _, c in readings), key=lambda c: len(c.groups))  # a group may lack the late steps
    groups = [name(g.key) for g in widest.groups]
    steps = [f"{s.upper.key[s.axis]} vs {s.lower.key[s.axis]}" for s in widest.steps]
    print("| step | " + " | ".join(groups + steps) + " | converged | unfinished |")
    print("|---|" + "---|" * (len(groups) + len(steps) + 2))
    for n, c in readings:
        by_group = {name(g.key): group_cell(g) for g in c.groups}
        by_step = {f"{s.upper.key[s.axis]} vs {s.lower.key[s.axis]}": step_cell(s) for s in c.steps}
        cells = [by_group.get(g, "—") for g in groups] + [by_step.get(s, "—") for s in steps]
        converged = "/".join(str(g.n_converged) for g in c.groups)
        print(f"| {n:,} | " + " | ".join(cells) + f" | {converged} | {c.unfinished} |")


if __name__ == "__main__":
    main()
