"""Compare a packed study's run folders with the same study trained one run at a time, row by row.

    python benchmarks/packed_vs_alone.py RUNS_PACKED RUNS_ALONE

Both are --runs-dir folders of one study (RUNS/<experiment>/<run>/). For every run it prints the largest
relative difference of metrics.csv's numbers (loss and metrics; not the clock) at the first evaluation and over
all rows, and the two test metrics. In float64 a member equals its run alone (tests/test_pack_training.py asserts
1e-9 on the CPU); in float32 they agree to rounding at first and may drift apart over training.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

NOT_COMPARED = ("step", "epoch", "split", "lr", "elapsed_s", "seq_per_s")  # the schedule and the clock


def numbers(run: Path) -> list[list[float]]:
    """metrics.csv as rows of floats, without the columns that are not results."""
    with open(run / "metrics.csv", newline="") as f:
        return [[float(v) for k, v in row.items() if v and k not in NOT_COMPARED] for row in csv.DictReader(f)]


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def main(packed_root: Path, alone_root: Path) -> int:
    first_worst = whole_worst = 0.0
    runs = sorted(path.parent for path in packed_root.glob("*/*/summary.json"))
    if not runs:
        print(f"no run folders under {packed_root}")
        return 1
    for run in runs:
        alone = alone_root / run.parent.name / run.name
        packed_rows, alone_rows = numbers(run), numbers(alone)
        if len(packed_rows) != len(alone_rows):
            print(f"{run.name}: {len(packed_rows)} rows packed, {len(alone_rows)} alone")
            return 1
        per_row = [max(map(relative, p, q), default=0.0) for p, q in zip(packed_rows, alone_rows, strict=True)]
        a, b = (json.loads((folder / "summary.json").read_text()) for folder in (run, alone))
        first_worst, whole_worst = max(first_worst, per_row[0]), max(whole_worst, *per_row)
        print(
            f"{run.name}: {a['status']}, {a['backend']} on {a['device']}; test {a['test_metric']:.7g} packed, "
            f"{b['test_metric']:.7g} alone; relative difference {per_row[0]:.1e} at the first evaluation, "
            f"{max(per_row):.1e} at most"
        )
    print(
        f"{packed_root.name} vs {alone_root.name}: largest relative difference {first_worst:.1e} at the first "
        f"evaluation, {whole_worst:.1e} over every row of {len(runs)} runs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
