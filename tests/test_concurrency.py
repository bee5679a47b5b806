"""Nothing lost, nothing doubled, with real second processes and real signals: two trains of one config at
once, SIGTERM to a sweep's parent, kill -9 of the parent (its workers die with it), Ctrl-C and SIGTERM to
the whole process group. Runs are stopped at known steps by test hooks (lstmlab.run.folder), never by timing."""

from __future__ import annotations

import csv
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, write_config
from typer.testing import CliRunner

from lstmlab.cli import app
from lstmlab.run.folder import RunFolder


def sweep_args(tmp_path: Path, sweep: dict, train: dict, *extra: str) -> list[str]:
    config = write_config(tmp_path / "sweep.yaml", {**TINY, "train": {**TINY["train"], **train}, "sweep": sweep})
    return ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"),
            "-q", *extra]


def start(args: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "lstmlab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kwargs)


def read_until(proc: subprocess.Popen, text: str, timeout: float = 180.0) -> str:
    """The process's output up to and including the line that contains `text` (select() with a deadline)."""
    seen, deadline = "", time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while text not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {text!r} within {timeout} s; output so far:\n{seen}"
        chunk = os.read(fd, 65536).decode()
        assert chunk, f"the process ended before {text!r}:\n{seen}"
        seen += chunk
    return seen


def wait_for_exit(pids: list[int], timeout: float = 120.0) -> None:
    """Wait for processes that are not our children to end (pidfd: readable once the process has exited)."""
    fds = {pid: os.pidfd_open(pid) for pid in pids}
    try:
        deadline = time.monotonic() + timeout
        for pid, fd in fds.items():
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"process {pid} is still alive {timeout} s after its parent died"
    finally:
        for fd in fds.values():
            os.close(fd)


def rows(run: Path) -> list[tuple[int, str]]:
    if not (run / "metrics.csv").exists():
        return []
    with open(run / "metrics.csv") as f:
        return [(int(r["step"]), r["split"]) for r in csv.DictReader(f)]


def assert_consistent(run: RunFolder) -> None:
    """No doubled rows; the checkpoint, the summary and metrics.csv agree on where the run stands."""
    keys = rows(run.path)
    assert len(keys) == len(set(keys)), f"doubled rows in {run.path}"
    summary, step = run.summary(), run.load_checkpoint()["step"]
    assert summary["step"] == step and all(s <= step for s, _ in keys)
    assert (keys.count((step, "test")) == 1) == (summary["status"] == "completed")


def test_two_trains_of_one_config_at_once_train_each_run_once(tmp_path):
    """`lstmlab train ... --jobs 2 & lstmlab train ... --jobs 2`: every run is trained once, by one of them."""
    args = sweep_args(tmp_path, {"model.layers": [1, 2]}, {"steps": 100, "eval_every": 20}, "--jobs", "2")
    first, second = start(args), start(args)
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    for name in ("L1-lstm-s0", "L2-lstm-s0"):
        run = RunFolder(tmp_path / "runs" / "tiny" / name)
        assert run.status() == "completed"
        assert rows(run.path) == [(s, split) for s in range(20, 101, 20) for split in ("train", "val")] + [
            (100, "test")]
        trained = [out for out in outputs if f"{name}: completed — test" in out]
        assert len(trained) == 1, outputs  # the other process skipped it: busy, or already completed
        other = outputs[1 - outputs.index(trained[0])]
        assert (f"{run.path} is being trained by another process (pid " in other
                or f"{name}: skipped (already completed)" in other), other


def test_repeated_sweep_points_run_once(tmp_path):
    args = sweep_args(tmp_path, {}, {"steps": 10}, "--sweep", "model.layers=1,1", "--sweep", "train.seed=0,0.0")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "note: the sweep lists run L1-lstm-s0 4 times (repeated values); it runs once" in result.output
    assert "tiny: 1 run(s) of task adding" in result.output
    assert [p.name for p in (tmp_path / "runs" / "tiny").iterdir()] == ["L1-lstm-s0"]
    assert rows(tmp_path / "runs" / "tiny" / "L1-lstm-s0").count((10, "test")) == 1


def test_sigterm_to_the_parent_stops_its_workers_at_a_step_boundary(tmp_path, notifications):
    args = sweep_args(tmp_path, {"model.layers": [1, 2]}, {"steps": 100_000, "eval_every": 5}, "--jobs", "2")
    parent = start(args, notifications.env("step=5"))
    notifications.wait(2)  # both workers are training
    parent.send_signal(signal.SIGTERM)  # the parent alone, as `kill -TERM <pid>` does
    output, _ = parent.communicate(timeout=180)
    assert parent.returncode == 130, output
    assert "interrupted: checkpoints saved; run the same command again to resume" in output
    for name in ("L1-lstm-s0", "L2-lstm-s0"):
        run = RunFolder(tmp_path / "runs" / "tiny" / name)
        assert run.status() == "interrupted"
        assert_consistent(run)


def test_kill_9_of_the_parent_ends_its_workers_and_a_rerun_resumes_without_doubling(tmp_path, notifications):
    """One worker trains, the other is idle (its short run completed): both must die with the parent."""
    args = sweep_args(tmp_path, {"train.steps": [10, 100_000]}, {"eval_every": 5}, "--jobs", "2")
    parent = start(args, notifications.env("step=5"))
    workers = sorted({pid for pid, _, _ in notifications.wait(2)})
    read_until(parent, "L1-lstm-s0-steps10: completed")  # its worker is idle now
    parent.send_signal(signal.SIGKILL)
    parent.wait(60)
    wait_for_exit(workers)  # PR_SET_PDEATHSIG: the kernel sent each SIGTERM

    long = RunFolder(tmp_path / "runs" / "tiny" / "L1-lstm-s0-steps100000")
    assert long.status() == "interrupted" and long.summary()["signal"] == "SIGTERM"
    assert_consistent(long)
    stopped_at = long.load_checkpoint()["step"]
    os.environ["LSTMLAB_TEST_SIGNAL"] = f"INT@step={stopped_at + 10}@{long.path.name}"
    try:  # the same command again (one job at a time, in this process): it resumes, and stops 10 steps later
        rerun = CliRunner().invoke(app, [*args[: args.index("--jobs")], "--jobs", "1"])
    finally:
        del os.environ["LSTMLAB_TEST_SIGNAL"]
    assert rerun.exit_code == 130, rerun.output
    assert f"resuming at step {stopped_at}" in rerun.output
    assert "L1-lstm-s0-steps10: skipped (already completed)" in rerun.output
    assert long.load_checkpoint()["step"] == stopped_at + 10 and long.summary()["signal"] == "SIGINT"
    assert_consistent(long)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_process_group_stops_a_parallel_sweep_and_starts_no_other_run(tmp_path, notifications, sig):
    """Ctrl-C at a terminal, or a scheduler's SIGTERM: the parent and every worker get the signal."""
    args = sweep_args(tmp_path, {"model.layers": [1, 2], "train.seed": [0, 1]},
                      {"steps": 100_000, "eval_every": 5}, "--jobs", "2")
    runs = tmp_path / "runs" / "tiny"
    proc = start(args, notifications.env("step=5"), start_new_session=True)
    notifications.wait(2)  # both workers are training
    os.killpg(proc.pid, sig)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, output
    started = {p.name: RunFolder(p).summary() for p in runs.iterdir()}
    assert sorted(started) == ["L1-lstm-s0", "L1-lstm-s1"], "runs not started before the signal must not start"
    assert {(s["status"], s["signal"]) for s in started.values()} == {("interrupted", sig.name)}
    for path in runs.iterdir():
        assert_consistent(RunFolder(path))


def test_an_interrupt_between_two_outcomes_still_stops_the_workers(tmp_path):
    """Ctrl-C can reach the parent while it prints an outcome rather than while it waits on its workers:
    the sweep must still start no other unit and leave no worker running (it used to leave the pool going,
    and the process hung at exit joining workers that trained the rest of the sweep)."""
    import multiprocessing

    from lstmlab.config import validate
    from lstmlab.run.sweep import run_sweep

    cfg = validate({**TINY, "train": {**TINY["train"], "steps": 200, "eval_every": 100},
                    "sweep": {"model.layers": [1, 2], "train.seed": [0, 1]}})

    def log(line: str) -> None:
        if ": completed" in line:  # the first outcome: a Ctrl-C lands here
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data", jobs=2, quiet=True, log=log)
    assert multiprocessing.active_children() == []  # every worker was joined
    last = RunFolder(tmp_path / "runs" / "tiny" / "L2-lstm-s1")  # the last unit: queued, never started
    assert not last.exists() or (last.summary() or {}).get("status") != "completed"


def test_a_worker_a_signal_stopped_takes_no_other_unit_before_the_parent_says_stop(tmp_path, monkeypatch):
    """Ctrl-C reaches the parent and its workers at once. A worker can checkpoint its interrupted unit and take
    the next one from the queue before the parent has set "start no more units" (seen under load: the 2-layer
    runs of the test above started after the signal). The worker says it itself: here the parent never does."""
    import multiprocessing

    from lstmlab.config import validate
    from lstmlab.run import sweep
    from lstmlab.run.executors import local
    from lstmlab.run.folder import TEST_SIGNAL, RunInterrupted

    context = multiprocessing.get_context("spawn")
    monkeypatch.setattr(local, "_STOP", context.Event())  # what _init_worker gives a worker process
    monkeypatch.setattr(local, "_STEPS", context.Value("q", 0))
    monkeypatch.setattr(local, "_WORKER_SIGNALLED", False)
    cfg = validate({**TINY, "train": {**TINY["train"], "steps": 100, "eval_every": 5},
                    "sweep": {"model.layers": [1, 2]}})
    options = sweep.UnitOptions(tmp_path / "runs", tmp_path / "data", tuple(cfg.sweep), quiet=True)
    points = sweep.distinct_points(cfg, print)
    sweep.generate_datasets(points, options.data_dir, print)  # as run_sweep does before any worker starts
    first, second = sweep.plan_sweep(points, options, pack=1).units
    monkeypatch.setenv(TEST_SIGNAL, f"INT@step=5@{first.names[0]}")  # Ctrl-C reaches this worker at step 5
    with pytest.raises(RunInterrupted):
        sweep.run_unit(first, options)
    assert RunFolder(tmp_path / "runs" / "tiny" / first.names[0]).summary()["status"] == "interrupted"
    outcomes = sweep.run_unit(second, options)  # the next unit in this worker's queue
    assert [(o.status, o.path) for o in outcomes] == [("interrupted", None)]
    assert "not started" in outcomes[0].detail
    assert not (tmp_path / "runs" / "tiny" / second.names[0]).exists()


def test_a_signal_raised_inside_a_library_callback_still_stops_as_an_interrupt():
    """SIGTERM can land while pydantic runs one of a config's serializers (seen: `train --tune` stopped during
    config.runs() exited 1 with PydanticSerializationError instead of 130). The signal's RunInterrupted comes
    out of pydantic wrapped in its own error; sigterm_like_ctrl_c gives it back as the interrupt it is."""
    import pydantic

    from lstmlab.run.folder import RunInterrupted
    from lstmlab.run.sweep import sigterm_like_ctrl_c

    class Signalled(pydantic.BaseModel):
        value: int = 0

        @pydantic.field_serializer("value")
        def _signal_here(self, value: int) -> int:
            signal.raise_signal(signal.SIGTERM)  # a real SIGTERM, delivered inside pydantic's callback
            return value

    with pytest.raises(RunInterrupted) as caught, sigterm_like_ctrl_c():
        Signalled().model_dump()
    assert caught.value.signal == "SIGTERM" and type(caught.value.__cause__).__name__ == "PydanticSerializationError"
    with pytest.raises(ValueError), sigterm_like_ctrl_c():  # with no signal, an error stays what it is
        raise ValueError("not a signal")
