"""Executors, with the real libraries: submitit (clusters debug and local) and a real local Ray instance run
one small float64 CPU sweep into the same run folders, with the same numbers and the same closing lines,
as the local executor; a failing run is reported while the others complete; a rerun of a finished sweep
submits nothing; a worker killed mid-run is run again and resumes from its checkpoint; a submitit job
preempted mid-run checkpoints at a step boundary, is requeued and resumes there; bad options are refused
with a message that names them."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import cloudpickle
import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a single-node Ray on the loopback address
import ray  # noqa: E402
from conftest import TINY, write_config
from typer.testing import CliRunner

from lstmlab.cli import app
from lstmlab.config import load_config
from lstmlab.errors import UserError
from lstmlab.run import sweep
from lstmlab.run.executors import Finished, make_executor
from lstmlab.run.folder import TEST_SIGNAL
from lstmlab.run.sweep import run_sweep

TIMING = {"elapsed_s", "seq_per_s", "wall_s"}
SWEEP = {"model.layers": [1, 2], "train.lr": [0.01, 1e300]}  # lr 1e300: the loss overflows at step 2
COMPLETING = ["L1-lstm-s0-lr0.01", "L2-lstm-s0-lr0.01"]
FAILING = ["L1-lstm-s0-lr1e_300", "L2-lstm-s0-lr1e_300"]
KILL_AT_STEP = 15  # after the first evaluation's checkpoint (step 10), before the end (step 20)

# the workers unpickle the helpers below by value: this test module is not on their import path
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # submitit's pickler
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's copy of it


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The sweep's config and data, the run folders the local executor writes for it, and its closing lines."""
    root = tmp_path_factory.mktemp("study")
    raw = {**TINY, "train": {**TINY["train"], "dtype": "float64"}, "sweep": SWEEP}
    cfg = load_config(write_config(root / "sweep.yaml", raw))
    outcomes, lines = sweep_with(cfg, "local", [], root / "reference", root / "data")
    assert_statuses(outcomes)
    return cfg, root / "data", root / "reference", closing(lines)


def sweep_with(cfg, executor: str, options: list[str], runs: Path, data: Path):
    """The whole sweep through `executor`: {run name: outcome}, and the lines it logged."""
    lines: list[str] = []
    outcomes = run_sweep(cfg, runs_dir=runs, data_dir=data, quiet=True, executor=executor,
                         executor_options=options, log=lines.append)
    return {o.name: o for o in outcomes}, lines


def closing(lines: list[str]) -> list[str]:
    """The listing by outcome that ends a sweep's output."""
    return [line for line in lines if line.startswith(tuple(f"{w} (" for w in sweep.OUTCOMES.values()))]


def assert_same_runs(runs: Path, reference: Path, names=None, experiment: str = "tiny") -> None:
    """The same run folders, and every number in metrics.csv and summary.json equal within 1e-12."""
    names = sorted(names or (p.name for p in (reference / experiment).iterdir() if not p.name.startswith(".")))
    assert sorted(p.name for p in (runs / experiment).iterdir() if not p.name.startswith(".")) == names
    for name in names:
        a, b = runs / experiment / name, reference / experiment / name
        assert_close(metric_rows(a), metric_rows(b), name)
        assert_close(summary(a), summary(b), name)


def metric_rows(run: Path) -> list[dict]:
    if not (run / "metrics.csv").exists():
        return []
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def summary(run: Path) -> dict:
    return {k: v for k, v in json.loads((run / "summary.json").read_text()).items() if k not in TIMING}


def assert_close(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    else:
        x, y = _number(a), _number(b)
        if isinstance(x, float) and isinstance(y, float):
            assert math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-12) or (math.isnan(x) and math.isnan(y)), where
        else:
            assert a == b, where


def _number(v):
    try:
        return float(v) if isinstance(v, (str, int, float)) and not isinstance(v, bool) else v
    except ValueError:
        return v


def assert_statuses(outcomes: dict[str, sweep.Outcome], failing=FAILING) -> None:
    assert {n: outcomes[n].status for n in COMPLETING} == dict.fromkeys(COMPLETING, "completed")
    for name in failing:  # reported, with the reason, while the others completed
        assert outcomes[name].status == "failed" and "loss became" in outcomes[name].detail


# -- the same runs, whichever executor ------------------------------------------------------------------


def test_submitit_debug(study, tmp_path):
    cfg, data, reference, listing = study
    outcomes, lines = sweep_with(cfg, "submitit", ["cluster=debug"], tmp_path / "runs", data)
    assert_statuses(outcomes)
    assert_same_runs(tmp_path / "runs", reference)
    assert closing(lines) == listing
    assert f"submitting 4 jobs to submitit (debug; at most 256 at a time, 1 CPU(s) each); job logs in " \
           f"{tmp_path / 'runs' / 'tiny' / '.submitit'}" in lines


def test_a_finished_sweep_submits_nothing(study, tmp_path):
    cfg, data, reference, _ = study
    shutil.copytree(reference, tmp_path / "runs")
    done = cfg.model_copy(update={"sweep": {"model.layers": [1, 2], "train.lr": [0.01]}})
    outcomes, lines = sweep_with(done, "submitit", ["cluster=local"], tmp_path / "runs", data)
    assert {n: o.status for n, o in outcomes.items()} == dict.fromkeys(COMPLETING, "skipped")
    assert not any(line.startswith("submitting") for line in lines), lines
    assert not list((tmp_path / "runs").rglob("*_submitted.pkl"))


def test_ray(study, tmp_path, ray_instance):
    cfg, data, reference, listing = study
    outcomes, lines = sweep_with(cfg, "ray", ["num_cpus=1"], tmp_path / "runs", data)
    assert_statuses(outcomes)
    assert_same_runs(tmp_path / "runs", reference)
    assert closing(lines) == listing
    assert "running 4 tasks on the Ray cluster (2 CPUs; 1 CPU(s), 0 GPU(s) per task)" in lines


def test_cli_runs_on_an_executor_and_compares(study, tmp_path):
    cfg, data, reference, _ = study
    config = write_config(tmp_path / "c.yaml", {**TINY, "train": {**TINY["train"], "dtype": "float64"},
                                                "sweep": {"model.layers": [1, 2]}})
    args = ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data), "-q",
            "--executor", "submitit", "--executor-opt", "cluster=debug"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "completed (2): L1-lstm-s0, L2-lstm-s0" in result.stdout
    assert "adding: test mse" in result.stdout  # the comparison follows, as after a local sweep
    bad = CliRunner().invoke(app, args + ["--executor-opt", "partiton=gpu"])
    assert bad.exit_code == 2
    assert "--executor-opt partiton: not an option of --executor submitit" in bad.output


# -- a worker killed, a job preempted: run again, resumed from the run folder -------------------------------


def units_of(cfg, runs: Path, data: Path, **wrap):
    """The sweep's units (one run each: lstm runs do not pack) and a unit function that trains them."""
    options = sweep.UnitOptions(runs, data, tuple(cfg.sweep), quiet=True)
    units = sweep.plan_sweep(sweep.distinct_points(cfg, print), options, pack=1).units
    return units, functools.partial(stopped_once, options=options, **wrap)


def stopped_once(unit, options, marks: Path, signals: dict[str, str]):
    """run_unit, except that the run named in `signals`, on its first attempt, sends its own process that
    signal at the step boundary after KILL_AT_STEP steps (the run-folder test hook): KILL is a killed worker
    or a lost node, USR2 is Slurm announcing a timeout or preemption."""
    (name,) = unit.names
    marks.mkdir(parents=True, exist_ok=True)
    if name in signals and not (marks / name).exists():
        (marks / name).touch()
        os.environ[TEST_SIGNAL] = f"{signals[name]}@step={KILL_AT_STEP}@{name}"
    try:
        return sweep.run_unit(unit, options, log=print)  # print: "resuming at step N" lands in the job's log
    finally:
        os.environ.pop(TEST_SIGNAL, None)  # a Ray worker goes on to other tasks


def run_all(executor, fn, units) -> tuple[dict[str, sweep.Outcome], list[str]]:
    """Every unit through the executor: {run name: outcome}, and the lines it logged."""
    lines: list[str] = []
    labels = [", ".join(u.names) for u in units]
    outcomes: dict[str, sweep.Outcome] = {}
    for finished in executor.run(fn, units, labels, lines.append):
        assert isinstance(finished, Finished) and finished.error is None and not finished.interrupted, finished
        outcomes.update({o.name: o for o in finished.result})
    assert sorted(outcomes) == sorted(n for u in units for n in u.names)
    return outcomes, lines


def test_submitit_local_with_a_killed_and_a_preempted_job(study, tmp_path):
    cfg, data, reference, _ = study
    killed, preempted = COMPLETING
    work = tmp_path / "runs" / "tiny"
    executor = make_executor("submitit", ["cluster=local", "array_parallelism=2", "poll_s=0.2"], work_dir=work)
    cfg = cfg.model_copy(update={"sweep": {"model.layers": [1, 2], "train.lr": [0.01]}})  # a job start costs seconds
    units, fn = units_of(cfg, tmp_path / "runs", data, marks=tmp_path / "marks",
                         signals={killed: "KILL", preempted: "USR2"})
    outcomes, lines = run_all(executor, fn, units)
    assert_statuses(outcomes, failing=[])
    assert_same_runs(tmp_path / "runs", reference, COMPLETING)
    assert lines[0].startswith("submitting 2 jobs to submitit (local; at most 2 at a time, 1 CPU(s) each)")
    assert [line.split(":")[0] for line in lines[1:]] == [killed]  # resubmitted once; nothing else was
    assert "ended without a result (killed?); resubmitting (1/2)" in lines[1]
    logs = "".join(p.read_text() for p in (work / ".submitit").rglob("*_log.out"))
    # the preempted run stopped at its step boundary, checkpointed, was requeued and went on from there
    assert f"{preempted}: resuming at step {KILL_AT_STEP}" in logs
    assert "Requeued job" in logs
    # the killed one resumed from the last evaluation's checkpoint
    assert f"{killed}: resuming at step 10" in logs


@pytest.fixture(scope="module")
def ray_instance():
    """One real local Ray instance with 2 CPUs for this module, on the loopback address, its files in a
    short temporary folder of its own (Ray's socket paths must stay short)."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp, configure_logging=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def test_ray_with_a_killed_worker(study, tmp_path, ray_instance):
    cfg, data, reference, _ = study
    killed = COMPLETING[1]
    units, fn = units_of(cfg, tmp_path / "runs", data, marks=tmp_path / "marks", signals={killed: "KILL"})
    outcomes, lines = run_all(make_executor("ray", ["num_cpus=1"]), fn, units)
    assert_statuses(outcomes)
    assert_same_runs(tmp_path / "runs", reference)
    assert (tmp_path / "marks" / killed).exists()  # it was killed once, and Ray ran it again
    assert lines == ["running 4 tasks on the Ray cluster (2 CPUs; 1 CPU(s), 0 GPU(s) per task)"]


# -- options --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, options, message", [
    ("slurm", [], "--executor slurm: unknown executor; valid: local, submitit, ray"),
    ("submitit", ["partiton=gpu"], "--executor-opt partiton: not an option of --executor submitit; valid: cluster,"),
    ("submitit", ["cluster=aws"], "--executor-opt cluster='aws' (--executor submitit): valid values: slurm, local,"),
    ("submitit", ["time=1h"], "--executor-opt time='1h' (--executor submitit): expected a whole number"),
    ("submitit", ["cpus_per_task=0"], "--executor-opt cpus_per_task=0 (--executor submitit): must be at least 1"),
    ("submitit", ["time"], "--executor-opt 'time': expected KEY=VALUE"),
    ("ray", ["num_gpus=lots"], "--executor-opt num_gpus='lots' (--executor ray): expected a number"),
    ("ray", ["partition=gpu"], "--executor-opt partition: not an option of --executor ray; valid: address,"),
    ("local", ["num_cpus=2"], "--executor-opt num_cpus: not an option of --executor local; valid: none"),
])
def test_bad_options_are_named(name, options, message):
    with pytest.raises(UserError) as e:
        make_executor(name, options)
    assert str(e.value).startswith(message), str(e.value)


def test_jobs_belongs_to_the_local_executor():
    with pytest.raises(UserError, match="--jobs is for --executor local"):
        make_executor("submitit", ["cluster=debug"], jobs=2)


@pytest.mark.parametrize("name, extra", [("submitit", "slurm"), ("ray", "ray")])
def test_a_missing_library_names_the_extra(name, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)  # what an environment without the package looks like
    with pytest.raises(UserError) as e:
        make_executor(name, [])
    assert str(e.value) == f"--executor {name} needs the {name} package: pip install 'lstmlab[{extra}]'"


def test_slurm_without_slurm_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    with pytest.raises(UserError, match="cluster=slurm: no Slurm here"):
        make_executor("submitit", ["cluster=slurm"], work_dir=tmp_path)


def test_slurm_job_array_script(monkeypatch, tmp_path):
    """What submitit hands sbatch for our options: one array, bounded, with the time limit, the resources
    and the pass-through parameters (a stand-in `sbatch` records the script; Slurm itself is not here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = f'cp "$1" {tmp_path}/script.sh; echo "Submitted batch job 4242"'
    for tool, body in {"srun": "exit 0", "sbatch": sbatch}.items():
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    executor = make_executor("submitit", ["partition=short", "time=90", "cpus_per_task=2", "gpus_per_task=1",
                                          "array_parallelism=3", "slurm_account=proj",
                                          "slurm_additional_parameters={mail-type: END}"], work_dir=tmp_path)
    from lstmlab.run.executors.submitit import UnitTask

    jobs = executor.executor.submit_array([UnitTask(print, i, 2) for i in range(5)])
    assert [job.job_id for job in jobs] == [f"4242_{i}" for i in range(5)]
    script = (tmp_path / "script.sh").read_text()
    for line in ["--array=0-4%3", "--partition=short", "--time=90", "--cpus-per-task=2", "--gpus-per-node=1",
                 "--account=proj", "--mail-type=END", "--signal=USR2@90", "--job-name=lstmlab"]:
        assert f"#SBATCH {line}\n" in script, (line, script)
