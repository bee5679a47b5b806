"""train --tune KEY (a grid that widens itself at an edge) and --halving (successive halving), lstmlab.search.

The search logic is driven by a fake trainer that writes run folders (config.yaml and summary.json, as a run
writes them) with a validation metric from a known objective: the search reads them back through compare's
reader and rule. Then the real thing on the tiny config: train --tune, --halving, a run continued in place.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import TINY, write_config
from typer.testing import CliRunner

from lstmlab.cli import app
from lstmlab.config import validate
from lstmlab.run.folder import RunFolder, run_name
from lstmlab.run.sweep import Outcome
from lstmlab.search import next_value, rung_budgets, search

runner = CliRunner()


class FakeTrainer:
    """Trains nothing: writes each point's folder as a completed (or failed) run whose best validation mse is
    objective(lr, layers, seed, steps). Records what it was asked to train."""

    def __init__(self, runs_dir: Path, objective, fails=lambda lr: False):
        self.runs_dir, self.objective, self.fails = runs_dir, objective, fails
        self.calls: list[list[tuple]] = []  # per call: (layers, lr, seed, steps) of each point

    def __call__(self, cfg) -> list[Outcome]:
        outcomes, points = [], []
        for point in cfg.runs():
            lr, layers, seed, steps = point.train.lr, point.model.layers, point.train.seed, point.train.steps
            points.append((layers, lr, seed, steps))
            run = RunFolder(self.runs_dir / point.experiment / run_name(point, tuple(cfg.sweep)))
            run.path.mkdir(parents=True, exist_ok=True)
            run.write_config(point.dump_yaml())
            summary = {"status": "completed", "task": "adding", "metric": "mse", "higher_is_better": False,
                       "step": steps, "steps": steps}
            if self.fails(lr):
                summary.update(status="failed", error="FloatingPointError: loss became nan")
            else:
                val = self.objective(lr, layers, seed, steps)
                # every field a completed summary of this format holds (lstmlab.run.reader.COMPLETED_FIELDS)
                summary.update(best_val={"mse": val}, test_metric=val + 0.001, params=100, solved=False)
            run.write_summary(summary)
            outcomes.append(Outcome(run.path.name, run.path, summary["status"]))
        self.calls.append(points)
        return outcomes

    def values(self, call: int) -> list[float]:
        return sorted({lr for _, lr, _, _ in self.calls[call]})


def study(lrs, layers=(1,), seeds=(0, 1), **sections):
    raw = {**TINY, "sweep": {"model.layers": list(layers), "train.lr": list(lrs), "train.seed": list(seeds)},
           "tune": {"key": "train.lr"}}
    for section, keys in sections.items():
        raw[section] = {**raw.get(section, {}), **keys}
    return validate(raw, source="test")


def bowl(best):
    """Validation mse with its minimum at lr = best (per layers: best is a dict), a little noise by seed."""
    def objective(lr, layers, seed, steps):
        at = best[layers] if isinstance(best, dict) else best
        return 0.1 + (math.log10(lr) - math.log10(at)) ** 2 + 0.001 * seed
    return objective


# -- widening, on a fake objective ------------------------------------------------------------------------


def test_widening_goes_up_until_the_best_is_interior(tmp_path):
    trainer = FakeTrainer(tmp_path, bowl(0.03))
    lines = []
    result = search(study([0.001, 0.003], tune={"max_widen": 5}), trainer, tmp_path, log=lines.append)
    (group,) = result.groups
    # 0.003 at the edge -> 0.009 -> 0.027 -> 0.081: 0.027 is now inside (ratio 3, the grid's)
    assert [trainer.values(i) for i in range(len(trainer.calls))] == [[0.001, 0.003], [0.009], [0.027], [0.081]]
    assert all(seeds == {0, 1} for seeds in ({s for _, _, s, _ in call} for call in trainer.calls))
    assert (group.chosen, group.ended, group.widened) == (0.027, "interior", 3)
    assert group.grid == [0.001, 0.003, 0.009, 0.027, 0.081]
    assert any("widening to 0.009 (widening 1 of 5)" in line for line in lines)
    assert any(line.startswith("search train.lr: chosen inside its grid in 1 group(s)") for line in lines)
    # the runs are ordinary sweep points: compare --tune reads them and makes the same choice
    from lstmlab.analysis.compare import compare_runs

    (tuned,) = compare_runs([tmp_path], tune_keys=("train.lr",)).groups
    assert tuned.tuning.chosen.value == {"train.lr": 0.027}
    assert (tmp_path / "tiny" / "L1-lstm-s1-lr0.081" / "summary.json").exists()


def test_widening_goes_down_too(tmp_path):
    trainer = FakeTrainer(tmp_path, bowl(0.0004))
    result = search(study([0.001, 0.01, 0.1]), trainer, tmp_path, log=lambda _: None)
    assert [trainer.values(i) for i in range(1, len(trainer.calls))] == [[0.0001]]  # ÷10: the grid's ratio
    assert (result.groups[0].chosen, result.groups[0].ended) == (0.001, "interior")


def test_widening_stops_at_its_limit_and_says_so(tmp_path):
    trainer = FakeTrainer(tmp_path, lambda lr, layers, seed, steps: 1.0 - lr)  # ever larger is ever better
    lines = []
    result = search(study([0.01, 0.02], tune={"max_widen": 2}), trainer, tmp_path, log=lines.append)
    (group,) = result.groups
    assert (group.chosen, group.ended, group.widened) == (0.08, "limit", 2)
    assert len(trainer.calls) == 3
    assert "tune.max_widen 2 reached" in group.detail
    assert any(line.startswith("search train.lr: stopped at a limit in 1 group(s): model.layers=1 train.lr=0.08")
               for line in lines)


def test_widening_stops_at_a_bound_on_the_value(tmp_path):
    trainer = FakeTrainer(tmp_path, lambda lr, layers, seed, steps: 1.0 - lr)
    result = search(study([0.01, 0.02], tune={"max": 0.05}), trainer, tmp_path, log=lambda _: None)
    (group,) = result.groups
    assert (group.chosen, group.ended, group.widened) == (0.04, "limit", 1)
    assert "the next value 0.08 is above tune.max 0.05" in group.detail


def test_widening_stops_where_the_key_allows_no_further_value(tmp_path):
    trainer = FakeTrainer(tmp_path, lambda lr, layers, seed, steps: lr)  # smaller is better; lr must stay > 0
    result = search(study([0.2, 0.4, 0.6]), trainer, tmp_path, log=lambda _: None)  # arithmetic: -0.2, ...
    (group,) = result.groups
    assert len(trainer.calls) == 1 and group.ended == "limit"
    assert "the next value 0.0 is not allowed" in group.detail and "train.lr" in group.detail


def test_each_group_widens_alone(tmp_path):
    trainer = FakeTrainer(tmp_path, bowl({1: 0.01, 2: 0.5}))
    result = search(study([0.001, 0.01, 0.1], layers=(1, 2)), trainer, tmp_path, log=lambda _: None)
    one, two = result.groups
    assert (one.where, one.chosen, one.ended, one.widened) == ({"model.layers": 1}, 0.01, "interior", 0)
    assert (two.where, two.chosen, two.ended, two.widened) == ({"model.layers": 2}, 1.0, "interior", 2)
    assert [sorted({layers for layers, *_ in call}) for call in trainer.calls[1:]] == [[2], [2]]
    assert [trainer.values(i) for i in (1, 2)] == [[1.0], [10.0]]  # 1.0 beats 0.1, and 10 does not beat 1.0
    assert (tmp_path / "tiny" / "L2-lstm-s0-lr1.0").is_dir() and not (tmp_path / "tiny" / "L1-lstm-s0-lr1.0").exists()


def test_a_value_whose_runs_fail_counts_against_it(tmp_path):
    # the best validation is at the largest lr, but its runs diverge: compare's rule ranks it last
    trainer = FakeTrainer(tmp_path, lambda lr, layers, seed, steps: 1.0 - lr, fails=lambda lr: lr > 0.05)
    result = search(study([0.01, 0.03, 0.1]), trainer, tmp_path, log=lambda _: None)
    assert (result.groups[0].chosen, result.groups[0].ended, len(trainer.calls)) == (0.03, "interior", 1)


def test_next_value_keeps_the_grids_spacing():
    assert next_value([0.001, 0.003, 0.01], "largest") == pytest.approx(0.0333333)  # ×(0.01/0.003)
    assert next_value([0.001, 0.01, 0.1], "smallest") == 0.0001
    assert next_value([0.0, 0.1, 0.2], "largest") == 0.3  # a zero: arithmetic
    assert next_value([0.1, 0.2, 0.3], "smallest") == 0.0  # evenly spaced: arithmetic
    assert next_value([64, 128, 256], "largest") == 512 and next_value([1, 2, 3], "smallest") == 0
    assert next_value([10, 11], "largest") == 13  # 12.1, rounded away from the grid
    assert rung_budgets(2000, 200, 3, 0.25) == [600, 1800, 2000]
    assert rung_budgets(2000, 200, 3, 1 / 9) == [400, 1200, 2000]
    assert rung_budgets(20, 10, 3, 1.0) == [20]


# -- halving, on a toy problem -----------------------------------------------------------------------------


def learning_curve(lr, layers, seed, steps):
    """Every value improves with steps, the larger ones faster: at 10 steps 0.02 leads (0.01 second, 0.05
    third), at 30 and at 90 steps 0.01 is best."""
    fast = 0.05 * math.exp(-steps * lr * 10)
    return 0.1 + (math.log10(lr) + 2) ** 2 * 0.05 + fast + 0.001 * seed


def test_halving_keeps_the_right_value_and_continues_its_runs(tmp_path):
    grid = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    cfg = study(grid, seeds=(0, 1, 2), train={"steps": 90, "eval_every": 10},
                halving={"enabled": True, "eta": 3, "min_fraction": 0.1}, tune={"max_widen": 0})
    trainer = FakeTrainer(tmp_path, learning_curve)
    lines = []
    result = search(cfg, trainer, tmp_path, log=lines.append)
    (group,) = result.groups
    steps = [{s for *_, s in call} for call in trainer.calls]
    assert steps == [{10}, {30}, {90}]  # rungs 10, 30, 90
    assert [len(trainer.values(i)) for i in range(3)] == [9, 3, 1]  # 9 values, then ⌊9/3⌋, then ⌊3/3⌋
    assert trainer.values(2) == [0.01] and group.chosen == 0.01
    # the full grid takes 9 values × 3 seeds × 90 steps; halving stops 6 values at 10 steps, 2 at 30, and
    # trains 1 to 90 (a run that goes on is counted once, at the step it reached: it continues)
    assert trainer.values(1) == [0.01, 0.02, 0.05]
    assert (result.steps_full_grid, result.steps_trained) == (9 * 3 * 90, 6 * 3 * 10 + 2 * 3 * 30 + 1 * 3 * 90)
    assert any("halving: 630 member steps trained" in line and "would take 2430 (74% saved)" in line
               for line in lines)
    # the same choice as training every value to the full budget
    full = FakeTrainer(tmp_path / "full", learning_curve)
    plain = search(cfg.model_copy(update={"halving": cfg.halving.model_copy(update={"enabled": False})}),
                   full, tmp_path / "full", log=lambda _: None)
    assert plain.groups[0].chosen == group.chosen


def test_after_halving_a_widened_value_trains_to_the_full_budget(tmp_path):
    cfg = study([0.01, 0.02, 0.04], train={"steps": 40, "eval_every": 10}, tune={"max_widen": 1},
                halving={"enabled": True, "eta": 3, "min_fraction": 0.25})
    trainer = FakeTrainer(tmp_path, lambda lr, layers, seed, steps: 1.0 - lr)  # the largest lr leads throughout
    result = search(cfg, trainer, tmp_path, log=lambda _: None)
    (group,) = result.groups
    # rungs 10, 30, 40 keep 0.04; it is the grid's edge, so 0.08 trains straight to 40 steps, and is the limit
    assert [({s for *_, s in call}, trainer.values(i)) for i, call in enumerate(trainer.calls)] == \
        [({10}, [0.01, 0.02, 0.04]), ({30}, [0.04]), ({40}, [0.04]), ({40}, [0.08])]
    assert (group.grid, group.full, group.chosen, group.ended) == ([0.01, 0.02, 0.04, 0.08], [0.04, 0.08], 0.08,
                                                                   "limit")
    assert result.steps_full_grid == 4 * 2 * 40 and result.steps_trained == 2 * 2 * 10 + 2 * 40 + 2 * 40


# -- bad input: exit 2, the key named ---------------------------------------------------------------------


@pytest.mark.parametrize(("args", "sweep", "message"), [
    (["--tune", "train.lrr"], {"train.lr": [0.001, 0.01]}, "--tune train.lrr: not a config key"),
    (["--tune", "train.lr"], {"model.layers": [1, 2]}, "--tune train.lr: not a sweep axis of experiment tiny"),
    (["--tune", "train.lr"], {"train.lr": [0.001]}, "--tune train.lr: its grid has one value (0.001)"),
    (["--tune", "model.type"], {"model.type": ["lstm", "gru"]}, "--tune model.type: the values"),
    (["--tune", "train.seed"], {"train.seed": [0, 1]}, "--tune train.seed: seeds are what"),
    (["--halving"], {"train.lr": [0.001, 0.01]}, "tune.key: no key to tune"),
    (["--tune", "train.lr", "--halving", "--set", "train.schedule=cosine"], {"train.lr": [0.001, 0.01]},
     "--halving: train.schedule cosine"),
])
def test_bad_tune_input_exits_2_naming_the_key(tmp_path, args, sweep, message):
    config = write_config(tmp_path / "c.yaml", {**TINY, "sweep": sweep})
    result = runner.invoke(app, ["train", str(config), *args, "--runs-dir", str(tmp_path / "runs"),
                                 "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "runs" / "tiny").exists() or not any((tmp_path / "runs" / "tiny").iterdir())


# -- for real: the tiny config ----------------------------------------------------------------------------


def train(tmp_path: Path, config: Path, *args: str):
    return runner.invoke(app, ["train", str(config), "-q", "--runs-dir", str(tmp_path / "runs"),
                               "--data-dir", str(tmp_path / "data"), *args])


def test_train_tune_end_to_end(tmp_path):
    config = write_config(tmp_path / "c.yaml", {**TINY, "sweep": {"train.lr": [0.001, 0.002]},
                                                "tune": {"max_widen": 1}})
    result = train(tmp_path, config, "--tune", "train.lr")
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    # at 20 steps the larger learning rate is better: 0.002 is the edge, 0.004 is tried, and the limit is said
    assert "best train.lr=0.002 of [0.001, 0.002] is the largest value: widening to 0.004 (widening 1 of 1)" in output
    runs = tmp_path / "runs" / "tiny"
    assert sorted(p.name for p in runs.iterdir()) == ["L1-lstm-s0-lr0.001", "L1-lstm-s0-lr0.002", "L1-lstm-s0-lr0.004"]
    vals = {p.name: json.loads((p / "summary.json").read_text())["best_val"]["mse"] for p in runs.iterdir()}
    best = min(vals, key=vals.get)
    assert "search train.lr: stopped at a limit" in output or "chosen inside its grid" in output
    # compare --tune reads the folder and chooses what the search chose
    compared = runner.invoke(app, ["compare", str(runs), "--tune", "train.lr", "--format", "json"])
    assert compared.exit_code == 0, compared.output
    chosen = json.loads(compared.output)["groups"][0]["tuned"]["train.lr"]
    assert best.endswith(f"lr{chosen}") and f"train.lr={chosen}" in output
    # run again: nothing is trained twice, and the search ends the same way
    again = train(tmp_path, config, "--tune", "train.lr")
    assert again.exit_code == 0 and "completed (" not in again.output and f"train.lr={chosen}" in again.output


def timeless_rows(run: RunFolder) -> list[dict]:
    """metrics.csv without the columns that measure time."""
    return [{k: v for k, v in row.items() if k not in ("elapsed_s", "seq_per_s")} for row in run.metrics()]


def test_a_continued_run_is_the_run_trained_straight_to_the_longer_budget(tmp_path):
    from lstmlab.search import sweep_trainer

    raw = {**TINY, "sweep": {"train.seed": [0]}}
    straight = validate(raw, source="t")
    short = validate({**raw, "train": {**TINY["train"], "steps": 10}}, source="t")
    trainer = sweep_trainer(tmp_path / "a", tmp_path / "data", log=lambda _: None, quiet=True, pack=1)
    trainer(straight)
    trainer = sweep_trainer(tmp_path / "b", tmp_path / "data", log=lambda _: None, quiet=True, pack=1)
    (first,) = trainer(short)
    assert first.status == "completed"
    folder = RunFolder(tmp_path / "b" / "tiny" / "L1-lstm-s0")
    assert folder.summary()["step"] == 10 and folder.config()["train"]["steps"] == 10
    lines = []
    trainer = sweep_trainer(tmp_path / "b", tmp_path / "data", log=lines.append, quiet=True, pack=1)
    (second,) = trainer(straight)
    assert second.status == "completed" and "L1-lstm-s0: continues from step 10 to 20" in lines
    a, b = RunFolder(tmp_path / "a" / "tiny" / "L1-lstm-s0"), folder
    assert a.config() == b.config()
    assert timeless_rows(a) == timeless_rows(b)  # every evaluation, and the one test row at step 20
    for key in ("step", "best_step", "best_val", "test_metric", "status"):
        assert a.summary()[key] == b.summary()[key], key


def test_train_halving_end_to_end(tmp_path):
    config = write_config(tmp_path / "c.yaml", {**TINY, "sweep": {"train.lr": [0.001, 0.003, 0.01]},
                                                "halving": {"eta": 3, "min_fraction": 0.5}})
    result = train(tmp_path, config, "--tune", "train.lr", "--halving", "--set", "tune.max_widen=0")
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "halving train.lr: rungs of 10, 20 steps" in output
    runs = tmp_path / "runs" / "tiny"
    steps = {p.name: json.loads((p / "summary.json").read_text())["step"] for p in runs.iterdir()}
    survivors = [name for name, s in steps.items() if s == 20]
    assert len(survivors) == 1 and sorted(steps.values()) == [10, 10, 20]
    assert yaml.safe_load((runs / survivors[0] / "config.yaml").read_text())["train"]["steps"] == 20
    assert "halving: 40 member steps trained; every value tried trained to 20 steps would take 60 (33% saved)" in output
    assert f"train.lr={survivors[0].split('lr')[1]}" in output


def test_a_search_stopped_by_sigterm_resumes_where_it_stopped(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    config = write_config(tmp_path / "c.yaml", {**TINY, "train": {**TINY["train"], "steps": 200},
                                                "sweep": {"train.lr": [0.001, 0.002]}, "tune": {"max_widen": 3}})
    command = [sys.executable, "-m", "lstmlab", "train", str(config), "-q", "--tune", "train.lr", "--runs-dir",
               str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in process.stdout:  # the grid is done and scored; the first widening is being trained
        seen.append(line)
        if "widening to" in line:
            process.send_signal(signal.SIGTERM)
            break
    rest = process.stdout.read()
    assert process.wait(timeout=120) == 130, "".join(seen) + rest
    assert "interrupted: checkpoints saved; run the same command again to resume the search" in rest
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    # the grid's two runs are not trained again; the search goes on from the widening it was in
    assert "skipped (already completed) (2): L1-lstm-s0-lr0.001, L1-lstm-s0-lr0.002" in again.stdout
    assert "search train.lr: " in again.stdout


def test_the_config_section_alone_starts_the_search_and_stays_out_of_run_folders(tmp_path):
    config = write_config(tmp_path / "c.yaml", {**TINY, "sweep": {"train.lr": [0.001, 0.002]},
                                                "tune": {"key": "train.lr", "max_widen": 0}})
    result = train(tmp_path, config)
    assert result.exit_code == 0, result.output
    assert "search train.lr: " in " ".join(result.output.split())
    for folder in (tmp_path / "runs" / "tiny").iterdir():
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert "tune" not in saved and "halving" not in saved and saved["train"]["lr"] in (0.001, 0.002)


def test_train_extend_trains_completed_runs_on_to_more_steps(tmp_path):
    """A study that stopped too early is trained on where it stands: `--set train.steps=20 --extend` continues
    the runs completed at 10 steps in their folders and gives the numbers of runs trained straight to 20."""
    config = write_config(tmp_path / "c.yaml", {**TINY, "sweep": {"train.seed": [0, 1]}})  # TINY: 20 steps
    assert train(tmp_path, config, "--set", "train.steps=10").exit_code == 0
    refused = train(tmp_path, config)  # 20 steps without --extend: another config, and the way out is named
    assert refused.exit_code == 2 and "train.steps (10 there, 20 here)" in " ".join(refused.output.split())
    assert "pass --extend" in " ".join(refused.output.split())
    result = train(tmp_path, config, "--extend")
    output = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "L1-lstm-s0: continues from step 10 to 20" in output and "2 completed run(s) go on to 20 steps" in output
    straight = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "straight"),
                                        "--data-dir", str(tmp_path / "data"), "-q"])
    assert straight.exit_code == 0, straight.output
    for name in ("L1-lstm-s0", "L1-lstm-s1"):
        a, b = RunFolder(tmp_path / "straight" / "tiny" / name), RunFolder(tmp_path / "runs" / "tiny" / name)
        assert b.summary()["status"] == "completed" and b.summary()["step"] == 20
        assert a.config() == b.config()
        assert timeless_rows(a) == timeless_rows(b)
    again = train(tmp_path, config, "--extend")  # nothing left to continue or train
    assert again.exit_code == 0 and "0 completed run(s) go on" in " ".join(again.output.split())


def test_train_extend_refuses_a_schedule_that_depends_on_the_budget(tmp_path):
    config = write_config(tmp_path / "c.yaml", {**TINY, "train": {**TINY["train"], "schedule": "cosine"}})
    result = train(tmp_path, config, "--extend")
    assert result.exit_code == 2 and "--extend: train.schedule cosine" in " ".join(result.output.split())
