"""What a clumsy user and a crowded machine do to lstmlab: a closed pipe, concurrent generations, killed
generations, a shared data folder, an edited metrics.csv, keys a model type ignores, and the memory a
config needs, checked before anything is allocated."""

from __future__ import annotations

import csv
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY, write_config
from typer.testing import CliRunner

from lstmlab.cli import app
from lstmlab.config import load_config, validate
from lstmlab.run.folder import RunFolder
from lstmlab.run.train import train
from lstmlab.tasks.datasets import dataset_dir, generate, load

runner = CliRunner()


def tiny_args(tmp_path: Path, *extra: str) -> list[str]:
    config = write_config(tmp_path / "tiny.yaml", TINY)
    return ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"), "-q",
            *extra]


def test_a_closed_stdout_is_not_a_failed_run(tmp_path):
    """`lstmlab train ... | head -1`: the run still completes, and the exit code is 0."""
    proc = subprocess.Popen([sys.executable, "-m", "lstmlab", *tiny_args(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("tiny: 1 run(s)")
    proc.stdout.close()  # what `head -1` does after its line
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "BrokenPipeError" not in err and "Traceback" not in err
    assert RunFolder(tmp_path / "runs" / "tiny" / "L1-lstm-s0").status() == "completed"


def test_train_says_it_generates_a_missing_dataset_and_prints_a_skipped_run_once(tmp_path):
    first = runner.invoke(app, tiny_args(tmp_path))
    assert first.exit_code == 0, first.output
    assert f"generating dataset {tmp_path / 'data'}" in first.output
    again = runner.invoke(app, tiny_args(tmp_path))
    assert again.exit_code == 0
    assert "generating dataset" not in again.output
    lines = [line for line in again.output.splitlines() if "L1-lstm-s0" in line]
    assert lines == ["L1-lstm-s0: skipped (already completed)", "skipped (already completed) (1): L1-lstm-s0"]


def test_print_config_writes_one_named_yaml_document_per_run(tmp_path):
    result = runner.invoke(app, tiny_args(tmp_path, "--sweep", "model.layers=1,2", "--print-config"))
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.stdout))
    assert [d["model"]["layers"] for d in documents] == [1, 2]
    assert "--- # run 1/2: L1-lstm-s0\n" in result.stdout and "--- # run 2/2: L2-lstm-s0\n" in result.stdout
    assert all(validate(d).sweep == {} for d in documents)


def test_a_key_the_model_type_ignores_is_named(tmp_path):
    result = runner.invoke(app, tiny_args(tmp_path, "--set", "model.type=gru", "--set", "model.forget_bias=3.0",
                                          "--print-config"))
    assert result.exit_code == 0, result.output
    assert ("note: model.forget_bias is ignored for model.type gru (it applies to scratch-lstm and lstm)"
            in result.output)


def test_help_shows_no_placeholder_for_flags_and_keeps_brackets():
    train_help = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "--quiet" in train_help and "<bool>" not in train_help
    compare_help = runner.invoke(app, ["compare", "--help"], env={"COLUMNS": "200"}).output
    assert "[plot]" in compare_help


def test_concurrent_generations_of_one_dataset_take_turns(tmp_path):
    """Four `lstmlab generate-data` of one task at once: all succeed, one folder, nothing left behind."""
    args = [sys.executable, "-m", "lstmlab", "generate-data", "--task", "copy", "--set", "task.n_train=3000",
            "--set", "task.seq_len=40", "--data-dir", str(tmp_path)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    folders = [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert len(folders) == 1 and (tmp_path / folders[0] / "meta.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [f".{folders[0]}.lock"]


def test_a_killed_generations_staging_folders_are_removed_and_folders_follow_the_umask(tmp_path):
    cfg = next(load_config(write_config(tmp_path / "c.yaml", TINY)).runs()).task
    folder = dataset_dir(cfg, tmp_path / "data")
    folder.parent.mkdir()
    for leftover in (f".{folder.name}-staging-4242", f".{folder.name}-k2j3h4"):  # this version's, and older
        (folder.parent / leftover).mkdir()
        (folder.parent / leftover / "train-inputs.npy").write_bytes(b"half written")
    previous = os.umask(0o022)
    try:
        generate(cfg, tmp_path / "data")
    finally:
        os.umask(previous)
    assert sorted(p.name for p in folder.parent.iterdir()) == [f".{folder.name}.lock", folder.name]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # readable by others in a shared data folder
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in folder.iterdir())


def test_a_metrics_csv_that_lost_a_column_gets_it_back_on_resume(tmp_path, monkeypatch):
    cfg = next(load_config(write_config(tmp_path / "c.yaml", TINY)).runs())
    dirs = dict(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data", quiet=True, log=lambda _: None)
    monkeypatch.setenv("LSTMLAB_TEST_SIGNAL", "INT@step=15")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, **dirs)
    monkeypatch.delenv("LSTMLAB_TEST_SIGNAL")
    run = RunFolder(tmp_path / "runs" / "tiny" / "L1-lstm-s0")
    path = run.path / "metrics.csv"
    rows = list(csv.DictReader(open(path)))
    with open(path, "w") as f:  # someone dropped the grad_norm column
        writer = csv.DictWriter(f, [c for c in rows[0] if c != "grad_norm"], extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    assert train(cfg, **dirs).status == "completed"
    header = path.read_text().splitlines()[0].split(",")
    assert header[-1] == "grad_norm"
    by_step = {(r["step"], r["split"]): r for r in run.metrics()}
    assert by_step[(10, "train")]["grad_norm"] is None  # the value that was dropped stays blank
    assert isinstance(by_step[(20, "train")]["grad_norm"], float)  # the rest is written again


# -- the memory a config needs ---------------------------------------------------------------------------


def test_the_memory_estimate_counts_what_a_run_holds(tmp_path):
    from lstmlab.memory import estimate_run
    from lstmlab.models.sequence import build_model, count_parameters

    cfg = next(load_config(write_config(tmp_path / "c.yaml", TINY)).runs())
    dataset = load(cfg.task, tmp_path / "data", log=lambda _: None)
    P = count_parameters(build_model(cfg.model, dataset.spec))
    parts = estimate_run(cfg, dataset).parts
    assert parts["dataset"] == sum(a.nbytes for s in dataset.splits.values() for a in s.values())
    assert parts["parameters and gradients"] == 2 * P * 4  # float32
    assert parts["optimizer state"] == 2 * P * 4  # adam: two moments
    T, B, H, E = 8, 16, 8, 2  # seq_len, batch, hidden, input features; eval batch 512 outweighs the train one
    train_batch = B * (T * 1 * H * 8 + T * E + 1 * 1 * 3) * 4
    eval_batch = 512 * (T * 1 * H * 2 + T * E + 1 * 1 * 2) * 4
    assert parts["activations for a batch of 16"] == max(train_batch, eval_batch)
    packed = estimate_run(cfg, dataset, members=4).parts
    assert packed["dataset"] == parts["dataset"] and packed["optimizer state"] == 4 * parts["optimizer state"]


def test_a_pack_that_does_not_fit_is_refused_naming_the_keys(tmp_path, monkeypatch):
    import torch

    from lstmlab import memory

    cfg = next(load_config(write_config(tmp_path / "c.yaml", TINY)).runs())
    dataset = load(cfg.task, tmp_path / "data", log=lambda _: None)
    one = memory.estimate_run(cfg, dataset).total
    monkeypatch.setattr(memory, "available", lambda device: (3 * one, "available in memory here"))
    memory.check_run(cfg, dataset, torch.device("cpu"), members=2)
    with pytest.raises(memory.TooBig, match=r"model.hidden_size=8, model.layers=1, train.batch_size=16, "
                                            r"task.seq_len=8: the run \(4 runs packed together\) needs about"):
        memory.check_run(cfg, dataset, torch.device("cpu"), members=4)
