"""`lstmlab runs [PATH]`: one line per run folder, by experiment, on real folders in every state — completed,
failed (a NaN loss), interrupted (SIGTERM), killed with -9 (stale: summary says running, no live process holds
its lock) and one whose lock a live second process holds (running) — as a table and as JSON."""

from __future__ import annotations

import json
import signal
import socket

import pytest
from conftest import TINY, write_config
from test_pack_training import run_lstmlab
from test_runs import hold_lock
from typer.testing import CliRunner

from lstmlab.analysis.runs import natural
from lstmlab.cli import app

runner = CliRunner()
STUDY = {**TINY, "sweep": {"model.layers": [1, 2, 3]}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs/tiny: L1 completed, L2 killed with -9 at step 10, L3 never started; runs/stopped: L1 stopped by
    SIGTERM at step 10; runs/broken: L1 failed (its loss became NaN)."""
    root = tmp_path_factory.mktemp("listing")
    config = str(write_config(root / "study.yaml", STUDY))
    common = ["--runs-dir", str(root / "runs"), "--data-dir", str(root / "data"), "-q"]
    killed = run_lstmlab(["train", config, *common], env={"LSTMLAB_TEST_SIGNAL": "KILL@step=10@L2-lstm-s0"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    stopped = run_lstmlab(["train", config, "--set", "experiment=stopped", "--set", "model.layers=1", *common],
                          env={"LSTMLAB_TEST_SIGNAL": "TERM@step=10"})
    assert stopped.returncode == 130, stopped.stderr
    failed = run_lstmlab(["train", config, "--set", "experiment=broken", "--set", "model.layers=1", "--set",
                          "train.lr=1e30", "--set", "train.grad_clip=null", "--set", "train.optimizer=sgd", *common])
    assert failed.returncode == 1, failed.stderr
    return root / "runs"


def listing(*args: str) -> list[dict]:
    result = runner.invoke(app, ["runs", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def summary(path) -> dict:
    return json.loads((path / "summary.json").read_text())


def test_json_has_one_object_per_run_with_its_state_step_and_metrics(runs):
    lines = listing(str(runs))
    assert [(x["experiment"], x["name"], x["status"]) for x in lines] == [
        ("broken", "L1-lstm-s0", "failed"), ("stopped", "L1-lstm-s0", "interrupted"),
        ("tiny", "L1-lstm-s0", "completed"), ("tiny", "L2-lstm-s0", "stale")]
    by = {(x["experiment"], x["name"]): x for x in lines}
    done = by["tiny", "L1-lstm-s0"]
    saved = summary(runs / "tiny" / "L1-lstm-s0")
    assert (done["step"], done["steps"], done["metric"]) == (20, 20, "mse")
    assert done["best_val"] == saved["best_val"]["mse"] and done["test"] == saved["test_metric"]
    assert done["holder"] is None and done["note"] == ""

    killed = by["tiny", "L2-lstm-s0"]
    assert summary(runs / "tiny" / "L2-lstm-s0")["status"] == "running"  # what the folder says ...
    assert (runs / "tiny" / "L2-lstm-s0" / ".lock").read_text().startswith("pid ")  # ... and its dead holder
    assert (killed["step"], killed["steps"], killed["test"]) == (10, 20, None)
    val = [r for r in (runs / "tiny" / "L2-lstm-s0" / "metrics.csv").read_text().splitlines() if ",val," in r]
    assert len(val) == 1 and killed["best_val"] == float(val[0].split(",")[4])  # the best val row so far
    assert "no process holds its lock" in killed["note"] and killed["holder"] is None

    stopped = by["stopped", "L1-lstm-s0"]
    assert (stopped["step"], stopped["test"]) == (10, None) and stopped["best_val"] is not None
    assert by["broken", "L1-lstm-s0"]["best_val"] is None  # no finite validation value


def test_table_counts_each_experiment_and_lines_up_its_runs(runs):
    result = runner.invoke(app, ["runs", str(runs)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "broken: 1 run — 1 failed" in lines and "stopped: 1 run — 1 interrupted" in lines
    assert "tiny: 2 runs — 1 completed, 1 stale" in lines
    tiny = lines[lines.index("tiny: 2 runs — 1 completed, 1 stale") + 1:]
    assert tiny[0].split() == ["run", "status", "step", "metric", "best", "val", "test"]
    saved = summary(runs / "tiny" / "L1-lstm-s0")
    assert tiny[1].split() == ["L1-lstm-s0", "completed", "20/20", "mse", f"{saved['best_val']['mse']:.4g}",
                               f"{saved['test_metric']:.4g}"]
    assert tiny[2].split()[:3] == ["L2-lstm-s0", "stale", "10/20"] and tiny[2].split()[-1] == "—"
    assert tiny[3].startswith("  L2-lstm-s0: summary.json says running, but no process holds its lock")
    # one experiment's folder, or one run folder, lists only those
    assert [x["experiment"] for x in listing(str(runs / "stopped"))] == ["stopped"]
    assert [x["name"] for x in listing(str(runs / "tiny" / "L2-lstm-s0"))] == ["L2-lstm-s0"]


def test_a_run_whose_lock_a_live_process_holds_is_running_until_that_process_dies(runs):
    run = runs / "tiny" / "L2-lstm-s0"
    holder = hold_lock(run)
    try:
        [line] = listing(str(run))
        assert line["status"] == "running" and line["holder"] == f"pid {holder.pid} on host {socket.gethostname()}"
        assert line["note"] == ""
    finally:
        holder.send_signal(signal.SIGKILL)  # as a trainer killed with -9: its pid stays in the lock file
        holder.wait()
    [line] = listing(str(run))
    assert (run / ".lock").read_text() == f"pid {holder.pid} on host {socket.gethostname()}"
    assert line["status"] == "stale" and line["holder"] is None


def test_a_lock_of_another_host_is_taken_at_its_word(runs, tmp_path):
    import shutil

    run = tmp_path / "tiny" / "L2-lstm-s0"
    shutil.copytree(runs / "tiny" / "L2-lstm-s0", run)
    (run / ".lock").write_text("pid 1 on host elsewhere-node-7")
    [line] = listing(str(run))
    assert line["status"] == "running" and line["holder"] == "pid 1 on host elsewhere-node-7"
    assert "another host" in line["note"]
    (run / "summary.json").unlink()  # a folder with a config but no summary, and no lock: nothing known
    (run / ".lock").write_text("")
    [line] = listing(str(run))
    assert line["status"] == "unknown" and "no summary.json and no process holds its lock" in line["note"]


def test_default_path_is_runs_and_bad_input_exits_2(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(runs.parent)
    assert len(listing()) == 4
    monkeypatch.chdir(tmp_path)
    for args, message in ((["nowhere"], "no such path: nowhere"), ([], "no such path: runs"),
                          ([str(tmp_path)], f"no run folders under {tmp_path}"),
                          ([str(runs), "--format", "yaml"],
                           "--format: unknown format 'yaml'; valid formats: table, json")):
        result = runner.invoke(app, ["runs", *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, args


def test_names_sort_by_their_numbers():
    names = ["L10-lstm-s0", "L2-lstm-s10", "L2-lstm-s9", "L1-gru-s0"]
    assert sorted(names, key=natural) == ["L1-gru-s0", "L2-lstm-s9", "L2-lstm-s10", "L10-lstm-s0"]

