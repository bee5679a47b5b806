"""Sweeps: a failed run does not stop the others; the same command again skips what completed and resumes
what did not; --jobs 2 writes the same run folders and numbers as --jobs 1; Ctrl-C stops a parallel sweep
with every started run checkpointed (tests/test_concurrency.py has the signal tests)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import TINY, write_config
from typer.testing import CliRunner

from lstmlab.cli import app
from lstmlab.config import load_config
from lstmlab.run.folder import RunFolder
from lstmlab.run.sweep import run_sweep

TIMING = {"elapsed_s", "seq_per_s"}


def sweep_config(tmp_path: Path, sweep: dict, train: dict | None = None) -> Path:
    raw = {**TINY, "train": {**TINY["train"], **(train or {})}, "sweep": sweep}
    return write_config(tmp_path / "sweep.yaml", raw)


def numbers(run: Path) -> tuple[list[dict], dict]:
    """metrics.csv rows and summary.json without the timing fields: what must not depend on scheduling."""
    with open(run / "metrics.csv") as f:
        rows = [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]
    summary = json.loads((run / "summary.json").read_text())
    summary.pop("wall_s")
    return rows, summary


def test_failed_run_does_not_stop_the_sweep(tmp_path):
    config = sweep_config(tmp_path, {"train.lr": [1e30, 0.01]})  # the first point's loss overflows at once
    result = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs"),
                                      "--data-dir", str(tmp_path / "data"), "-q"])
    assert result.exit_code == 1, result.output
    assert "completed (1): L1-lstm-s0-lr0.01" in result.stdout
    assert "failed (1): L1-lstm-s0-lr1e_30" in result.stdout
    failed = RunFolder(tmp_path / "runs" / "tiny" / "L1-lstm-s0-lr1e_30").summary()
    assert failed["status"] == "failed" and "loss became" in failed["error"]
    assert RunFolder(tmp_path / "runs" / "tiny" / "L1-lstm-s0-lr0.01").status() == "completed"
    assert "adding: test mse" in result.stdout  # the comparison of what completed still follows

    again = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs"),
                                     "--data-dir", str(tmp_path / "data"), "-q"])
    assert again.exit_code == 1
    assert "skipped (already completed) (1): L1-lstm-s0-lr0.01" in again.stdout  # a failed run is tried again
    assert "failed (1): L1-lstm-s0-lr1e_30" in again.stdout


def test_rerun_skips_completed_runs_and_resumes_the_interrupted_one(tmp_path, monkeypatch):
    config = sweep_config(tmp_path, {"model.layers": [1, 2]})
    cfg = load_config(config)
    dirs = dict(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data", quiet=True)
    monkeypatch.setenv("LSTMLAB_TEST_SIGNAL", "INT@step=14@L2-lstm-s0")  # Ctrl-C after the 2-layer run's 14th step
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, **dirs, log=lambda _: None)
    monkeypatch.delenv("LSTMLAB_TEST_SIGNAL")
    first, second = (RunFolder(tmp_path / "runs" / "tiny" / f"L{n}-lstm-s0") for n in (1, 2))
    assert first.status() == "completed"
    assert second.status() == "interrupted" and second.load_checkpoint()["step"] == 14

    lines: list[str] = []
    outcomes = run_sweep(cfg, **dirs, log=lines.append)
    assert [(o.name, o.status) for o in outcomes] == [("L1-lstm-s0", "skipped"), ("L2-lstm-s0", "completed")]
    assert any("resuming at step" in line for line in lines)
    assert lines[-2:] == ["completed (1): L2-lstm-s0", "skipped (already completed) (1): L1-lstm-s0"]

    fresh = run_sweep(cfg, **{**dirs, "runs_dir": tmp_path / "fresh"}, log=lambda _: None)
    assert numbers(second.path) == numbers(fresh[1].path)  # resuming changed no number


def test_jobs_2_writes_the_same_runs_as_jobs_1(tmp_path):
    cfg = load_config(sweep_config(tmp_path, {"model.layers": [1, 2], "train.seed": [0, 1]}, {"steps": 10}))
    serial = run_sweep(cfg, runs_dir=tmp_path / "j1", data_dir=tmp_path / "data", quiet=True, log=lambda _: None)
    lines: list[str] = []
    parallel = run_sweep(cfg, runs_dir=tmp_path / "j2", data_dir=tmp_path / "data", jobs=2, log=lines.append)
    assert [(o.name, o.status) for o in parallel] == [(o.name, o.status) for o in serial]
    assert all(o.status == "completed" for o in parallel)
    assert sorted(p.name for p in (tmp_path / "j2" / "tiny").iterdir()) == [o.name for o in serial]
    for a, b in zip(serial, parallel, strict=True):
        assert numbers(a.path) == numbers(b.path)
    assert lines[1] == "running 4 runs, 2 at a time (1 CPU thread(s) each)"
    assert lines[-1] == "completed (4): L1-lstm-s0, L1-lstm-s1, L2-lstm-s0, L2-lstm-s1"
