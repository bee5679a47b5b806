"""Run folders: one per trained run, written so that a crash never leaves a half-written file behind.

    <runs-dir>/<experiment>/<run-name>/
      config.yaml    resolved config of this run (pass it back to `lstmlab train` to run it again)
      env.json       versions, device, kernel backend, git sha + dirty flag, argv, host
      metrics.csv    one row per evaluation and split; rows are appended whole and flushed to disk
      summary.json   status (running | completed | failed | interrupted), params, metrics, baseline
      checkpoint.pt  model + optimizer + scheduler + RNG state + step: enough to resume in place
      diagnostics.csv  optional (train.diagnostics_every): gradient flow and gate statistics every N steps,
                     written like metrics.csv (lstmlab.diagnostics)

Files that are replaced (config, env, summary, checkpoint) are written to a temporary file and renamed
over the old one, so a reader sees the old or the new file, never a mix. A run counts as finished only
when summary.json says `completed`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

STATUSES = ("running", "completed", "failed", "interrupted")
CONFIG, ENV, METRICS, SUMMARY, CHECKPOINT = "config.yaml", "env.json", "metrics.csv", "summary.json", "checkpoint.pt"
DIAGNOSTICS = "diagnostics.csv"  # a second table of rows by step, read and written like metrics.csv


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- reading ------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / CONFIG).exists()

    def config(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / CONFIG).read_text())

    def summary(self) -> dict[str, Any] | None:
        path = self.path / SUMMARY
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def status(self) -> str | None:
        summary = self.summary()
        return summary.get("status") if summary else None

    def env(self) -> dict[str, Any] | None:
        path = self.path / ENV
        return json.loads(path.read_text()) if path.exists() else None

    def metrics(self, name: str = METRICS) -> list[dict[str, Any]]:
        """Complete rows of metrics.csv (or `name`), numbers parsed; a trailing partial line is ignored."""
        path = self.path / name
        if not path.exists():
            return []
        text = path.read_text()
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        rows = []
        for row in csv.DictReader(io.StringIO(text)):
            rows.append({k: _number(v) for k, v in row.items()})
        return rows

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).exists()

    def load_checkpoint(self, map_location: Any = "cpu") -> dict[str, Any]:
        import torch

        return torch.load(self.path / CHECKPOINT, map_location=map_location, weights_only=True)

    # -- writing ------------------------------------------------------------------------------------
    def write_config(self, yaml_text: str) -> None:
        atomic_write_text(self.path / CONFIG, yaml_text)

    def write_env(self, env: dict[str, Any]) -> None:
        atomic_write_json(self.path / ENV, env)

    def write_summary(self, summary: dict[str, Any]) -> None:
        assert summary.get("status") in STATUSES, summary.get("status")
        atomic_write_json(self.path / SUMMARY, summary)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.path / CHECKPOINT, buffer.getvalue())

    def append_metrics(self, rows: list[dict[str, Any]], columns: list[str], name: str = METRICS) -> None:
        """Append whole rows (header first if the file is new) and flush them to disk."""
        path = self.path / name
        new = not path.exists() or path.stat().st_size == 0
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _format(row.get(k)) for k in columns})
        with open(path, "a") as f:  # one write of whole lines
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())

    def metrics_columns(self, name: str = METRICS) -> list[str] | None:
        path = self.path / name
        if not path.exists():
            return None
        with open(path) as f:
            header = f.readline()
        return header.strip().split(",") if header.endswith("\n") else None

    def truncate_metrics(self, last_step: int, name: str = METRICS) -> None:
        """Keep only complete rows up to `last_step` (the checkpoint's): what a resumed run will redo goes."""
        path = self.path / name
        if not path.exists():
            return
        columns = self.metrics_columns(name)
        if columns is None:
            path.unlink()
            return
        rows = [row for row in self.metrics(name) if isinstance(row.get("step"), int) and row["step"] <= last_step]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _format(row.get(k)) for k in columns})
        atomic_write_text(path, buffer.getvalue())

    def clear(self) -> None:
        """Remove this run's files (for --restart)."""
        for name in (CONFIG, ENV, METRICS, SUMMARY, CHECKPOINT, DIAGNOSTICS):
            (self.path / name).unlink(missing_ok=True)


def _format(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest round-tripping form: rows read back equal
    return value


def _number(text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def find_runs(paths: list[str | Path]) -> list[RunFolder]:
    """Run folders at or below each path (a folder with a config.yaml), sorted, without duplicates."""
    found: dict[Path, RunFolder] = {}
    for root in map(Path, paths):
        if (root / CONFIG).exists():
            found[root.resolve()] = RunFolder(root)
            continue
        for config in sorted(root.rglob(CONFIG)):
            found[config.parent.resolve()] = RunFolder(config.parent)
    return [found[k] for k in sorted(found)]
