"""train.diagnostics_every: diagnostics.csv rows while a run trains, alone or in a pack, killed and resumed,
and the run's own numbers unchanged (float64, CPU)."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from conftest import write_config
from test_pack_training import ADDING, assert_close, numbers, run_lstmlab

from lstmlab.config import validate
from lstmlab.errors import UserError
from lstmlab.models.sequence import build_model
from lstmlab.run.diagnostics import PROBE_SIZE, check_traceable, diagnostics_row
from lstmlab.run.folder import DIAGNOSTICS, RunFolder
from lstmlab.run.sweep import run_sweep
from lstmlab.run.train import train_pack
from lstmlab.tasks import make_task
from lstmlab.tasks.datasets import load as load_dataset

EVERY = 5
STUDY = {**ADDING, "train": {**ADDING["train"], "steps": 20, "eval_every": 10, "diagnostics_every": EVERY},
         "sweep": {"train.seed": [0, 1]}}
NAMES = ["L1-scratch-lstm-s0", "L1-scratch-lstm-s1"]


def diagnostics(runs, name: str) -> list[dict]:
    return RunFolder(runs / "tiny" / name).metrics(DIAGNOSTICS)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """The study (seeds 0 and 1) trained uninterrupted as one pack of 2."""
    tmp = tmp_path_factory.mktemp("packed")
    outcomes = run_sweep(validate(STUDY), runs_dir=tmp / "runs", data_dir=tmp / "data", pack=2, quiet=True,
                         log=lambda _: None)
    assert [o.status for o in outcomes] == ["completed"] * 2
    return tmp


def test_rows_every_n_steps_measured_at_the_weights_of_that_step(packed):
    for name in NAMES:
        rows = diagnostics(packed / "runs", name)
        assert [r["step"] for r in rows] == [0, 5, 10, 15, 20]
        assert {"loss", "grad_x_first", "grad_x_last", "l0_grad_c_first", "l0_f_saturated"} <= rows[0].keys()
        assert len({r["loss"] for r in rows}) == 5, "the weights changed between rows"

    # the last row is the trace of the weights the run ended with (its checkpoint's, at step 20)
    run = RunFolder(packed / "runs" / "tiny" / NAMES[1])
    cfg = validate(run.config())
    dataset = load_dataset(cfg.task, packed / "data")
    model = build_model(cfg.model, dataset.spec).double()
    model.load_state_dict(run.load_checkpoint()["model"])
    probe = {k: torch.from_numpy(v[:PROBE_SIZE]) for k, v in dataset.splits["val"].items()}
    probe["inputs"] = probe["inputs"].double()
    expected = diagnostics_row(model, probe, make_task(cfg.task).loss, 20)
    assert_close(diagnostics(packed / "runs", NAMES[1])[-1], expected)


def test_a_member_of_a_pack_writes_the_rows_it_writes_alone_and_the_same_metrics_as_without(packed, tmp_path):
    quiet = dict(data_dir=packed / "data", quiet=True, log=lambda _: None)
    with_rows = validate({**STUDY, "sweep": {}, "train": {**STUDY["train"], "seed": 1}})
    alone = train_pack([with_rows], runs_dir=tmp_path / "alone", **quiet)[0]
    assert_close(RunFolder(alone.path).metrics(DIAGNOSTICS), diagnostics(packed / "runs", NAMES[1]))

    without = with_rows.model_copy(update={"train": with_rows.train.model_copy(update={"diagnostics_every": None})})
    plain = train_pack([without], runs_dir=tmp_path / "plain", **quiet)[0]
    assert not (plain.path / DIAGNOSTICS).exists()
    assert_close(numbers(plain.path), numbers(alone.path))
    assert_close(numbers(plain.path), numbers(packed / "runs" / "tiny" / NAMES[1]))


@pytest.mark.parametrize("kill_at", [15, 7], ids=["after-a-checkpoint", "before-the-first-checkpoint"])
def test_killed_and_resumed_run_has_each_row_once_and_the_rows_of_an_uninterrupted_run(packed, tmp_path, kill_at):
    """kill -9 at step 15 (checkpoint at 10: rows 0, 5, 10 kept, 15 redone) or at step 7 (no checkpoint yet:
    the run starts over and writes its step-0 row again), then the same command again."""
    config = write_config(tmp_path / "study.yaml", STUDY)
    args = ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"), "-q",
            "--pack", "2"]
    killed = run_lstmlab(args, env={"LSTMLAB_TEST_SIGNAL": f"KILL@step={kill_at}@{NAMES[1]}"})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    steps = [r["step"] for r in diagnostics(tmp_path / "runs", NAMES[1])]
    assert steps == [s for s in (0, 5, 10, 15) if s <= kill_at]
    resumed = run_lstmlab(args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.count("resuming at step 10") == (2 if kill_at == 15 else 0)
    for name in NAMES:
        rows = diagnostics(tmp_path / "runs", name)
        assert [r["step"] for r in rows] == [0, 5, 10, 15, 20]
        assert_close(rows, diagnostics(packed / "runs", name), name)
        assert_close(numbers(tmp_path / "runs" / "tiny" / name), numbers(packed / "runs" / "tiny" / name), name)
    summary = json.loads((tmp_path / "runs" / "tiny" / NAMES[0] / "summary.json").read_text())
    assert summary["status"] == "completed"


def test_a_core_that_cannot_be_traced_is_refused_before_training():
    class Plugin(torch.nn.Module):
        core = torch.nn.Linear(2, 2)

    with pytest.raises(UserError, match="train.diagnostics_every: cannot trace a Linear"):
        check_traceable(Plugin())
