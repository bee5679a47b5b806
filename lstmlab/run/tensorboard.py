"""train --tensorboard DIR: every evaluation of a run logged live as TensorBoard scalars, the same scalars
`lstmlab export tensorboard` writes from a finished run folder (lstmlab.analysis.export.tensorboard).

Live logging while training (`lstmlab train --tensorboard DIR`: the observer `LiveTensorBoard`, see
lstmlab.run.observers) is one call per evaluation:

    log = TensorBoardLog(logdir, replace=True)
    log.log_hparams("<experiment>/<run-name>", config)           # once, when a process starts the run
    log.log_evaluation("<experiment>/<run-name>", rows)          # the rows already in metrics.csv, then
    ...                                                          # the rows just appended, as they come
    log.close()

With `replace`, every process that trains a run starts its TensorBoard copy over: the earlier event files
are removed, the rows the run folder kept are logged again, and a TensorBoard that had read the removed
files drops what it read (a purge from step 0). So a step redone after a resume is drawn once, whatever
the earlier process had logged before it was killed. Without `replace`, a writer's first log_evaluation
drops what an earlier process logged at or after its first step (TensorBoard's purge_step).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lstmlab.errors import UserError
from lstmlab.run.folder import as_text, flatten, scalars
from lstmlab.run.observers import Observer

_WRITERS = itertools.count()  # event file names end in .<pid>.<n>: two writers of one folder never collide


def summary_writer():
    """tensorboardX's SummaryWriter, or a UserError that names the extra which installs it."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise UserError("TensorBoard logging needs the [tensorboard] extra: pip install 'lstmlab[tensorboard]'"
                        ) from None
    return SummaryWriter


class TensorBoardLog:
    """One tensorboardX writer per run folder name under `logdir`; `replace` clears old event files first."""

    def __init__(self, logdir: str | Path, *, replace: bool = False, flush_secs: int = 30):
        self._make_writer = summary_writer()
        self.logdir = Path(logdir)
        self.replace = replace
        self.flush_secs = flush_secs
        self._writers: dict[str, Any] = {}

    def _writer(self, run: str, first_step: int | None = None):
        if run not in self._writers:
            folder = self.logdir / run
            if self.replace:
                for old in folder.glob("events.out.tfevents.*"):
                    old.unlink()
            # replace: a TensorBoard that read the removed files drops what it read (purge from step 0);
            # otherwise: drop what a crashed process logged from this writer's first step on
            purge = 0 if self.replace else first_step
            self._writers[run] = self._make_writer(logdir=str(folder), purge_step=purge, flush_secs=self.flush_secs,
                                                   filename_suffix=f".{os.getpid()}.{next(_WRITERS)}")
        return self._writers[run]

    def log_evaluation(self, run: str, rows: Iterable[dict[str, Any]], *, started: float | None = None) -> None:
        """Every numeric cell of metrics.csv-shaped rows as <split>/<column> at the row's step. `started`
        (seconds since the epoch) dates each row at started + elapsed_s; otherwise it is dated now."""
        rows = list(rows)
        steps = [r["step"] for r in rows if isinstance(r.get("step"), int)]
        writer = self._writer(run, min(steps) if steps else None)
        for row in rows:
            elapsed = row.get("elapsed_s")
            walltime = started + elapsed if started is not None and isinstance(elapsed, (int, float)) else None
            for tag, step, value in scalars([row]):
                writer.add_scalar(tag, value, global_step=step, walltime=walltime)

    def log_hparams(self, run: str, config: dict[str, Any]) -> None:
        """The run's config keys (dotted) as the hparams of its session: the HParams tab's columns."""
        from tensorboardX.summary import hparams

        values = {k: v if isinstance(v, (bool, int, float, str)) else as_text(v) for k, v in flatten(config).items()}
        _, session_start, _ = hparams(values, {})  # metrics: TensorBoard takes each run's scalars
        self._writer(run).file_writer.add_summary(session_start)

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tensorboard_log(logdir: str | Path | None):
    """A TensorBoardLog that replaces what earlier processes logged for the runs it logs; None without a folder."""
    if logdir is None:
        return None
    return TensorBoardLog(logdir, replace=True)


class LiveTensorBoard(Observer):
    """train --tensorboard DIR: each run's metrics.csv rows as the scalars `lstmlab export tensorboard` writes for
    them, in <logdir>/<experiment>/<run-name>, each dated by its elapsed_s.

    A run's first rows (the loop hands over those its folder already holds) come with its config (the HParams
    tab), and TensorBoard's copy of the run starts over (earlier event files removed; a TensorBoard showing them
    drops what it read), so a step redone after a resume, or a test row logged just before a kill, is drawn
    once, and rows a killed process had not written out yet are there again. The writer writes in a thread of
    its own: the flush makes what it wrote visible now; `close`, when the loop ends however it ends, writes
    the rest."""

    def __init__(self, logdir: str | Path):
        self.log = tensorboard_log(logdir)  # UserError now, before a run starts, when the extra is missing
        self._started: set[str] = set()

    def on_rows(self, run: Any, rows: list[dict[str, Any]]) -> None:
        name = f"{run.cfg.experiment}/{run.name}"
        if name not in self._started:
            self._started.add(name)
            self.log.log_hparams(name, run.cfg.model_dump(mode="json"))
        self.log.log_evaluation(name, rows, started=time.time() - run.elapsed_s())
        self.log.flush()

    def close(self) -> None:
        self.log.close()
