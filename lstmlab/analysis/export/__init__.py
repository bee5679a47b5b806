"""Run folders out to where people already look: MLflow (`export.mlflow`) and TensorBoard (`export.tensorboard`).

Both read run folders the same way (`read_run`: lstmlab.run.reader's RunView, every file read up front) and
name things the same way: the resolved config as dotted keys (`model.layers`), and the numeric cells of
metrics.csv as scalars at their row's step, each quantity once, where it means something
(lstmlab.run.folder.scalars): what is measured on a split as `<split>/<column>` (`val/loss`, `train/mse`,
`test/accuracy`), and what describes the training at that step (epoch, lr, grad_norm, elapsed_s, seq_per_s,
repeated on every row of the step) as `train/<column>` only (`train/lr`; no `val/lr` or `test/elapsed_s`).
"""

from __future__ import annotations

from pathlib import Path

from lstmlab.errors import UserError
from lstmlab.run.folder import METRICS, NOT_SCALARS, RunFolder, as_text, flatten, scalars  # noqa: F401 (the exporters' names)
from lstmlab.run.reader import RunView

RunRecord = RunView  # what an exporter holds of a run folder: experiment, name, status, config, summary, env, rows


def read_run(folder: RunFolder) -> RunView:
    """The view of a run folder with config.yaml, summary.json ({} before the run wrote one), env.json and
    metrics.csv read now: an UnreadableFile (a UserError) names the first file that cannot be read."""
    view = RunView(folder.path)
    view.config, view.summary, view.env, view.rows  # noqa: B018 (read now: a bad file stops before any export)
    return view


def folder_started(record: RunView) -> float | None:
    """Seconds since the epoch when the run started, as far as its files tell: metrics.csv's last write
    minus the elapsed time of its last row. None without rows."""
    elapsed = [r["elapsed_s"] for r in record.rows if isinstance(r.get("elapsed_s"), (int, float))]
    path = record.path / METRICS
    if not elapsed or not path.exists():
        return None
    return path.stat().st_mtime - elapsed[-1]


def run_folders(paths: list[Path]) -> list[RunFolder]:
    from lstmlab.run.folder import find_runs

    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise UserError(f"no such path: {', '.join(missing)}")
    folders = find_runs(list(paths))
    if not folders:
        raise UserError(f"no run folders under {', '.join(map(str, paths))}: a run folder holds a config.yaml")
    return folders
