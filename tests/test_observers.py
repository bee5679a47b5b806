"""The observer interface: a custom observer handed to train_pack sees every step boundary once, every
metrics.csv row as it is written and the run's end; UnitOptions pickles with a unit for any executor, and
`local` is an executor like the others."""

from __future__ import annotations

import functools
import pickle

from conftest import TINY

from lstmlab.config import validate
from lstmlab.run.executors import make_executor
from lstmlab.run.executors.local import LocalExecutor
from lstmlab.run.observers import Observer
from lstmlab.run.options import UnitOptions
from lstmlab.run.sweep import run_unit
from lstmlab.run.train import train_pack


class Recorder(Observer):
    def __init__(self):
        self.steps, self.rows, self.finished, self.closed = [], [], [], False

    def on_step(self, run, step):
        self.steps.append((run.name, step))

    def on_rows(self, run, rows):
        self.rows += rows

    def on_finish(self, run, summary):
        self.finished.append((run.name, dict(summary)))

    def close(self):
        self.closed = True


def test_an_observer_sees_every_step_row_and_the_end(tmp_path):
    cfg = validate({**TINY, "train": {**TINY["train"], "dtype": "float64", "diagnostics_every": 5}})
    seen = Recorder()
    options = UnitOptions(tmp_path / "runs", tmp_path / "data", quiet=True)
    (result,) = train_pack([cfg], options, observers=[seen], log=lambda _: None)
    assert result.status == "completed" and seen.closed
    assert seen.steps == [(result.name, step) for step in range(21)]  # the start, then after each of 20 steps
    written = result.path / "metrics.csv"
    assert [(r["step"], r["split"]) for r in seen.rows] == [(10, "train"), (10, "val"), (20, "train"), (20, "val"),
                                                            (20, "test")]
    assert len(written.read_text().splitlines()) == 1 + len(seen.rows)
    assert seen.finished == [(result.name, result.summary)] and result.summary["status"] == "completed"
    assert not (result.path / "diagnostics.csv").exists()  # only the observers handed in watch the loop

    again = Recorder()  # a completed run is skipped: nothing to observe
    assert train_pack([cfg], options, observers=[again], log=lambda _: None)[0].status == "skipped"
    assert again.steps == again.rows == again.finished == [] and again.closed


def test_unit_options_travel_and_local_is_an_executor(tmp_path):
    options = UnitOptions(tmp_path / "runs", "data", ("model.layers",), argv=["lstmlab", "train"],
                          tensorboard=str(tmp_path / "tb"))
    unit_fn = pickle.loads(pickle.dumps(functools.partial(run_unit, options=options)))
    assert unit_fn.keywords["options"] == options and options.tensorboard == tmp_path / "tb"
    assert options.resolved().data_dir.is_absolute() and not options.data_dir.is_absolute()
    local = make_executor("local", jobs=3)
    assert isinstance(local, LocalExecutor) and local.jobs == 3
