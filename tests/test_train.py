"""Training end to end on tiny configs: complete run folders, determinism, resume after kill -9."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, write_config

from lstmlab.config import load_config, validate
from lstmlab.run.folder import RunFolder, run_name
from lstmlab.run.train import get_lr, train

TIMING = {"elapsed_s", "seq_per_s"}


def train_tiny(tmp_path: Path, overrides=(), **kwargs):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = next(load_config(write_config(tmp_path / "c.yaml", TINY), overrides).runs())
    return train(cfg, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data", quiet=True, log=lambda _: None, **kwargs)


def metric_values(path: Path) -> list[dict]:
    with open(path / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def test_run_folder_is_complete(tmp_path):
    result = train_tiny(tmp_path)
    assert result.status == "completed"
    names = {p.name for p in result.path.iterdir()}
    assert {"config.yaml", "env.json", "metrics.csv", "summary.json", "checkpoint.pt"} <= names
    assert not [n for n in names if n.startswith(".") and n != ".lock"], "temporary files left behind"
    summary = json.loads((result.path / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["params"] == 4 * (8 * 2 + 8 * 8 + 2 * 8) + 8 + 1  # one LSTM layer + Linear(8, 1) head
    assert summary["baseline"] == pytest.approx(1 / 6, abs=0.05)
    assert set(summary["test"]) >= {"loss", "mse"}
    assert summary["test_metric"] == summary["test"]["mse"]
    env = json.loads((result.path / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["backend"] == "torch.nn" and env["device"] == "cpu"
    rows = list(csv.DictReader(open(result.path / "metrics.csv")))
    assert [r["split"] for r in rows] == ["train", "val", "train", "val", "test"]
    assert [int(r["step"]) for r in rows] == [10, 10, 20, 20, 20]
    assert set(rows[0]) == {"step", "epoch", "split", "loss", "mse", "lr", "grad_norm", "elapsed_s", "seq_per_s"}
    # the resolved config can be passed back to train
    resolved = validate(yaml.safe_load((result.path / "config.yaml").read_text()))
    assert resolved.model.hidden_size == 8 and resolved.sweep == {}


def test_checkpoint_loads_weights_only(tmp_path):
    result = train_tiny(tmp_path)
    ckpt = torch.load(result.path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 20 and "optimizer" in ckpt and "rng" in ckpt


def test_same_config_same_metrics_on_cpu(tmp_path):
    a = train_tiny(tmp_path / "a")
    b = train_tiny(tmp_path / "b")
    assert metric_values(a.path) == metric_values(b.path)


def test_completed_run_is_skipped_and_restart_starts_over(tmp_path):
    first = train_tiny(tmp_path)
    again = train_tiny(tmp_path)
    assert again.status == "skipped" and again.path == first.path
    restarted = train_tiny(tmp_path, restart=True)
    assert restarted.status == "completed"
    assert metric_values(first.path) == metric_values(restarted.path)


def test_changed_config_in_same_folder_is_refused(tmp_path):
    from lstmlab.errors import UserError

    train_tiny(tmp_path)
    with pytest.raises(UserError, match="different config; pass --restart"):
        train_tiny(tmp_path, ["train.lr=0.5"])


@pytest.mark.parametrize("model_type", ["scratch-lstm", "lstm", "gru", "rnn"])
def test_every_model_type_trains(tmp_path, model_type):
    result = train_tiny(tmp_path, [f"model.type={model_type}", "model.layers=2", "train.steps=40", "train.lr=0.02"])
    summary = result.summary
    assert summary["status"] == "completed" and summary["model_type"] == model_type
    rows = [r for r in csv.DictReader(open(result.path / "metrics.csv")) if r["split"] == "train"]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])  # it learns something


@pytest.mark.parametrize("schedule", ["constant", "cosine", "plateau"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_optimizers_and_schedules_run(tmp_path, optimizer, schedule):
    result = train_tiny(tmp_path, [f"train.optimizer={optimizer}", f"train.schedule={schedule}", "train.steps=10",
                                   "train.warmup_steps=2"])
    assert result.status == "completed"


def test_cosine_schedule_with_warmup():
    cfg = validate({**TINY, "train": {**TINY["train"], "schedule": "cosine", "warmup_steps": 10, "steps": 110,
                                       "lr": 1.0, "min_lr_ratio": 0.1}})
    assert get_lr(cfg, 0) == pytest.approx(0.1)
    assert get_lr(cfg, 9) == pytest.approx(1.0)
    assert get_lr(cfg, 10) == pytest.approx(1.0)
    assert get_lr(cfg, 60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert get_lr(cfg, 110) == pytest.approx(0.1)


def test_early_stop(tmp_path):
    result = train_tiny(tmp_path, ["train.lr=1e-9", "train.steps=200", "train.early_stop_patience=2",
                                   "train.eval_every=5"])
    assert result.status == "completed"
    assert result.summary["step"] < 200


def test_nan_loss_marks_the_run_failed(tmp_path):
    from lstmlab.run.train import RunFailed

    with pytest.raises(RunFailed, match="loss became (nan|inf) at step"):
        train_tiny(tmp_path, ["train.lr=1e30", "train.grad_clip=null", "train.optimizer=sgd", "train.steps=50"])
    summary = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    assert summary["status"] == "failed" and "loss became" in summary["error"]


def test_run_names_are_readable_and_unique():
    cfg = validate({**TINY, "sweep": {"model.layers": [1, 2], "train.lr": [0.1, 0.01]}})
    names = [run_name(r, tuple(cfg.sweep)) for r in cfg.runs()]
    assert names == ["L1-lstm-s0-lr0.1", "L1-lstm-s0-lr0.01", "L2-lstm-s0-lr0.1", "L2-lstm-s0-lr0.01"]


def _lstmlab(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lstmlab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _tiny_cli(tmp_path: Path, train_keys: dict) -> tuple[list[str], Path, RunFolder]:
    config = write_config(tmp_path / "c.yaml", {**TINY, "train": {**TINY["train"], **train_keys}})
    args = ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"), "-q"]
    return args, config, RunFolder(tmp_path / "runs" / "tiny" / "L1-lstm-s0")


def _fresh_rows(tmp_path: Path, config: Path) -> list[dict]:
    fresh = train(next(load_config(config).runs()), runs_dir=tmp_path / "fresh", data_dir=tmp_path / "data",
                  quiet=True, log=lambda _: None)
    return metric_values(fresh.path)


def _rerun(args: list[str]):
    """The same command again, in this process (nothing here needs a signal)."""
    from typer.testing import CliRunner

    from lstmlab.cli import app

    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("name, stopped_at", [("KILL", 100), ("TERM", 150)])
def test_a_signal_at_step_n_and_the_same_command_resumes_with_identical_metrics(tmp_path, name, stopped_at):
    """kill -9 loses the steps since the last evaluation; SIGTERM (like Ctrl-C, tested in test_sweep)
    finishes the step and saves it."""
    args, config, run = _tiny_cli(tmp_path, {"steps": 300, "eval_every": 100})
    proc = _lstmlab(*args, env={"LSTMLAB_TEST_SIGNAL": f"{name}@step=150"})
    _, err = proc.communicate(timeout=300)
    summary = run.summary()
    if name == "KILL":
        assert proc.returncode == -signal.SIGKILL and summary["status"] == "running"
    else:
        assert proc.returncode == 130, err
        assert "interrupted: checkpoints saved; run the same command again to resume" in err
        assert summary["status"] == "interrupted" and summary["signal"] == f"SIG{name}" and summary["step"] == 150
    assert run.load_checkpoint()["step"] == stopped_at

    resumed = _rerun(args)
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming at step {stopped_at}" in resumed.output
    assert run.status() == "completed"
    rows = metric_values(run.path)
    keys = [(r["step"], r["split"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 3 + 1, "duplicated or missing rows"
    assert rows == _fresh_rows(tmp_path, config)


def test_a_kill_at_the_completion_step_leaves_one_test_row_after_the_rerun(tmp_path):
    args, config, run = _tiny_cli(tmp_path, {})
    proc = _lstmlab(*args, env={"LSTMLAB_TEST_SIGNAL": "KILL@complete"})
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert run.status() == "running"  # killed after the test row, before the summary: not completed
    assert [r["split"] for r in metric_values(run.path)].count("test") == 1

    rerun = _rerun(args)
    assert rerun.exit_code == 0, rerun.output
    assert "resuming at step 20" in rerun.output
    assert run.status() == "completed"
    rows = metric_values(run.path)
    assert [r["split"] for r in rows].count("test") == 1
    assert rows == _fresh_rows(tmp_path, config)
    again = _rerun(args)
    assert again.exit_code == 0 and "L1-lstm-s0: skipped (already completed)" in again.output
    assert metric_values(run.path) == rows


def test_a_half_finished_run_without_its_config_is_refused_and_restart_replaces_it(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lstmlab.cli import app

    monkeypatch.setenv("LSTMLAB_TEST_SIGNAL", "INT@step=15")
    with pytest.raises(KeyboardInterrupt):
        train_tiny(tmp_path)
    monkeypatch.delenv("LSTMLAB_TEST_SIGNAL")
    run = RunFolder(tmp_path / "runs" / "tiny" / "L1-lstm-s0")
    assert run.status() == "interrupted" and run.load_checkpoint()["step"] == 15
    (run.path / "config.yaml").unlink()
    args = ["train", str(tmp_path / "c.yaml"), "--runs-dir", str(tmp_path / "runs"),
            "--data-dir", str(tmp_path / "data"), "-q", "--set", "train.lr=0.05"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2, refused.output
    assert f"run folder {run.path} holds" in refused.output and "but no config.yaml" in refused.output
    assert "--restart" in refused.output and "Traceback" not in refused.output
    assert run.load_checkpoint()["step"] == 15  # nothing was touched

    restarted = CliRunner().invoke(app, [*args, "--restart"])
    assert restarted.exit_code == 0, restarted.output
    assert run.status() == "completed" and run.config()["train"]["lr"] == 0.05


def test_partial_metrics_line_is_dropped_on_resume(tmp_path):
    run = RunFolder(tmp_path)
    run.append_metrics([{"step": 1, "split": "val", "loss": 0.5}], ["step", "split", "loss"])
    run.append_metrics([{"step": 2, "split": "val", "loss": 0.25}], ["step", "split", "loss"])
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("3,val,0.1")  # a write cut short by a crash
    assert [r["step"] for r in run.metrics()] == [1, 2]
    run.truncate_metrics(1)
    assert (tmp_path / "metrics.csv").read_text() == "step,split,loss\n1,val,0.5\n"
    assert os.listdir(tmp_path) == ["metrics.csv"]


def test_fused_backend_learns_the_same_curve_as_reference(tmp_path):
    """Same seed, CPU, float64: the fused kernel's training run matches the per-step reference's."""
    common = ["model.type=scratch-lstm", "model.layers=2", "train.dtype=float64", "train.steps=30"]
    ref = train_tiny(tmp_path / "ref", [*common, "model.backend=reference"])
    fused = train_tiny(tmp_path / "fused", [*common, "model.backend=fused"])
    assert json.loads((ref.path / "env.json").read_text())["backend"] == "reference"
    assert json.loads((fused.path / "env.json").read_text())["backend"] == "fused"
    ref_rows, fused_rows = metric_values(ref.path), metric_values(fused.path)
    assert [(r["step"], r["split"]) for r in ref_rows] == [(r["step"], r["split"]) for r in fused_rows]
    for a, b in zip(ref_rows, fused_rows, strict=True):
        for key in ("loss", "mse", "grad_norm"):
            if a[key]:
                assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-9, abs=1e-12), (a, b)
