"""Run folders: the lock (a real second process), the refusal of a folder that holds another run, the
config hash in the checkpoint, the completion transition, and the format every summary says.
Reading them back: tests/test_reader.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from lstmlab.errors import UserError
from lstmlab.run.folder import FORMAT, RunBusy, RunFolder, RunRefused, config_sha256

CONFIG = {"experiment": "x", "model": {"layers": 1}}
OTHER = {"experiment": "x", "model": {"layers": 2}}

HOLD_LOCK = textwrap.dedent("""
    import sys
    from lstmlab.run.folder import RunFolder
    with RunFolder(sys.argv[1]).lock():
        print("locked", flush=True)
        sys.stdin.read()   # hold the lock until the test closes stdin, or kills this process
""")


def hold_lock(path) -> subprocess.Popen:
    """A second process that takes the run folder's lock and holds it; returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "locked\n"
    return proc


def test_a_locked_run_folder_is_busy_for_another_process_and_free_after_it_is_killed(tmp_path):
    run = RunFolder(tmp_path / "run")
    holder = hold_lock(run.path)
    with pytest.raises(RunBusy) as busy:
        with run.lock():
            pass
    assert str(busy.value) == (f"{run.path} is being trained by another process "
                               f"(pid {holder.pid} on host {socket.gethostname()}); skipped")
    holder.send_signal(signal.SIGKILL)  # the kernel drops a dead process's lock: nothing to clean up
    holder.wait()
    with run.lock():
        assert (run.path / ".lock").read_text() == f"pid {os.getpid()} on host {socket.gethostname()}"
    assert (run.path / ".lock").read_text() == ""


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    run = RunFolder(tmp_path)
    with run.lock():
        with pytest.raises(RunBusy, match=f"pid {os.getpid()} "):
            with RunFolder(tmp_path).lock():
                pass


def test_prepare_says_new_resume_or_completed(tmp_path):
    run = RunFolder(tmp_path)
    assert run.prepare(CONFIG) == "new"
    run.write_config("experiment: x\nmodel: {layers: 1}\n")
    run.write_summary({"status": "running"})
    assert run.prepare(CONFIG) == "new"  # started, never checkpointed: it starts over
    run.save_checkpoint({"step": 3}, config=CONFIG)
    assert run.prepare(CONFIG) == "resume"
    run.write_summary({"status": "completed"})
    assert run.prepare(CONFIG) == "completed"
    assert run.prepare(CONFIG, restart=True) == "new"
    assert not any((tmp_path / name).exists() for name in ("config.yaml", "summary.json", "checkpoint.pt"))


def test_prepare_refuses_a_folder_without_config_or_with_another_config(tmp_path):
    run = RunFolder(tmp_path)
    run.save_checkpoint({"step": 3}, config=CONFIG)
    with pytest.raises(RunRefused, match=f"run folder {tmp_path} holds checkpoint.pt but no config.yaml") as e:
        run.prepare(CONFIG)
    assert isinstance(e.value, UserError) and "--restart" in str(e.value)
    run.write_config("experiment: x\nmodel: {layers: 1}\n")
    with pytest.raises(RunRefused, match=f"run folder {tmp_path} holds a run of a different config"):
        run.prepare(OTHER)


def test_prepare_removes_temporary_files_of_a_killed_writer(tmp_path):
    run = RunFolder(tmp_path)
    (tmp_path / ".checkpoint.pt.k3j2l1").write_bytes(b"half a checkpoint")
    (tmp_path / ".keep.me").write_text("not lstmlab's")
    run.prepare(CONFIG)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep.me"]


def test_a_checkpoint_is_stamped_with_its_config_and_refused_under_another(tmp_path):
    run = RunFolder(tmp_path)
    run.save_checkpoint({"step": 3, "w": torch.ones(2)}, config=CONFIG)
    state = run.load_checkpoint(config=CONFIG)
    assert state["step"] == 3 and state["config_sha256"] == config_sha256(CONFIG)
    with pytest.raises(RunRefused, match="checkpoint.pt was saved under another config"):
        run.load_checkpoint(config=OTHER)
    assert config_sha256(CONFIG) == config_sha256({"model": {"layers": 1}, "experiment": "x"})  # key order


def test_complete_commits_with_the_summary_and_a_resume_drops_an_uncommitted_test_row(tmp_path):
    run = RunFolder(tmp_path)
    columns = ["step", "split", "loss"]
    run.append_metrics([{"step": 10, "split": "train", "loss": 1.0}, {"step": 10, "split": "val", "loss": 2.0}],
                       columns)
    run.append_metrics([{"step": 10, "split": "test", "loss": 3.0}], columns)  # a kill came before the summary
    run.truncate_metrics(10)
    assert [r["split"] for r in run.metrics()] == ["train", "val"]
    with pytest.raises(ValueError, match="status 'completed'"):
        run.complete({"step": 10, "split": "test", "loss": 3.0}, columns, {"status": "running"})
    run.complete({"step": 10, "split": "test", "loss": 3.0}, columns, {"status": "completed"})
    assert [r["split"] for r in run.metrics()] == ["train", "val", "test"] and run.status() == "completed"


def test_every_summary_written_says_this_versions_format_first(tmp_path):
    folder = RunFolder(tmp_path)
    folder.write_summary({"status": "running", "run": "x"})
    assert json.loads((tmp_path / "summary.json").read_text()) == {"format": FORMAT, "status": "running", "run": "x"}
    assert list(json.loads((tmp_path / "summary.json").read_text()))[0] == "format"
    folder.write_summary({"format": 1, "status": "interrupted"})  # an earlier version's summary, rewritten now
    assert json.loads((tmp_path / "summary.json").read_text()) == {"format": FORMAT, "status": "interrupted"}
