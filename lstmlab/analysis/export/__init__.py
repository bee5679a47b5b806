"""Run folders out to where people already look: MLflow (`export.mlflow`) and TensorBoard (`export.tensorboard`).

Both read run folders the same way (`read_run`) and name things the same way: the resolved config as
dotted keys (`model.layers`), and the numeric cells of metrics.csv as scalars at their row's step, each
quantity once, where it means something (lstmlab.run.folder.scalars): what is measured on a split as
`<split>/<column>` (`val/loss`, `train/mse`, `test/accuracy`), and what describes the training at that step
(epoch, lr, grad_norm, elapsed_s, seq_per_s, repeated on every row of the step) as `train/<column>` only
(`train/lr`; no `val/lr` or `test/elapsed_s`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lstmlab.errors import UserError
from lstmlab.run.folder import NOT_SCALARS, RunFolder, as_text, flatten, scalars  # noqa: F401 (the exporters' names)


@dataclass
class RunRecord:
    """What an exporter needs of one run folder."""

    folder: RunFolder
    config: dict[str, Any]
    summary: dict[str, Any]  # {} when the run has not written one yet
    env: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def experiment(self) -> str:
        return str(self.config.get("experiment") or self.folder.path.parent.name)

    @property
    def name(self) -> str:
        return self.summary.get("run") or self.folder.path.name

    @property
    def status(self) -> str:
        return self.summary.get("status") or "unknown"


def read_run(folder: RunFolder) -> RunRecord:
    """A run folder's files; UserError naming the file when one cannot be read."""
    try:
        config = folder.config()
        summary = folder.summary() or {}
        env = folder.env() or {}
        rows = folder.metrics()
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:  # ValueError: json's errors
        raise UserError(f"{folder.path}: unreadable run folder ({type(e).__name__}: {e})") from None
    if not isinstance(config, dict):
        raise UserError(f"{folder.path / 'config.yaml'}: not a mapping of sections")
    return RunRecord(folder, config, summary if isinstance(summary, dict) else {}, env, rows)


def folder_started(record: RunRecord) -> float | None:
    """Seconds since the epoch when the run started, as far as its files tell: metrics.csv's last write
    minus the elapsed time of its last row. None without rows."""
    elapsed = [r["elapsed_s"] for r in record.rows if isinstance(r.get("elapsed_s"), (int, float))]
    path = record.folder.path / "metrics.csv"
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
