"""Observers: what watches a training loop without steering it — progress bars, live TensorBoard logging,
diagnostics.csv, the test hooks. The loop (lstmlab.run.train, lstmlab.run.single) calls, for each run it trains:

    on_step(run, step)      at every step boundary the run passes in this process: first at the step it starts
                            from (0, or its checkpoint's step), then after each of its optimizer steps, once that
                            step's evaluation (if due) is written and before the run completes
    on_rows(run, rows)      metrics.csv rows as they are written (first: the rows the folder already holds)
    on_finish(run, summary) the run ended here: completed, failed or interrupted (summary.json's content)
    close()                 the loop ends, however it ends

`run` is the loop's view of one run: `.name`, `.cfg` (its resolved ExperimentConfig), `.run` (its RunFolder),
`.step`, `.summary`, `.result` (None while it trains), `.done_training()`, `.model` (its SequenceModel), `.task`,
`.splits` (the data on the device) and `.elapsed_s()` (wall seconds trained, earlier processes included). An
observer reads them and changes nothing a run computes: the same run trains to the same numbers whatever
observes it.

Observers are built where the unit runs, from its UnitOptions (`observers_for`): the CLI and the sweep decide
which, the loop only calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lstmlab.run.folder import fire_test_hooks


class Observer:
    """The callback interface; every method a no-op, so an observer overrides only what it needs."""

    def on_step(self, run: Any, step: int) -> None:
        pass

    def on_rows(self, run: Any, rows: list[dict[str, Any]]) -> None:
        pass

    def on_finish(self, run: Any, summary: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class Observers(Observer):
    """Several observers as one, called in order."""

    def __init__(self, observers: Sequence[Observer] = ()):
        self.observers = list(observers)

    def on_step(self, run: Any, step: int) -> None:
        for observer in self.observers:
            observer.on_step(run, step)

    def on_rows(self, run: Any, rows: list[dict[str, Any]]) -> None:
        for observer in self.observers:
            observer.on_rows(run, rows)

    def on_finish(self, run: Any, summary: dict[str, Any]) -> None:
        for observer in self.observers:
            observer.on_finish(run, summary)

    def close(self) -> None:
        for observer in self.observers:
            observer.close()


class TestHooks(Observer):
    """The test hooks (lstmlab.run.folder.fire_test_hooks: LSTMLAB_TEST_SIGNAL / LSTMLAB_TEST_NOTIFY at
    `step=N`): fired at each step boundary a run will train on from, so a signal sent there stops the run with
    step N checkpointed, exactly where the tests expect it."""

    __test__ = False  # not a pytest test class

    def on_step(self, run: Any, step: int) -> None:
        if run.result is None and not run.done_training():  # it goes on from this boundary (not failed, not done)
            fire_test_hooks(f"step={step}", run.name)


def observers_for(options, on_steps: Callable[[int], None] | None = None) -> Observers:
    """The observers of a unit trained with `options` (lstmlab.run.options.UnitOptions): the test hooks, the
    diagnostics (runs that set train.diagnostics_every), the progress bar (unless quiet; on_steps(n): n more
    member steps, for a study's bar) and live TensorBoard logging (options.tensorboard)."""
    from lstmlab.run.diagnostics import DiagnosticsObserver
    from lstmlab.run.progress import PackProgress
    from lstmlab.run.tensorboard import LiveTensorBoard

    observers: list[Observer] = [DiagnosticsObserver(), PackProgress(options.quiet, on_steps)]
    if options.tensorboard is not None:
        observers.append(LiveTensorBoard(options.tensorboard))  # UserError here when the extra is missing
    observers.append(TestHooks())  # last: a step's own observers have seen it before a hook stops the run
    return Observers(observers)
