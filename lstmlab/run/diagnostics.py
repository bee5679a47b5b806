"""diagnostics.csv: the gradient flow and gates of a run, every N optimizer steps while it trains.

What `lstmlab inspect` shows for one checkpoint, followed over training, so the picture can be compared
before and after a run leaves its plateau. Every row is measured on the same probe batch (the first
`PROBE_SIZE` validation sequences), so rows differ only because the weights changed:

    step, loss,                                  the probe batch's training loss (float64)
    grad_x_first, grad_x_last,                   ‖dL/dx_t‖ at the first and the last step (gradflow.step_norms)
    l<k>_grad_h_first, l<k>_grad_h_last,         per layer k: ‖dL/dh_t‖ at the first and the last step,
    l<k>_grad_c_first, l<k>_grad_c_last,         ‖dL/dc_t‖ likewise (LSTM),
    l<k>_<gate>_mean, l<k>_<gate>_saturated      each gate's mean and saturated fraction (i f g o; GRU r z n)

A training loop needs one object and one call:

    diagnostics = Diagnostics.for_run(run, task, splits["val"])     # once, before the loop
    diagnostics.record(model, step)                                 # every N steps: appends a row, returns it

or, as lstmlab.run.train does, the observer `DiagnosticsObserver` (lstmlab.run.observers), which makes that
object for each run that sets train.diagnostics_every and records at its step boundaries.

`record` reads copies of the weights (float64) and touches neither the model, nor its gradients, nor any
random state, so a run trains to the same numbers with diagnostics on or off. Rows are appended whole and
flushed like metrics.csv; `RunFolder.truncate_metrics(step, DIAGNOSTICS)` drops rows past a checkpoint
when a run resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lstmlab.errors import UserError
from lstmlab.run.folder import DIAGNOSTICS, RunFolder
from lstmlab.run.observers import Observer

PROBE_SIZE = 256  # validation sequences in the probe batch


def diagnostics_row(model, batch: dict, loss_fn: Callable, step: int) -> dict[str, Any]:
    """One flat row: the probe batch's loss, first/last-step gradient norms and gate statistics per layer."""
    from lstmlab.models.gradflow import summarize, trace

    numbers = summarize(trace(model, batch["inputs"], batch, loss_fn))
    row: dict[str, Any] = {"step": step, "loss": numbers["loss"],
                           "grad_x_first": numbers["grad_x"][0], "grad_x_last": numbers["grad_x"][-1]}
    for layer in numbers["layers"]:
        k = layer["layer"]
        for name in ("grad_h", "grad_c"):
            if layer[name] is not None:
                row[f"l{k}_{name}_first"], row[f"l{k}_{name}_last"] = layer[name][0], layer[name][-1]
        for gate, stats in layer["gates"].items():
            row[f"l{k}_{gate}_mean"], row[f"l{k}_{gate}_saturated"] = stats["mean"], stats["saturated"]
    return row


def check_traceable(model) -> None:
    """UserError unless `model`'s core is one gradflow can trace (LSTM, GRU, RNN): said before training."""
    from lstmlab.models.gradflow import core_kind

    try:
        core_kind(model.core)
    except ValueError as e:
        raise UserError(f"train.diagnostics_every: {e}") from None


class Diagnostics:
    """Appends diagnostics rows of one run to its diagnostics.csv."""

    def __init__(self, run: RunFolder, loss_fn: Callable, probe: dict):
        self.run = run
        self.loss_fn = loss_fn
        self.probe = probe

    @classmethod
    def for_run(cls, run: RunFolder, task, val: dict, size: int = PROBE_SIZE) -> Diagnostics:
        """Probe with the first `size` sequences of the validation split (tensors, on the model's device)."""
        return cls(run, task.loss, {k: v[:size] for k, v in val.items()})

    def record(self, model, step: int) -> dict[str, Any]:
        row = diagnostics_row(model, self.probe, self.loss_fn, step)
        columns = self.run.metrics_columns(DIAGNOSTICS) or list(row)
        self.run.append_metrics([row], columns, DIAGNOSTICS)
        return row


class DiagnosticsObserver(Observer):
    """diagnostics.csv through the observer interface: a row at every step boundary that is a multiple of the
    run's train.diagnostics_every. A run that resumes does not record its first boundary again: the process
    that checkpointed it there had (its rows past the checkpoint are dropped by the loop on resume)."""

    def __init__(self) -> None:
        self._runs: dict[str, Diagnostics] = {}

    def on_step(self, run: Any, step: int) -> None:
        every = run.cfg.train.diagnostics_every
        if not every:
            return
        first = run.name not in self._runs
        if first:
            self._runs[run.name] = Diagnostics.for_run(run.run, run.task, run.splits["val"])
        if step % every == 0 and not (first and step > 0):
            self._runs[run.name].record(run.model, step)

    def on_finish(self, run: Any, summary: dict[str, Any]) -> None:
        self._runs.pop(run.name, None)
