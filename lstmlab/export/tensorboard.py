"""TensorBoard: run folders as TensorBoard runs, each group of seeds as runs of its own, and live logging.

    LOGDIR/<experiment>/<run-name>/               one lstmlab run: every metrics.csv cell as the scalar
                                                  <split>/<column> at its step, and the config as hparams
    LOGDIR/<experiment>/groups/<key>/{mean,min,max}/  per group of completed runs (compare's grouping, --by):
                                                  the mean, min and max over the group's runs of each scalar

TensorBoard cannot aggregate runs itself (tensorboard issue #376), so a group's statistics are runs:
filter the runs by `groups/` to see a depth's mean curve between its min and max. A group's curves
cover the steps every run of the group evaluated; its test/<metric> is the mean (min, max) of its runs'
test metrics, compare's group mean, at the last step any of them reached. Groups that pool runs of
several experiments land in LOGDIR/groups/. The HParams tab lists every run with its config keys and,
as metrics, the last value of each of its scalars (test/<metric> among them).

Scalars are float32 in event files. The writer is tensorboardX (the [tensorboard] extra): it writes the
files TensorBoard reads without TensorFlow. Exporting again replaces what an earlier export wrote in
the same folders (their event files are removed first), so nothing is drawn twice.

Live logging while training (`lstmlab train --tensorboard DIR`: lstmlab.train.log_rows) is one call per
evaluation:

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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lstmlab import stats
from lstmlab.errors import UserError
from lstmlab.export import NOT_SCALARS, as_text, flatten, folder_started, read_run, run_folders, scalars
from lstmlab.runs import RunFolder

STATISTICS = ("mean", "min", "max")
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


# -- export -----------------------------------------------------------------------------------------


@dataclass
class Exported:
    logdir: Path
    runs: list[str] = field(default_factory=list)  # TensorBoard run names written
    groups: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # run folders not in any group, and why


def export_tensorboard(paths: list[Path], logdir: str | Path, by: tuple[str, ...] = ("model.layers",)) -> Exported:
    """Every run folder under `paths` as a TensorBoard run, and mean/min/max runs per group of completed runs."""
    from lstmlab.compare import compare_runs

    folders = run_folders(paths)
    comparison = compare_runs(paths, by=by)  # checks --by before anything is written
    done = Exported(Path(logdir), skipped=[(s.path, s.reason) for s in comparison.skipped])
    with TensorBoardLog(logdir, replace=True) as log:
        for folder in folders:
            record = read_run(folder)
            run = f"{record.experiment}/{record.name}"
            log.log_hparams(run, record.config)
            log.log_evaluation(run, record.rows, started=folder_started(record))
            done.runs.append(run)
        for group in comparison.groups:
            records = [read_run(RunFolder(r.path)) for r in group.runs]
            experiments = {record.experiment for record in records}
            where = f"{experiments.pop()}/groups" if len(experiments) == 1 else "groups"
            label = ",".join(f"{key}={as_text(value)}" for key, value in group.key.items())
            for statistic, rows in aggregate([record.rows for record in records]).items():
                log.log_evaluation(f"{where}/{label}/{statistic}", rows)
            done.groups.append(f"{where}/{label}")
    return done


def aggregate(runs: list[list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Mean, min and max over runs of every numeric column, for each (split, step) row that every run has.

    A run's one test row is matched to the others' wherever each run stopped, and placed at the last step
    any of them reached. The mean is lstmlab.stats.mean, as compare's.
    """
    def keyed(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
        return {(r["split"], -1 if r["split"] == "test" else r["step"]): r for r in rows
                if isinstance(r.get("step"), int) and isinstance(r.get("split"), str)}

    tables = [keyed(rows) for rows in runs]
    common = set.intersection(*(set(table) for table in tables)) if tables else set()
    out: dict[str, list[dict[str, Any]]] = {statistic: [] for statistic in STATISTICS}
    for key in sorted(common, key=lambda k: (k[0] == "test", k[1], k[0])):
        rows = [table[key] for table in tables]
        columns = [c for c in rows[0] if c not in NOT_SCALARS
                   and all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in rows)]
        place = {"step": max(r["step"] for r in rows), "split": key[0]}
        for statistic, reduce in (("mean", stats.mean), ("min", min), ("max", max)):
            out[statistic].append({**place, **{c: reduce([r[c] for r in rows]) for c in columns}})
    return out
