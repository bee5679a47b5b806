"""lstmlab train --tensorboard DIR: live TensorBoard scalars equal to metrics.csv and to what `lstmlab export
tensorboard` writes, each step once after a kill and a resume, through the local executor's worker processes
and submitit; a missing extra or an unusable folder is bad input (float64, CPU; read back with TensorBoard's
own event reader)."""

from __future__ import annotations

import signal
import sys

import pytest
import yaml
from conftest import TINY, write_config
from scalar_tags import assert_each_quantity_once, expected_tags
from test_export_tensorboard import csv_series, plugin_data_pb2, read_events, scalar_series
from test_pack_training import run_lstmlab
from typer.testing import CliRunner

from lstmlab.analysis.export import flatten
from lstmlab.cli import app
from lstmlab.config import load_config
from lstmlab.run.folder import RunFolder, find_runs
from lstmlab.run.sweep import run_sweep

runner = CliRunner()
STUDY = {**TINY, "train": {**TINY["train"], "dtype": "float64"}, "sweep": {"model.layers": [1, 2]}}
NAMES = ["L1-lstm-s0", "L2-lstm-s0"]


def train_args(tmp_path, *more: str) -> list[str]:
    config = write_config(tmp_path / "study.yaml", STUDY)
    return ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"), "-q",
            "--tensorboard", str(tmp_path / "tb"), *more]


def assert_mirrors_metrics_csv(logdir, runs) -> None:
    """Every run's TensorBoard scalars are its metrics.csv's columns, each step once, in one event file."""
    folders = find_runs([runs])
    assert sorted(f.path.name for f in folders) == NAMES
    for folder in folders:
        rows = folder.metrics()
        assert [r["split"] for r in rows].count("test") == 1
        events = read_events(logdir / "tiny" / folder.path.name)
        tags = events.Tags()["scalars"]
        assert set(tags) == expected_tags(rows)
        assert_each_quantity_once(tags)
        for tag in tags:
            assert scalar_series(events, tag) == csv_series(rows, tag), (folder.path.name, tag)
        assert len(list((logdir / "tiny" / folder.path.name).glob("events.out.tfevents.*"))) == 1


def test_live_scalars_are_metrics_csv_and_what_export_writes(tmp_path):
    result = runner.invoke(app, train_args(tmp_path))
    assert result.exit_code == 0, result.output
    live = tmp_path / "tb"
    assert_mirrors_metrics_csv(live, tmp_path / "runs")

    exported = runner.invoke(app, ["export", "tensorboard", str(tmp_path / "runs"), "--logdir", str(tmp_path / "x")])
    assert exported.exit_code == 0, exported.output
    for name in NAMES:
        a, b = read_events(live / "tiny" / name), read_events(tmp_path / "x" / "tiny" / name)
        assert sorted(a.Tags()["scalars"]) == sorted(b.Tags()["scalars"])
        for tag in a.Tags()["scalars"]:
            assert scalar_series(a, tag) == scalar_series(b, tag), tag
        content = a.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        config = flatten(yaml.safe_load((tmp_path / "runs" / "tiny" / name / "config.yaml").read_text()))
        assert set(hparams) == set(config) and hparams["model.layers"].number_value == config["model.layers"]


@pytest.mark.parametrize("signal_at", [f"TERM@step=15@{NAMES[1]}", f"KILL@step=15@{NAMES[1]}",
                                       f"KILL@complete@{NAMES[1]}"],
                         ids=["stopped-at-step-15", "killed-at-step-15", "killed-after-its-test-row"])
def test_a_stopped_or_killed_run_resumed_draws_each_step_once(tmp_path, signal_at):
    """SIGTERM at step 15 (its events written out on the way; it resumes at 15 and logs step 10 again from
    metrics.csv), kill -9 at step 15 (resumed from the checkpoint at 10; whatever its writer had not written
    out is logged again) or kill -9 right after its test row was written and logged (the rerun drops that
    row and writes it again): TensorBoard shows metrics.csv, each step once, in one event file."""
    stopped = run_lstmlab(train_args(tmp_path), env={"LSTMLAB_TEST_SIGNAL": signal_at})
    if signal_at.startswith("TERM"):
        assert stopped.returncode == 130, stopped.stdout + stopped.stderr
        before = read_events(tmp_path / "tb" / "tiny" / NAMES[1])
        assert [step for step, _ in scalar_series(before, "val/loss")] == [10]
    else:
        assert stopped.returncode == -signal.SIGKILL, stopped.stdout + stopped.stderr
    resumed = run_lstmlab(train_args(tmp_path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming at step" in resumed.stdout
    assert_mirrors_metrics_csv(tmp_path / "tb", tmp_path / "runs")
    rows = RunFolder(tmp_path / "runs" / "tiny" / NAMES[1]).metrics()
    assert [(r["step"], r["split"]) for r in rows] == [(10, "train"), (10, "val"), (20, "train"), (20, "val"),
                                                      (20, "test")]


@pytest.mark.parametrize("executor, options, jobs", [("local", [], 2), ("submitit", ["cluster=debug"], 1)],
                         ids=["local-jobs-2", "submitit"])
def test_the_executors_carry_it(tmp_path, executor, options, jobs):
    cfg = load_config(write_config(tmp_path / "study.yaml", STUDY))
    outcomes = run_sweep(cfg, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data", quiet=True, jobs=jobs,
                         executor=executor, executor_options=options, tensorboard=tmp_path / "tb", log=lambda _: None)
    assert [o.status for o in outcomes] == ["completed"] * 2
    assert_mirrors_metrics_csv(tmp_path / "tb", tmp_path / "runs")


def test_a_missing_extra_or_an_unusable_folder_is_bad_input(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    result = runner.invoke(app, train_args(tmp_path)[:-1] + [str(tmp_path / "file" / "tb")])
    assert result.exit_code == 2 and "--tensorboard" in result.output and "Traceback" not in result.output
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # what an environment without the extra looks like
    result = runner.invoke(app, train_args(tmp_path))
    assert result.exit_code == 2, result.output
    assert "needs the [tensorboard] extra: pip install 'lstmlab[tensorboard]'" in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tb").exists(), "refused before anything started"
