"""TensorBoard export and live logging, read back with TensorBoard's own event reader: every scalar equals
its metrics.csv cell, each group's mean/min/max runs equal compare's numbers, hparams are the config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from scalar_tags import assert_each_quantity_once, expected_tags
from typer.testing import CliRunner

from lstmlab.analysis.export import flatten
from lstmlab.analysis.export.tensorboard import TensorBoardLog, export_tensorboard
from lstmlab.cli import app
from lstmlab.run.folder import RunFolder, find_runs

pytest.importorskip("tensorboardX", reason="the [tensorboard] extra (in [dev])")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard's event reader (in [dev])")
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

runner = CliRunner()


def read_events(folder) -> event_accumulator.EventAccumulator:
    events = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    events.Reload()
    return events


def scalar_series(events, tag) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def csv_series(rows, tag) -> list[tuple[int, float]]:
    split, column = tag.split("/", 1)
    return [(r["step"], float(np.float32(r[column]))) for r in rows
            if r["split"] == split and isinstance(r.get(column), (int, float))]


@pytest.fixture(scope="module")
def exported(tiny_study, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("tb")
    result = runner.invoke(app, ["export", "tensorboard", str(tiny_study), "--logdir", str(logdir)])
    assert result.exit_code == 0, result.output
    assert "4 run(s) and 2 group(s)" in result.output
    return logdir


def test_every_scalar_equals_its_metrics_csv_cell(tiny_study, exported):
    for folder in find_runs([tiny_study]):
        rows = folder.metrics()
        events = read_events(exported / "tiny" / folder.path.name)
        tags = events.Tags()["scalars"]
        assert set(tags) == expected_tags(rows)
        assert_each_quantity_once(tags)
        for tag in tags:
            assert scalar_series(events, tag) == csv_series(rows, tag), tag


def test_group_runs_hold_compares_numbers(tiny_study, exported):
    result = runner.invoke(app, ["compare", str(tiny_study), "--format", "json"])
    groups = json.loads(result.stdout)["groups"]  # compare's contract: key, n, mean, runs[].value, ...
    assert [g["key"] for g in groups] == [{"model.layers": 1}, {"model.layers": 2}]
    for group in groups:
        where = exported / "tiny" / "groups" / f"model.layers={group['key']['model.layers']}"
        mean, low, high = (read_events(where / s) for s in ("mean", "min", "max"))
        values = [r["value"] for r in group["runs"]]
        assert mean.Scalars("test/mse")[-1].value == np.float32(group["mean"])
        assert low.Scalars("test/mse")[-1].value == np.float32(min(values))
        assert high.Scalars("test/mse")[-1].value == np.float32(max(values))
        curves = [RunFolder(r["path"]).metrics() for r in group["runs"]]
        for step, value in scalar_series(mean, "val/loss"):
            at = [r["loss"] for rows in curves for r in rows if r["split"] == "val" and r["step"] == step]
            assert len(at) == group["n"] == 2 and value == np.float32(np.mean(at))
        assert [step for step, _ in scalar_series(high, "val/loss")] == [10, 20]


def test_hparams_are_each_runs_config(tiny_study, exported):
    for folder in find_runs([tiny_study]):
        events = read_events(exported / "tiny" / folder.path.name)
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        config = flatten(yaml.safe_load((folder.path / "config.yaml").read_text()))
        assert hparams["model.layers"].number_value == config["model.layers"]
        assert hparams["model.type"].string_value == "lstm"
        assert hparams["train.seed"].number_value == config["train.seed"]
        assert hparams["model.param_budget"].string_value == "null"
        assert set(hparams) == set(config)


def test_exporting_again_replaces_instead_of_adding(tiny_study, exported):
    run = exported / "tiny" / "L1-lstm-s0"
    before = scalar_series(read_events(run), "val/mse")
    export_tensorboard([tiny_study], exported)
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert scalar_series(read_events(run), "val/mse") == before


def test_live_logging_draws_a_redone_step_once(tmp_path):
    """A run logs steps 10, 20, 30, crashes after 30 and resumes from its checkpoint at 20: 30 is redone."""
    first = TensorBoardLog(tmp_path)
    first.log_hparams("exp/L1-lstm-s0", {"model": {"layers": 1}, "train": {"lr": 0.01}})
    for step, loss in ((10, 0.5), (20, 0.4), (30, 0.3)):
        first.log_evaluation("exp/L1-lstm-s0", [{"step": step, "split": "val", "loss": loss}])
    first.close()
    resumed = TensorBoardLog(tmp_path)
    for step, loss in ((30, 0.35), (40, 0.2)):
        resumed.log_evaluation("exp/L1-lstm-s0", [{"step": step, "split": "val", "loss": loss}])
    resumed.close()
    assert len(list((tmp_path / "exp" / "L1-lstm-s0").glob("events.out.tfevents.*"))) == 2
    series = scalar_series(read_events(tmp_path / "exp" / "L1-lstm-s0"), "val/loss")
    assert series == [(10, np.float32(0.5)), (20, np.float32(0.4)), (30, np.float32(0.35)), (40, np.float32(0.2))]


def test_bad_paths_and_keys_exit_2(tiny_study, tmp_path):
    for args in (["export", "tensorboard", str(tmp_path / "nowhere"), "--logdir", str(tmp_path / "tb")],
                 ["export", "tensorboard", str(tiny_study), "--logdir", str(tmp_path / "tb"), "--by", "model.nope"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "tb").exists(), "nothing is written before the input is checked"
