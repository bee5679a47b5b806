"""Packed training: every member of a pack writes exactly the run folder it writes alone (float64, CPU)."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, write_config

import lstmlab.run.train
from lstmlab.config import validate
from lstmlab.run.sweep import run_sweep
from lstmlab.run.train import train_pack

TIMING = {"elapsed_s", "seq_per_s", "wall_s"}
# TINY trains on the CPU, whose parity this is: on an H100 the lr = 1.0 member drifted 4e-9 from its run alone
ADDING = {**TINY, "model": {"type": "scratch-lstm", "hidden_size": 6, "backend": "fused"},
          "train": {**TINY["train"], "dtype": "float64", "steps": 24, "eval_every": 6, "eval_batch_size": 24}}
COPY = {**ADDING, "task": {"name": "copy", "seq_len": 4, "n_symbols": 3, "alphabet": 4, "n_train": 128,
                           "n_val": 32, "n_test": 32}}

# Members differ in what a pack lets differ: seed, lr, clipping, early stopping, dropout, optimizer. Run
# names carry the lr (unique here). At a high lr with patience 1, one of the last two members stops early.
MEMBERS = [
    {"train.seed": 0, "train.lr": 0.01, "train.grad_clip": None},
    {"train.seed": 1, "train.lr": 0.03, "train.grad_clip": 0.5},
    {"train.seed": 2, "train.lr": 0.02, "train.grad_clip": 1.0, "model.dropout": 0.3},
    {"train.seed": 3, "train.lr": 0.3, "train.early_stop_patience": 1},
    {"train.seed": 3, "train.lr": 1.0, "train.early_stop_patience": 1},
]
NAN = {"train.seed": 4, "train.lr": 1e308, "train.grad_clip": None, "train.optimizer": "sgd"}
LR = ("train.lr",)


def configs(base: dict, layers: int, members: list[dict]):
    out = []
    for values in members:
        raw = json.loads(json.dumps(base))
        raw["model"]["layers"] = layers
        for key, value in values.items():
            if key == "model.dropout" and layers == 1:
                continue  # dropout acts between layers only
            section, name = key.split(".")
            raw[section][name] = value
        out.append(validate(raw))
    return out


def numbers(run: Path) -> tuple[list[dict], dict]:
    rows = []
    if (run / "metrics.csv").exists():  # a run that failed before its first evaluation has none
        with open(run / "metrics.csv") as f:
            rows = [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]
    summary = {k: v for k, v in json.loads((run / "summary.json").read_text()).items() if k not in TIMING}
    return rows, summary


def assert_close(a, b, where=""):
    """Equal structure; numbers (and numeric strings) equal within 1e-9 relative."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    else:
        try:
            x, y = float(a), float(b)
        except (TypeError, ValueError):
            assert a == b, where
            return
        if math.isnan(x):
            assert math.isnan(y), where
        else:
            assert x == pytest.approx(y, rel=1e-9, abs=1e-300), where


@pytest.mark.parametrize("base", [ADDING, COPY], ids=["adding", "copy"])
def test_every_member_of_a_pack_writes_the_run_it_writes_alone(tmp_path, base, monkeypatch):
    monkeypatch.setattr(lstmlab.run.train, "EVAL_SEQUENCES", 48)  # evaluations take the members two at a time
    quiet = dict(data_dir=tmp_path / "data", swept_keys=LR, quiet=True, log=lambda _: None)
    for layers in (1, 2):
        pack = configs(base, layers, [*MEMBERS, NAN])
        packed = train_pack(pack, runs_dir=tmp_path / "packed", **quiet)
        assert [r.status for r in packed] == ["completed"] * 5 + ["failed"]
        assert "loss became" in packed[-1].summary["error"]
        assert min(r.summary["step"] for r in packed[3:5]) < base["train"]["steps"], "no member stopped early"
        env = json.loads((packed[0].path / "env.json").read_text())
        assert env["pack"] == {"size": 6, "members": [r.name for r in packed]}
        for cfg, in_pack in zip(pack, packed, strict=True):
            alone = train_pack([cfg], runs_dir=tmp_path / "alone", **quiet)[0]
            assert alone.status == in_pack.status and alone.path.name == in_pack.path.name
            assert json.loads((alone.path / "env.json").read_text())["pack"]["size"] == 1
            assert_close(numbers(in_pack.path), numbers(alone.path), in_pack.path.name)



def test_a_refused_or_busy_member_leaves_the_rest_of_its_pack_training(tmp_path):
    from lstmlab.run.folder import RunFolder

    pack = configs(ADDING, 1, MEMBERS[:3])
    quiet = dict(data_dir=tmp_path / "data", swept_keys=LR, quiet=True, log=lambda _: None)
    runs = tmp_path / "runs" / "tiny"
    (runs / "L1-scratch-lstm-s1-lr0.03").mkdir(parents=True)
    (runs / "L1-scratch-lstm-s1-lr0.03" / "config.yaml").write_text("experiment: another\n")
    with RunFolder(runs / "L1-scratch-lstm-s2-lr0.02").lock():  # another trainer holds this one
        results = train_pack(pack, runs_dir=tmp_path / "runs", **quiet)
    assert [r.status for r in results] == ["completed", "refused", "busy"]
    assert "holds a run of a different config" in str(results[1].error)
    env = json.loads((results[0].path / "env.json").read_text())
    assert env["pack"] == {"size": 1, "members": ["L1-scratch-lstm-s0-lr0.01"]}
    alone = train_pack(pack[:1], runs_dir=tmp_path / "alone", **quiet)[0]
    assert_close(numbers(results[0].path), numbers(alone.path))

# -- whole studies through the command line: --pack, kill -9 and resume ---------------------------------

STUDY = {**ADDING, "train": {**ADDING["train"], "steps": 30, "eval_every": 10}, "sweep": {"train.seed": [0, 1, 2, 3]}}


def run_lstmlab(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstmlab", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def study_args(tmp_path: Path, runs: str, *more: str) -> list[str]:
    config = write_config(tmp_path / "study.yaml", STUDY)
    return ["train", str(config), "--runs-dir", str(tmp_path / runs), "--data-dir", str(tmp_path / "data"), "-q",
            *more]


def assert_same_study(a: Path, b: Path) -> None:
    names = sorted(p.name for p in (a / "tiny").iterdir())
    assert names == sorted(p.name for p in (b / "tiny").iterdir()) and len(names) == 4
    for name in names:
        rows, summary = numbers(a / "tiny" / name)
        assert summary["status"] == "completed" and [r["split"] for r in rows].count("test") == 1
        assert_close((rows, summary), numbers(b / "tiny" / name), name)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """The study trained uninterrupted, in packs of 4 (one pack)."""
    tmp = tmp_path_factory.mktemp("fresh")
    cfg = validate(STUDY)
    outcomes = run_sweep(cfg, runs_dir=tmp / "runs", data_dir=tmp / "data", pack=4, quiet=True, log=lambda _: None)
    assert [o.status for o in outcomes] == ["completed"] * 4
    return tmp / "runs"


def test_a_packed_study_writes_the_runs_of_pack_1(tmp_path, fresh):
    cfg = validate(STUDY)
    lines: list[str] = []
    run_sweep(cfg, runs_dir=tmp_path / "packed", data_dir=tmp_path / "data", pack=3, quiet=True, log=lines.append)
    assert "4 run(s) to train in 2 unit(s) of 2 (--pack 3: runs of one architecture train together)" in lines
    run_sweep(cfg, runs_dir=tmp_path / "single", data_dir=tmp_path / "data", pack=1, quiet=True, log=lambda _: None)
    assert_same_study(tmp_path / "packed", tmp_path / "single")
    assert_same_study(tmp_path / "single", fresh)
    env = json.loads((tmp_path / "packed" / "tiny" / "L1-scratch-lstm-s0" / "env.json").read_text())
    assert env["pack"] == {"size": 2, "members": ["L1-scratch-lstm-s0", "L1-scratch-lstm-s1"]}
    assert env["backend"] == "fused"


def test_killed_packed_study_resumes_with_members_regrouped_by_step(tmp_path, fresh):
    """kill -9 after step 15 of the first pack (checkpoints at 10; the second pack never started), then the
    same study again with bigger packs: two packs, at steps 10 and 0, and the numbers of an uninterrupted run."""
    killed = run_lstmlab(study_args(tmp_path, "runs", "--pack", "2"),
                     env={"LSTMLAB_TEST_SIGNAL": "KILL@step=15@L1-scratch-lstm-s1"})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    resumed = run_lstmlab(study_args(tmp_path, "runs", "--pack", "4"))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "in 2 unit(s) of 2 (--pack 4" in resumed.stdout
    assert resumed.stdout.count("resuming at step 10") == 2
    assert_same_study(tmp_path / "runs", fresh)


def test_kill_between_a_members_test_row_and_its_completion(tmp_path, fresh):
    """Killed after member s1 wrote its test row (s0 completed before it): the rerun skips s0, discards s1's
    uncommitted test row, and finishes s1, s2, s3 at their last step without training another step."""
    killed = run_lstmlab(study_args(tmp_path, "runs", "--pack", "4"),
                     env={"LSTMLAB_TEST_SIGNAL": "KILL@complete@L1-scratch-lstm-s1"})
    assert killed.returncode == -signal.SIGKILL
    resumed = run_lstmlab(study_args(tmp_path, "runs", "--pack", "4"))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "skipped (already completed) (1): L1-scratch-lstm-s0" in resumed.stdout
    assert resumed.stdout.count("resuming at step 30") == 3
    assert_same_study(tmp_path / "runs", fresh)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_a_killed_packed_study_resumes_on_cuda(tmp_path):
    """A checkpoint loads onto the run's device, generator states included; they must go back to the CPU (on an
    H100 every resume on CUDA failed with "RNG state must be a torch.ByteTensor"). Not yet run on a GPU."""
    config = write_config(tmp_path / "study.yaml", {**STUDY, "train": {**STUDY["train"], "device": "cuda"}})
    args = ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"), "-q",
            "--pack", "4"]
    killed = run_lstmlab(args, env={"LSTMLAB_TEST_SIGNAL": "KILL@step=15@L1-scratch-lstm-s1"})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    resumed = run_lstmlab(args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.count("resuming at step 10") == 4
    for run in (tmp_path / "runs" / "tiny").iterdir():
        rows, summary = numbers(run)
        assert summary["status"] == "completed" and summary["device"].startswith("cuda")
        assert [int(r["step"]) for r in rows if r["split"] == "val"] == [10, 20, 30]


def test_clip_grad_norms_is_torchs_clip_for_every_member_bitwise():
    from lstmlab.run.train import clip_grad_norms

    torch.manual_seed(0)
    members = [[torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in ((7, 3), (7,), (2, 7))]
               for _ in range(3)]
    for params in members:
        for p in params:
            p.grad = torch.randn_like(p) * 3
    twins = [[p.detach().clone().requires_grad_() for p in params] for params in members]
    for params, twin in zip(members, twins, strict=True):
        for p, q in zip(params, twin, strict=True):
            q.grad = p.grad.clone()
    max_norms = [1.0, math.inf, 100.0]
    norms = clip_grad_norms(members, max_norms)
    for k, twin in enumerate(twins):
        assert torch.equal(norms[k], torch.nn.utils.clip_grad_norm_(twin, max_norms[k]))
        for p, q in zip(members[k], twin, strict=True):
            assert torch.equal(p.grad, q.grad)
    assert norms[0] > 1.0  # the first member was clipped: its gradients changed


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_a_bad_pack_size_is_bad_input(tmp_path, value):
    from typer.testing import CliRunner

    from lstmlab.cli import app

    config = write_config(tmp_path / "study.yaml", STUDY)
    result = CliRunner().invoke(app, ["train", str(config), "--pack", value, "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and f"--pack: expected a positive integer or auto, got '{value}'" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("split, task, lr, step", [("val", {"n_val": 4096}, 4e152, 6),
                                                   ("test", {"n_test": 65536}, 5e152, 24)])
def test_a_member_whose_evaluation_is_not_finite_fails_alone(tmp_path, split, task, lr, step):
    """At these learning rates the training loss stays finite (1e305 to 1e306), but an evaluation sums
    squared errors over 4096 validation (or, at the best weights, 65536 test) sequences and overflows to
    inf: that member fails, naming the metric, the value and the step, instead of completing with an inf
    metric; the other member writes the run it writes alone. (At lr 2e153 the training loss overflows
    first; at 1e30 everything stays finite, about 1e60.)"""
    base = {**ADDING, "task": {**ADDING["task"], **task}}
    pack = configs(base, 1, [{"train.seed": 1, "train.lr": 0.01}, {"train.seed": 0, "train.lr": lr}])
    quiet = dict(data_dir=tmp_path / "data", swept_keys=LR, quiet=True, log=lambda _: None)
    healthy, diverged = train_pack(pack, runs_dir=tmp_path / "packed", **quiet)
    assert diverged.status == "failed"
    assert diverged.summary["error"] == f"FloatingPointError: {split} loss became inf at step {step}"
    assert json.loads((diverged.path / "summary.json").read_text())["status"] == "failed"
    rows, _ = numbers(diverged.path)
    assert all(math.isfinite(float(r["loss"])) for r in rows) and "test" not in [r["split"] for r in rows]
    assert healthy.status == "completed"
    alone = train_pack(pack[:1], runs_dir=tmp_path / "alone", **quiet)[0]
    assert_close(numbers(healthy.path), numbers(alone.path))
