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


def interrupted_at_step_15(tmp_path, monkeypatch):
    """The tiny config's run, trained until a SIGINT at step 15 (a test hook): (its config, train's folders)."""
    cfg = next(load_config(write_config(tmp_path / "c.yaml", TINY)).runs())
    dirs = dict(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data", quiet=True, log=lambda _: None)
    monkeypatch.setenv("LSTMLAB_TEST_SIGNAL", "INT@step=15")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, **dirs)
    monkeypatch.delenv("LSTMLAB_TEST_SIGNAL")
    return cfg, dirs


def test_a_metrics_csv_that_lost_a_column_gets_it_back_on_resume(tmp_path, monkeypatch):
    cfg, dirs = interrupted_at_step_15(tmp_path, monkeypatch)
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


# -- shared folders: names planted by someone else ------------------------------------------------------


def test_a_lock_planted_as_a_symlink_is_refused_and_its_target_kept(tmp_path):
    """Before: `train` opened runs/.../.lock through the link and truncated its target (exit 0)."""
    secret = tmp_path / "secret"
    secret.write_text("SECRET\n")
    run = tmp_path / "runs" / "tiny" / "L1-lstm-s0"
    run.mkdir(parents=True)
    (run / ".lock").symlink_to(secret)
    result = runner.invoke(app, tiny_args(tmp_path))
    assert result.exit_code == 2, result.output
    assert f"{run / '.lock'}: is a symbolic link" in " ".join(result.output.split())
    assert secret.read_text() == "SECRET\n"
    assert not (run / "config.yaml").exists()


def test_a_run_file_planted_as_a_symlink_is_neither_read_nor_written(tmp_path, monkeypatch):
    """An interrupted run whose metrics.csv someone replaced by a link: the resume refuses the folder, naming
    the file, and the link's target is neither written nor copied into the run folder."""
    cfg, dirs = interrupted_at_step_15(tmp_path, monkeypatch)
    run = tmp_path / "runs" / "tiny" / "L1-lstm-s0"
    secret = tmp_path / "secret.csv"
    secret.write_text("step,split\n1,SECRET\n")
    (run / "metrics.csv").unlink()
    (run / "metrics.csv").symlink_to(secret)
    result = runner.invoke(app, tiny_args(tmp_path))
    assert result.exit_code == 2, result.output
    assert f"{run / 'metrics.csv'} is a symbolic link" in " ".join(result.output.split())
    assert secret.read_text() == "step,split\n1,SECRET\n" and (run / "metrics.csv").is_symlink()


@pytest.mark.parametrize("name", ["metrics.csv", "diagnostics.csv"])
def test_appending_rows_never_writes_through_a_link_or_into_a_fifo(tmp_path, name):
    from lstmlab.errors import UserError
    from lstmlab.files import UnwritableFile

    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("step\n")
    (run.path / name).symlink_to(secret)
    with pytest.raises(UnwritableFile, match="is a symbolic link"):
        run.append_metrics([{"step": 1}], ["step"], name)
    assert secret.read_text() == "step\n"
    (run.path / name).unlink()
    os.mkfifo(run.path / name)  # no reader: an open that blocked would hang here
    with pytest.raises(UserError, match="FIFO"):  # refused by the read of its header or by the open
        run.append_metrics([{"step": 1}], ["step"], name)
    (run.path / name).unlink()
    os.link(secret, run.path / name)  # a hard link to a file elsewhere
    with pytest.raises(UnwritableFile, match="hard link"):
        run.append_metrics([{"step": 1}], ["step"], name)
    assert secret.read_text() == "step\n"


def test_a_dataset_lock_planted_as_a_symlink_creates_nothing(tmp_path):
    """The generation lock beside a dataset: a dangling link there made `generate-data` create its target."""
    cfg = next(load_config(write_config(tmp_path / "c.yaml", TINY)).runs()).task
    folder = dataset_dir(cfg, tmp_path / "data")
    folder.parent.mkdir()
    target = tmp_path / "elsewhere" / "created-by-lstmlab"
    target.parent.mkdir()
    (folder.parent / f".{folder.name}.lock").symlink_to(target)
    result = runner.invoke(app, ["generate-data", str(tmp_path / "c.yaml"), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    assert f".{folder.name}.lock: is a symbolic link" in " ".join(result.output.split())
    assert not target.exists() and not folder.exists()


def test_a_dataset_is_written_in_a_folder_only_its_writer_can_enter(tmp_path, monkeypatch):
    """While a dataset is written, its staging folder is mode 0700 (no one else plants a link in it), and
    the finished folder gets the umask's mode."""
    import numpy as np

    from lstmlab.tasks import datasets

    cfg = next(load_config(write_config(tmp_path / "c.yaml", TINY)).runs()).task
    modes = []
    real_save = np.save

    def save(path, *args, **kwargs):
        modes.append(stat.S_IMODE(Path(path).parent.stat().st_mode))
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(datasets.np, "save", save)
    previous = os.umask(0o002)  # a shared, group-writable data folder
    try:
        folder = generate(cfg, tmp_path / "data")
    finally:
        os.umask(previous)
    assert modes and set(modes) == {0o700}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o775


def test_force_deletes_only_a_dataset_folder(tmp_path):
    """Runs and data in one folder, and an experiment named like the dataset's folder: `generate-data
    --force` deleted the runs. Now only a folder holding a dataset's files and meta.json is replaced."""
    cfg_path = write_config(tmp_path / "c.yaml", TINY)
    shared = tmp_path / "shared"
    folder = dataset_dir(next(load_config(cfg_path).runs()).task, shared)
    base = ["--runs-dir", str(shared), "--data-dir", str(shared), "-q"]
    assert runner.invoke(app, ["train", str(cfg_path), *base]).exit_code == 0
    result = runner.invoke(app, ["train", str(cfg_path), *base, "--set", f"experiment={folder.name}"])
    assert result.exit_code == 0, result.output
    runs = folder / "L1-lstm-s0"
    assert (runs / "summary.json").exists()
    result = runner.invoke(app, ["generate-data", str(cfg_path), "--data-dir", str(shared), "--force"])
    assert result.exit_code == 2, result.output
    assert f"{folder} holds folders or links" in " ".join(result.output.split())
    assert (runs / "summary.json").exists() and (folder / "meta.json").exists()
    # an experiment folder where the dataset would be (no meta.json): refused too
    other = tmp_path / "other"
    experiment = dataset_dir(next(load_config(cfg_path).runs()).task, other)
    (experiment / "L1-lstm-s0").mkdir(parents=True)
    (experiment / "notes.txt").write_text("mine")
    (experiment / "L1-lstm-s0").rmdir()
    result = runner.invoke(app, ["generate-data", str(cfg_path), "--data-dir", str(other), "--force"])
    assert result.exit_code == 2 and f"{experiment} has no meta.json" in " ".join(result.output.split())
    assert (experiment / "notes.txt").read_text() == "mine"
    # a dataset is replaced
    (runs.parent / "L1-lstm-s0").rename(tmp_path / "moved")
    result = runner.invoke(app, ["generate-data", str(cfg_path), "--data-dir", str(shared), "--force"])
    assert result.exit_code == 0, result.output
    assert (folder / "meta.json").exists() and not (folder / "L1-lstm-s0").exists()


# -- sweeps too large to walk --------------------------------------------------------------------------------


def test_a_sweep_of_a_billion_points_is_refused_at_once(tmp_path):
    """1000 × 1000 × 1000: every point was walked before planning (no output, no refusal after 60 s)."""
    import time

    values = ",".join(map(str, range(1, 1001)))
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "lstmlab", *tiny_args(tmp_path, "--sweep", f"train.seed={values}",
                            "--sweep", f"train.lr={values}", "--sweep", f"model.hidden_size={values}")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - start < 30
    message = " ".join(result.stderr.split())
    assert ("sweep: 1,000,000,000 points (train.seed 1000 (--sweep) × train.lr 1000 (--sweep) × model.hidden_size "
            "1000 (--sweep)) is more than the limit of 10,000 runs in one sweep") in message
    assert "LSTMLAB_MAX_SWEEP_POINTS=N" in message and "Traceback" not in message
    assert not (tmp_path / "runs").exists()


def test_the_sweep_limit_can_be_raised_and_a_large_sweep_says_what_it_does(tmp_path):
    """LSTMLAB_MAX_SWEEP_POINTS raises the limit; a sweep of thousands of points says it is checking them
    before the minutes of silence that follow (a real process, read line by line, then stopped)."""
    import select
    import signal

    seeds = ",".join(map(str, range(20_000)))
    env = {**os.environ, "LSTMLAB_MAX_SWEEP_POINTS": "nope"}
    bad = subprocess.run([sys.executable, "-m", "lstmlab", *tiny_args(tmp_path, "--sweep", f"train.seed={seeds}")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "LSTMLAB_MAX_SWEEP_POINTS=nope: expected a positive integer" in bad.stderr
    env["LSTMLAB_MAX_SWEEP_POINTS"] = "20000"
    proc = subprocess.Popen([sys.executable, "-m", "lstmlab", *tiny_args(tmp_path, "--sweep", f"train.seed={seeds}")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 30)
        assert ready, "nothing said within 30 s"
        line = proc.stderr.readline()
        assert line.startswith("checking the sweep's 20,000 points"), line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


# -- a full disk ---------------------------------------------------------------------------------------------


def test_a_full_disk_names_the_file_and_a_rerun_resumes(tmp_path):
    """Run folders on a real 32 KiB tmpfs: the first checkpoint does not fit. The run fails (exit 1) naming
    the file and saying that a rerun resumes; with room made (the tmpfs grown), the same command completes."""
    from mounts import shell_in, tmpfs

    disk = tmp_path / "disk"
    disk.mkdir()
    args = " ".join(f"'{a}'" for a in tiny_args(tmp_path))
    args = args.replace(f"'{tmp_path / 'runs'}'", f"'{disk / 'runs'}'")
    assert runner.invoke(app, ["generate-data", str(tmp_path / "tiny.yaml"), "--data-dir",
                               str(tmp_path / "data")]).exit_code == 0  # the data is not on the small disk
    result = shell_in(f"""{tmpfs(disk, "32k")}
"$PYTHON" -m lstmlab {args}; echo "first exit $?"
mount -o remount,size=4m '{disk}'
"$PYTHON" -m lstmlab {args}; echo "second exit $?"
cat '{disk}/runs/tiny/L1-lstm-s0/summary.json'""")
    out = result.stdout
    first, second = out.split("first exit ")[1].split("\n", 1)[0], out.split("second exit ")[1].split("\n", 1)[0]
    assert first == "1", result.stdout + result.stderr
    run = disk / "runs" / "tiny" / "L1-lstm-s0"
    message = " ".join(out.split())
    assert f"L1-lstm-s0: failed — OSError: [Errno 28] No space left on device: '{run / 'checkpoint.pt'}'" in message
    assert f"the disk holding {run} is full: free space on it and run the same command again" in message
    assert "Traceback" not in result.stderr
    assert second == "0" and '"status": "completed"' in out


def test_set_on_a_sweep_key_sets_that_axis(tmp_path):
    """`--set sweep.model.layers=[1,2]` was read as sweep → model → layers and blamed on the config file."""
    config = tmp_path / "tiny.yaml"
    write_config(config, TINY)
    config.write_text(config.read_text() + "sweep:\n")  # left empty
    result = runner.invoke(app, ["train", str(config), "--set", "sweep.model.layers=[1,2]", "--print-config",
                                 "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert [d["model"]["layers"] for d in yaml.safe_load_all(result.stdout)] == [1, 2]


def test_a_metrics_csv_with_a_line_before_its_header_is_named_on_resume_and_export(tmp_path, monkeypatch):
    """A line written above metrics.csv's header (by hand, or another program): the resume refuses the run naming
    the file (it had resumed into a table whose rows all failed to parse), export exits 2 naming it, and
    --restart trains the run again."""
    interrupted_at_step_15(tmp_path, monkeypatch)
    path = tmp_path / "runs" / "tiny" / "L1-lstm-s0" / "metrics.csv"
    path.write_text("exported by a spreadsheet\n" + path.read_text())
    resumed = runner.invoke(app, tiny_args(tmp_path))
    assert resumed.exit_code == 2, resumed.output
    assert f"{path}: its first line (exported by a spreadsheet) is not the header" in " ".join(resumed.output.split())
    exported = runner.invoke(app, ["export", "tensorboard", str(tmp_path / "runs"), "--logdir", str(tmp_path / "tb")])
    assert exported.exit_code == 2 and str(path) in " ".join(exported.output.split()), exported.output
    assert "Traceback" not in resumed.output + exported.output
    assert runner.invoke(app, tiny_args(tmp_path, "--restart")).exit_code == 0
    assert RunFolder(path.parent).metrics()[0]["step"] > 0


def test_compare_names_a_binary_metrics_csv_left_out_of_its_plot(tmp_path):
    pytest.importorskip("matplotlib")
    assert runner.invoke(app, tiny_args(tmp_path)).exit_code == 0
    path = tmp_path / "runs" / "tiny" / "L1-lstm-s0" / "metrics.csv"
    path.write_bytes(bytes(range(256)) * 8)
    result = runner.invoke(app, ["compare", str(tmp_path / "runs"), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output  # the verdict's numbers come from summary.json
    assert f"warning: no curve drawn for this run: {path}: is not a text file" in " ".join(result.output.split())


def test_run_files_are_as_readable_as_the_umask_allows(tmp_path):
    """A run folder in a shared runs dir: config.yaml, summary.json, env.json and checkpoint.pt get 0o666 minus
    the umask (they had mkstemp's 0o600, unreadable to the group that compares the study)."""
    old = os.umask(0o022)
    try:
        assert runner.invoke(app, tiny_args(tmp_path)).exit_code == 0
    finally:
        os.umask(old)
    run = tmp_path / "runs" / "tiny" / "L1-lstm-s0"
    modes = {name: stat.S_IMODE((run / name).stat().st_mode)
             for name in ("config.yaml", "summary.json", "env.json", "checkpoint.pt", "metrics.csv")}
    assert modes == dict.fromkeys(modes, 0o644), modes
    assert not [p.name for p in run.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # no temp file left
