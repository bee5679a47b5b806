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

Live logging while training (`lstmlab train --tensorboard DIR`) writes the same scalars through
lstmlab.run.tensorboard.TensorBoardLog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lstmlab.analysis.compare import stats
from lstmlab.analysis.export import NOT_SCALARS, as_text, folder_started, read_run, run_folders
from lstmlab.files import UnwritableFolder, make_folder, os_problem
from lstmlab.run.folder import RunFolder
from lstmlab.run.reader import DEFAULT_BY
from lstmlab.run.tensorboard import TensorBoardLog

STATISTICS = ("mean", "min", "max")


# -- export -----------------------------------------------------------------------------------------


@dataclass
class Exported:
    logdir: Path
    runs: list[str] = field(default_factory=list)  # TensorBoard run names written
    groups: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # run folders not in any group, and why
    warnings: list[str] = field(default_factory=list)  # compare's: groups that pool runs of different configs


def export_tensorboard(paths: list[Path], logdir: str | Path, by: tuple[str, ...] = DEFAULT_BY) -> Exported:
    """Every run folder under `paths` as a TensorBoard run, and mean/min/max runs per group of completed runs."""
    from lstmlab.analysis.compare import compare_runs, comparison_warning

    folders = run_folders(paths)
    comparison = compare_runs(paths, by=by)  # checks --by before anything is written
    done = Exported(Path(logdir), skipped=[(s.path, s.reason) for s in comparison.skipped])
    done.warnings = [w for w in [comparison_warning(comparison)] if w]
    make_folder(logdir, "--logdir")  # a file there is named, not a NotADirectoryError
    try:
        _write(folders, comparison, logdir, done)
    except OSError as e:  # a file where a run's folder would go, a full disk
        raise UnwritableFolder(f"cannot write {e.filename or logdir} (under --logdir {logdir}): "
                               f"{os_problem(e)}") from None
    return done


def _write(folders: list[RunFolder], comparison, logdir: str | Path, done: Exported) -> None:
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


def aggregate(runs: list[list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Mean, min and max over runs of every numeric column, for each (split, step) row that every run has.

    A run's one test row is matched to the others' wherever each run stopped, and placed at the last step
    any of them reached. The mean is lstmlab.analysis.compare.stats.mean, as compare's.
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
