"""Progress on a terminal: a bar per pack (its steps) and one for the whole study (runs done of N, time left).

Both are tqdm bars on stderr, drawn only where stderr is a terminal and the command is not --quiet.
The study's time left is counted in member steps, the unit of work whatever the packing: every run still
to train has `train.steps` minus its checkpoint's step to go, a pack of K members takes K of them per
step, and the rate so far says how long the rest will take.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, Any

from lstmlab.run.observers import Observer


def visible(quiet: bool, file: IO | None = None) -> bool:
    return not quiet and (file or sys.stderr).isatty()


class StudyProgress:
    """The study's bar: `study: 12/30 runs  40%|████      | [01:02<01:33]`.

    runs:       runs in the study (completed ones included)
    steps:      member steps still to train
    done_runs:  runs already complete when the study starts
    """

    def __init__(self, runs: int, steps: int, *, done_runs: int = 0, quiet: bool = False, file: IO | None = None):
        from tqdm import tqdm

        self.runs, self.done = runs, done_runs
        self.bar = tqdm(total=max(steps, 1), desc=self._label(), unit="step", file=file or sys.stderr,
                        disable=not visible(quiet, file), dynamic_ncols=True, position=0, leave=False,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")

    def _label(self) -> str:
        return f"study: {self.done}/{self.runs} runs"

    def steps(self, n: int) -> None:
        """`n` more member steps trained."""
        self.bar.update(n)

    def runs_done(self, n: int = 1) -> None:
        self.done += n
        self.bar.set_description_str(self._label(), refresh=True)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> StudyProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PackProgress(Observer):
    """The pack's bar (`pack_progress`) through the observer interface, and a study's count of member steps:
    on_steps(n) after each pack step, with the n member steps it took (the study's bar, or a worker's counter).

    The bar starts at the first step taken (by then every member has said where it starts), shows the runs'
    step and the best validation metric so far, and closes when the loop ends."""

    def __init__(self, quiet: bool = False, on_steps: Callable[[int], None] | None = None):
        self.quiet, self.on_steps = quiet, on_steps
        self.runs: dict[str, Any] = {}  # name -> the loop's view of the run, in the order they started
        self.bar = None
        self.step = 0  # the bar's position: the furthest step any member has reached

    def on_step(self, run: Any, step: int) -> None:
        if run.name not in self.runs:  # its starting boundary: no step trained yet
            self.runs[run.name] = run
            self.step = step if len(self.runs) == 1 else min(self.step, step)
            return
        if self.bar is None:
            first, others = next(iter(self.runs.values())), len(self.runs) - 1
            self.bar = pack_progress(first.cfg.train.steps, self.step, first.name + (f" +{others}" if others else ""),
                                     self.quiet)
        if self.on_steps is not None:
            self.on_steps(1)
        if step > self.step:
            self.bar.update(step - self.step)
            self.step = step

    def on_rows(self, run: Any, rows: list[dict[str, Any]]) -> None:
        if self.bar is None or not any(r.get("split") == "val" for r in rows):
            return
        metric = run.summary["metric"]
        values = [r.best.val[metric] for r in self.runs.values() if r.best.val is not None]
        if values:
            self.bar.set_postfix_str(f"best val {metric} {min(values):.4g}" +
                                     (f"–{max(values):.4g}" if len(values) > 1 else ""))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def pack_progress(total: int, initial: int, desc: str, quiet: bool):
    """A pack's bar: its steps (every member takes each step), below the study's bar when there is one."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, leave=False,
                disable=not visible(quiet))
