"""Verdicts that hold past a small budget: convergence, the verdict over training, --at-step, --evidence, the
solve threshold as the user's, and compare's wording. Run folders are made by hand (tests/test_compare.py's
make_run), so the step where an ordering flips is known; one real tiny training checks what train writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY, write_config
from test_compare import ADDING, ORDER, make_run
from typer.testing import CliRunner

from lstmlab.analysis.compare import compare_runs, json_object, render, training
from lstmlab.cli import app
from lstmlab.run import convergence
from lstmlab.run.convergence import converged
from lstmlab.run.folder import RunFolder
from lstmlab.tasks import TASKS, make_task
from lstmlab.tasks.datasets import config_hash, load

# -- the convergence rule on hand-made curves -------------------------------------------------------------


def curve(values, every=100):
    return [(every * (i + 1), v) for i, v in enumerate(values)]


def test_a_plateaued_loss_has_converged():
    values = [1.0, 0.5, 0.3, 0.2, 0.15, 0.12, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    assert converged(curve(values), higher_is_better=False) is True


def test_a_still_falling_loss_has_not():
    values = [1.0 - 0.07 * i for i in range(12)]  # a straight descent: 0.21 more over the last third
    assert converged(curve(values), higher_is_better=False) is False
    # the same numbers as an accuracy are falling: getting worse is not "still improving"
    assert converged(curve(values), higher_is_better=True) is True


def test_a_rising_accuracy_has_not_converged_and_a_flat_one_has():
    assert converged(curve([0.3 + 0.05 * i for i in range(10)]), higher_is_better=True) is False
    assert converged(curve([0.9] * 10), higher_is_better=True) is True


def test_noise_larger_than_the_trend_counts_as_converged():
    rng = np.random.default_rng(0)
    noisy = [0.5 + 0.05 * rng.standard_normal() - 0.0005 * i for i in range(15)]  # a tiny trend in large noise
    assert converged(curve(noisy), higher_is_better=False) is True
    # the same trend without the noise is a descent of 0.0025 over the window: below 1% of the level 0.49
    assert converged(curve([0.5 - 0.0005 * i for i in range(15)]), higher_is_better=False) is True
    # a trend above the 1% floor (0.02 over the window against 0.0047) but inside the curve's ±0.05 noise is
    # converged; the same trend without the noise is not: the noise is what decides
    trend = [0.5 - 0.005 * i for i in range(15)]
    assert converged(curve([v + (0.05 if i % 2 else -0.05) for i, v in enumerate(trend)]), False) is True
    assert converged(curve(trend), higher_is_better=False) is False
    # and a trend well above its noise is not converged
    steep = [0.5 + 0.001 * rng.standard_normal() - 0.02 * i for i in range(15)]
    assert converged(curve(steep), higher_is_better=False) is False


def test_too_few_evaluations_give_null():
    assert converged(curve([1.0, 0.5, 0.2, 0.1, 0.05]), higher_is_better=False) is None
    assert converged(curve([1.0, 0.5, 0.2, 0.1, 0.05, 0.01]), higher_is_better=False) is False  # 6 is enough
    assert converged([], higher_is_better=False) is None


def test_the_window_is_the_last_third():
    # falling fast for 9 evaluations, then flat for the last 4 (the window at 12 points): converged
    values = [1.0 - 0.1 * i for i in range(8)] + [0.2] * 4
    assert converged(curve(values), higher_is_better=False) is True
    assert convergence.MIN_WINDOW == 4 and convergence.WINDOW_FRACTION == pytest.approx(1 / 3)


def test_rows_of_metrics_csv_are_read_by_split():
    rows = [{"step": s, "split": split, "mse": v} for s, v in curve([1.0 - 0.1 * i for i in range(8)])
            for split in ("train", "val")]
    rows.append({"step": 800, "split": "test", "mse": 0.0})
    assert convergence.validation_curve(rows, "mse")[-1] == (800, pytest.approx(0.3))
    assert convergence.run_converged(rows, "mse", False) is False


# -- the verdict over training: an ordering that flips at a known step --------------------------------------

FLIP = 700  # 1 layer leads until step 600 (0.8 against 0.75), 2 layers from step 700 on (0.84)


def flip_study(root: Path, seeds: int = 4, **kwargs) -> Path:
    """Accuracy curves: 1 layer quick to 0.8 then flat; 2 layers slower, past 1 layer from step 700."""
    for seed in range(seeds):
        wobble = [0.004 * ((seed + i) % 3) for i in range(10)]
        one = [(100 * (i + 1), min(0.8, 0.35 + 0.1 * i) + wobble[i]) for i in range(10)]
        two = [(100 * (i + 1), 0.3 + 0.09 * i + wobble[i]) for i in range(10)]
        make_run(root, 1, seed, one[-1][1], kind=ORDER, curve=one, **kwargs)
        make_run(root, 2, seed, two[-1][1], kind=ORDER, curve=two, **kwargs)
    return root


def test_over_training_finds_the_flip_and_when_it_is_clear(tmp_path):
    c = compare_runs([flip_study(tmp_path)])
    (step,) = c.steps
    points = step.over_training
    assert [p.step for p in points] == list(range(100, 1100, 100))
    assert all(p.difference < 0 for p in points if p.step < FLIP) and all(p.difference > 0 for p in points
                                                                          if p.step >= FLIP)
    assert step.reading.ordering_changes == [FLIP]
    assert [p.verdict for p in points][:3] == ["worse"] * 3 and points[-1].verdict == "better"
    assert step.reading.distinguishable_from is not None and step.reading.distinguishable_from >= FLIP
    assert "1 layer ahead until step 600, 2 layers ahead from step 700 on" in step.reading.text
    assert step.reading.text.startswith("2 vs 1 layers over training (validation accuracy at 10 shared evaluations")
    # the Welch numbers at one point, worked from the curves
    at = {r.name: dict(r.curve)[300] for r in step.lower.runs + step.upper.runs}
    a = [v for name, v in at.items() if name.startswith("L1")]
    b = [v for name, v in at.items() if name.startswith("L2")]
    assert points[2].difference == pytest.approx(np.mean(b) - np.mean(a))


def test_at_step_gives_the_verdict_at_that_budget(tmp_path):
    study = flip_study(tmp_path)
    early = compare_runs([study], at_step=300)
    assert early.steps[0].better is False  # 2 layers behind at step 300 ...
    late = compare_runs([study], at_step=1000)
    assert late.steps[0].better is True  # ... ahead at 1000
    assert early.groups[0].values == pytest.approx([0.55 + 0.004 * ((s + 2) % 3) for s in range(4)])
    obj = json_object(early)
    assert obj["metric"]["split"] == "val" and obj["steps"][0]["at_step"] == 300
    assert "validation accuracy at step 300" in render(early, "markdown")


def test_at_step_before_the_end_says_it_compares_learning_speed(tmp_path):
    flip_study(tmp_path, seeds=3)
    for config in tmp_path.glob("exp/*/config.yaml"):
        raw = yaml.safe_load(config.read_text())
        raw["train"]["steps"] = 1000
        config.write_text(yaml.safe_dump(raw))
    c = compare_runs([tmp_path], at_step=900)
    (step,) = c.steps
    # by step 900, 2 layers (rising 0.09 per evaluation) are still improving; 1 layer (flat from 600) is not
    assert [g.n_converged for g in c.groups] == [3, 0]
    assert step.verdict.endswith("; read at step 900 of 1,000: the runs trained on; 3 of 6 runs still improving by "
                                 "then, so this compares learning speed at this budget, not what each can reach")
    assert [p.step for p in step.over_training] == list(range(100, 1000, 100))  # as if training stopped at 900


def test_at_step_skips_runs_without_that_row_naming_it(tmp_path):
    flip_study(tmp_path, seeds=2)
    make_run(tmp_path, 2, 7, 0.9, kind=ORDER, curve=[(100, 0.3), (200, 0.4)])
    c = compare_runs([tmp_path], at_step=1000)
    (skipped,) = c.skipped
    assert skipped.path.name == "L2-lstm-s7"
    assert skipped.reason == ("--at-step 1000: no validation row at step 1000 in metrics.csv (evaluated at step "
                              "100, 200)")
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--at-step", "250"])  # no run evaluated there
    assert result.exit_code == 2
    assert ("--at-step 250: no run has a validation row at step 250 (the first: evaluated every 100 steps "
            "from 100 to 1000)") in result.output


def test_at_step_reads_a_study_still_training(tmp_path):
    """Runs still training (or interrupted) count at a step they reached; at the end, or past it, they do not."""
    for seed in range(3):
        wobble = [0.004 * ((seed + i) % 3) for i in range(10)]
        one = [(100 * (i + 1), min(0.8, 0.35 + 0.1 * i) + wobble[i]) for i in range(10)]
        make_run(tmp_path, 1, seed, one[-1][1], kind=ORDER, curve=one)
        two = [(100 * (i + 1), 0.3 + 0.09 * i + wobble[i]) for i in range(8)]  # stopped at step 800 of 1000
        make_run(tmp_path, 2, seed, None, kind=ORDER, curve=two, status="running" if seed else "interrupted",
                 summary_extra={"steps": 1000, "step": 800})
    for config in tmp_path.glob("exp/*/config.yaml"):
        raw = yaml.safe_load(config.read_text())
        raw["train"]["steps"] = 1000
        config.write_text(yaml.safe_dump(raw))
    assert [g.key for g in compare_runs([tmp_path]).groups] == [{"model.layers": 1}]  # no result at the end

    c = compare_runs([tmp_path], at_step=800)
    assert [g.n for g in c.groups] == [3, 3] and c.unfinished == 3 and c.skipped == []
    assert c.groups[1].values == pytest.approx([0.93 + 0.004 * ((s + 7) % 3) for s in range(3)])
    assert c.steps[0].better is True  # 2 layers ahead at 800: the flip at 700, read while they train
    assert [p.step for p in c.steps[0].over_training] == list(range(100, 900, 100))
    assert "3 of 6 runs are still to train on" in c.steps[0].verdict
    assert "3 of them still training or interrupted" in render(c, "markdown")
    obj = json_object(c)
    assert obj["unfinished_runs"] == 3 and obj["at_step"] == 800
    assert {r["status"] for r in obj["groups"][1]["runs"]} == {"running", "interrupted"}

    past = compare_runs([tmp_path], at_step=900)  # the unfinished runs have not got there: skipped, saying why
    assert [g.n for g in past.groups] == [3] and len(past.skipped) == 3
    assert all(s.reason.startswith("--at-step 900: no validation row at step 900") for s in past.skipped)
    assert any(s.reason.endswith("interrupted at step 800 of 1000; run the same train command again to resume it")
               for s in past.skipped)


def test_a_run_is_read_at_a_step_by_the_best_value_it_would_have_kept():
    """Train keeps the best evaluation's weights: a run that starts to overfit keeps its best value."""
    loss = [(100, 2.0), (200, 1.5), (300, 1.7), (400, 1.4)]
    assert training.kept(loss, higher_is_better=False) == [(100, 2.0), (200, 1.5), (300, 1.5), (400, 1.4)]
    accuracy = [(100, 0.5), (200, 0.9), (300, 0.8)]
    assert training.kept(accuracy, higher_is_better=True) == [(100, 0.5), (200, 0.9), (300, 0.9)]


def test_at_step_and_the_trace_use_the_kept_value_of_an_overfitting_run(tmp_path):
    for seed in range(3):
        jitter = 0.001 * seed
        peak = [(100, 0.6 + jitter), (200, 0.9 + jitter), (300, 0.7 + jitter)]  # overfits after step 200
        flat = [(100, 0.5 + jitter), (200, 0.8 + jitter), (300, 0.8 + jitter)]
        make_run(tmp_path, 1, seed, 0.7, kind=ORDER, curve=flat)
        make_run(tmp_path, 2, seed, 0.9, kind=ORDER, curve=peak)
    c = compare_runs([tmp_path], at_step=300)
    assert c.groups[1].values == pytest.approx([0.9, 0.901, 0.902])  # not 0.7: its best weights are kept
    assert c.steps[0].better is True
    assert c.steps[0].over_training[-1].difference == pytest.approx(0.1)


def test_at_step_tunes_by_the_value_at_that_step_not_by_the_end(tmp_path):
    """lr 0.1 leads at step 200 and falls behind later; at step 200 --tune must not know that."""
    fast = [(100, 0.6), (200, 0.7), (300, 0.72), (400, 0.73)]
    slow = [(100, 0.4), (200, 0.5), (300, 0.8), (400, 0.9)]
    for seed in range(3):
        jitter = 0.002 * seed
        for lr, curve in ((0.1, fast), (0.01, slow)):
            points = [(s, v + jitter) for s, v in curve]
            for layers in (1, 2):
                make_run(tmp_path, layers, seed, points[-1][1], kind=ORDER, curve=points, lr=lr,
                         val=max(v for _, v in points))
    early = compare_runs([tmp_path], tune_keys=("train.lr",), at_step=200)
    assert [g.tuning.chosen.value["train.lr"] for g in early.groups] == [0.1, 0.1]
    assert early.groups[0].values == pytest.approx([0.7, 0.702, 0.704])
    end = compare_runs([tmp_path], tune_keys=("train.lr",))
    assert [g.tuning.chosen.value["train.lr"] for g in end.groups] == [0.01, 0.01]


def test_holm_at_each_evaluation_step_spans_the_comparisons_steps(tmp_path):
    flip_study(tmp_path, seeds=3)
    for seed in range(3):  # a third depth, level with the second
        three = [(100 * (i + 1), 0.3 + 0.09 * i + 0.003 * ((seed + 2 * i) % 3)) for i in range(10)]
        make_run(tmp_path, 3, seed, three[-1][1], kind=ORDER, curve=three)
    c = compare_runs([tmp_path])
    first, second = c.steps
    for p, q in zip(first.over_training, second.over_training, strict=True):
        assert p.family == q.family == 2
        low, high = sorted((p.p, q.p))
        assert min(p.p_adjusted, q.p_adjusted) == pytest.approx(min(1.0, 2 * low))


def test_over_training_json_fields(tmp_path):
    flip_study(tmp_path, seeds=3)
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    step = json.loads(result.stdout)["steps"][0]
    first = step["over_training"][0]
    assert {"step", "difference", "ci95", "p", "p_adjusted", "family", "verdict", "n", "sequences",
            "characters"} <= set(first)
    assert first["step"] == 100 and first["n"] == [3, 3] and first["verdict"] in ("better", "worse",
                                                                                   "not distinguishable")
    assert step["ordering_changes"] == [FLIP] and step["over_training_split"] == "val"
    assert step["evidence_asked"] == "auto" and step["at_step"] is None
    groups = json.loads(result.stdout)["groups"]
    assert [(g["converged"], g["not_converged"]) for g in groups] == [(3, 0), (0, 3)]


def test_sequences_and_characters_seen_follow_batch_and_seq_len(tmp_path):
    flip_study(tmp_path, seeds=2)
    for config in tmp_path.glob("exp/*/config.yaml"):
        raw = yaml.safe_load(config.read_text())
        raw["train"]["batch_size"] = 32
        config.write_text(yaml.safe_dump(raw))
    point = compare_runs([tmp_path]).steps[0].over_training[1]
    assert (point.step, point.sequences, point.characters) == (200, 200 * 32, 200 * 32 * 50)  # seq_len 50


def test_plot_over_training_writes_an_image(tmp_path):
    pytest.importorskip("matplotlib")
    flip_study(tmp_path / "runs", seeds=2)
    out = tmp_path / "over.png"
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "runs"), "--plot-over-training", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(app, ["compare", str(tmp_path / "runs"), "--plot-over-training", "x.gif"])
    assert bad.exit_code == 2 and "unknown image type '.gif'" in bad.output


# -- convergence in compare, and what the verdict says about it --------------------------------------------


def test_not_converged_runs_make_it_a_comparison_of_learning_speed(tmp_path):
    flip_study(tmp_path, seeds=3)
    (step,) = compare_runs([tmp_path]).steps
    assert ("3 of 6 runs had not converged (validation accuracy still improving at the end): this compares "
            "learning speed at 100 steps, not what each can reach") in step.verdict


def test_summary_converged_wins_over_the_curve(tmp_path):
    flip_study(tmp_path, seeds=3, summary_extra={"converged": True})
    c = compare_runs([tmp_path])
    assert [g.n_converged for g in c.groups] == [3, 3]
    assert "had not converged" not in c.steps[0].verdict
    assert "converged" in render(c, "markdown")


def test_nothing_learned_says_train_longer_instead_of_more_seeds(tmp_path):
    # every run sits at the 1/6 baseline of the adding problem
    for seed, (a, b) in enumerate([(0.166, 0.167), (0.165, 0.1668), (0.1671, 0.1655)]):
        make_run(tmp_path, 1, seed, a)
        make_run(tmp_path, 2, seed, b)
    (step,) = compare_runs([tmp_path]).steps
    assert step.learned is False and step.better is None and step.seeds_needed is None
    assert "no depth learned the task: train longer" in step.verdict and "seeds per depth" not in step.verdict
    # one run that learned (0.05, well below 95% of the baseline) is enough to size a study again
    make_run(tmp_path, 2, 3, 0.05)
    (step,) = compare_runs([tmp_path]).steps
    assert step.learned is True and "no depth learned" not in step.verdict


# -- the evidence a verdict rests on ------------------------------------------------------------------------


def accuracy_study(root: Path, values: dict[int, list[float]], threshold: float = 0.95) -> Path:
    kind = {**ORDER, "solve_threshold": threshold}
    for layers, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            make_run(root, layers, seed, value, kind=kind)
    return root


def test_one_outlier_across_the_threshold_does_not_switch_to_solve_rates(tmp_path):
    # the user's data: 1/5 → 0/5 "solved" at 0.955 against 0.93–0.945, one unimodal cloud
    study = accuracy_study(tmp_path, {1: [0.955, 0.94, 0.935, 0.945, 0.93], 2: [0.94, 0.93, 0.945, 0.935, 0.94]})
    c = compare_runs([study])
    assert [g.n_solved for g in c.groups] == [1, 0]
    assert (c.steps[0].evidence, c.steps[0].test) == ("mean", "welch")
    assert c.steps[0].verdict.startswith("2 vs 1 layers: accuracy -")
    forced = compare_runs([study], evidence="solve-rate")
    assert (forced.steps[0].evidence, forced.steps[0].test) == ("solved", "boschloo")
    assert "verdicts rest on the solve rates (--evidence)" in render(forced, "markdown")


def test_two_runs_on_each_side_switch_and_means_can_be_forced(tmp_path):
    study = accuracy_study(tmp_path, {1: [0.99, 0.98, 0.3], 2: [0.3, 0.31, 0.29]})  # 2 solved, 4 not
    assert compare_runs([study]).steps[0].evidence == "solved"
    assert compare_runs([study], evidence="means").steps[0].evidence == "mean"


def test_bad_evidence_and_solve_rate_without_a_threshold_exit_2(tmp_path):
    accuracy_study(tmp_path, {1: [0.9, 0.8], 2: [0.7, 0.6]})
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--evidence", "votes"])
    assert result.exit_code == 2 and "--evidence: unknown choice 'votes'; valid choices: auto, means, solve-rate" \
        in result.output
    arrays = {"task": "arrays", "metric": "accuracy", "higher_is_better": True, "baseline": 0.5,
              "baselines": {"trivial": 0.5}, "solve_threshold": None}
    for layers in (1, 2):
        for seed in range(2):
            path = make_run(tmp_path / "arr", layers, seed, 0.7 + 0.01 * seed, kind={**arrays, "solve_threshold": 0.6})
            summary = json.loads((path / "summary.json").read_text())
            summary.update(solve_threshold=None, solved=None)
            (path / "summary.json").write_text(json.dumps(summary))
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "arr"), "--evidence", "solve-rate"])
    assert result.exit_code == 2 and "these runs have no solve threshold" in result.output
    table = CliRunner().invoke(app, ["compare", str(tmp_path / "arr"), "--format", "markdown"])
    assert table.exit_code == 0 and "| solved" not in table.output and "solved:" not in table.output


def test_round_two_arrays_folders_lose_their_default_solve_counts(tmp_path):
    """An arrays run of an earlier version was judged by a default threshold; compare no longer shows it."""
    arrays = {"task": "arrays", "metric": "accuracy", "higher_is_better": True, "baseline": 0.5,
              "baselines": {"trivial": 0.5}, "solve_threshold": 0.95}
    for layers in (1, 2):
        for seed in range(3):
            make_run(tmp_path, layers, seed, 0.9 + 0.03 * seed, kind=arrays)
    c = compare_runs([tmp_path])
    assert [g.n_solved for g in c.groups] == [None, None] and c.solve_threshold is None
    # set by the user (task.solve_threshold in config.yaml): counted
    for config in tmp_path.glob("exp/*/config.yaml"):
        raw = yaml.safe_load(config.read_text())
        raw["task"]["solve_threshold"] = 0.95
        config.write_text(yaml.safe_dump(raw))
    assert [g.n_solved for g in compare_runs([tmp_path]).groups] == [1, 1]


# -- the solve threshold belongs to the user ----------------------------------------------------------------


def test_solve_threshold_override_keeps_the_dataset(tmp_path):
    cls = TASKS["adding"]
    default = cls.Config(name="adding", seq_len=8, n_train=32, n_val=16, n_test=16)
    mine = default.model_copy(update={"solve_threshold": 0.05})
    assert config_hash(default) == config_hash(mine)  # a scoring choice, not part of the data
    meta = load(default, tmp_path, log=lambda _: None).meta
    assert meta["solve_threshold"] == make_task(default).solve_threshold(meta["baselines"])  # the task's own
    assert load(mine, tmp_path, log=lambda _: None).meta["solve_threshold"] == 0.05
    assert len(list(tmp_path.iterdir())) == 2  # one dataset folder and its lock file: generated once


def test_every_task_takes_a_solve_threshold_and_arrays_has_none_by_default():
    for name, cls in TASKS.items():
        assert "solve_threshold" in cls.Config.model_fields, name
    arrays = TASKS["arrays"]
    cfg = arrays.Config(path="x.npz", kind="sequence-class")
    assert cfg.solve_threshold is None and make_task(cfg).threshold({"trivial": 0.5}) is None
    cfg = arrays.Config(path="x.npz", kind="sequence-class", solve_threshold=0.8)
    assert make_task(cfg).threshold({"trivial": 0.5}) == 0.8
    adding = TASKS["adding"].Config(name="adding")
    assert make_task(adding).threshold({"trivial": 0.16, "analytic": 1 / 6}) == pytest.approx(1 / 600)  # its own


def test_an_unset_threshold_leaves_config_yaml_as_earlier_versions_wrote_it(tmp_path):
    """A run folder of an earlier version (no task.solve_threshold in its config.yaml) is still the same run:
    train skips it when completed instead of refusing it as "a different config"."""
    dirs = ["--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")]
    config = write_config(tmp_path / "c.yaml", TINY)
    assert CliRunner().invoke(app, ["train", str(config), "-q", *dirs]).exit_code == 0
    (saved,) = (tmp_path / "runs" / "tiny").glob("*/config.yaml")
    assert "solve_threshold" not in yaml.safe_load(saved.read_text())["task"]
    summary = json.loads((saved.parent / "summary.json").read_text())
    again = CliRunner().invoke(app, ["train", str(config), *dirs])
    assert again.exit_code == 0, again.output
    assert json.loads((saved.parent / "summary.json").read_text()) == summary  # not trained again
    set_yaml = TASKS["adding"].Config(name="adding", solve_threshold=0.01).model_dump(mode="json")
    assert set_yaml["solve_threshold"] == 0.01


def test_a_bad_solve_threshold_is_refused_naming_the_key(tmp_path):
    raw = {**TINY, "task": {**TINY["task"], "solve_threshold": "low"}}
    result = CliRunner().invoke(app, ["train", str(write_config(tmp_path / "c.yaml", raw)), "-q",
                                      "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2 and "solve_threshold" in result.output


def test_train_writes_the_threshold_it_used_and_converged(tmp_path):
    raw = {**TINY, "train": {**TINY["train"], "steps": 60}}
    config = write_config(tmp_path / "c.yaml", raw)
    result = CliRunner().invoke(app, ["train", str(config), "-q", "--set", "task.solve_threshold=0.5",
                                      "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    (summary_path,) = (tmp_path / "runs").glob("tiny/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["solve_threshold"] == 0.5
    assert summary["solved"] == (summary["test_metric"] <= 0.5)
    assert "converged" in summary and summary["converged"] in (True, False)  # 6 evaluations: enough to judge
    expected = convergence.run_converged(RunFolder(summary_path.parent).metrics(), "mse", False)
    assert summary["converged"] is expected


# -- compare's wording (issue 22) ---------------------------------------------------------------------------


def test_derived_sizes_that_cannot_match_say_why_and_what_to_do(tmp_path):
    for seed in range(3):
        for layers, params in ((1, 5242), (2, 4952)):
            path = make_run(tmp_path, layers, seed, 0.1 + 0.01 * seed + 0.02 * layers, params=params)
            config = path / "config.yaml"
            raw = yaml.safe_load(config.read_text())
            raw["model"]["param_budget"] = 5000
            config.write_text(yaml.safe_dump(raw))
    (step,) = compare_runs([tmp_path]).steps
    assert ("parameters differ: 5,242 → 4,952: both sizes were derived from model.param_budget 5,000, but at that "
            "budget one hidden unit moves the count of a model this deep by more than 5%, so the depths cannot be "
            "matched (not an equal-budget comparison); set a larger model.param_budget") in step.verdict


def test_few_runs_give_no_probability_of_improvement(tmp_path):
    for layers, values in ((1, [0.1, 0.12]), (2, [0.05, 0.06])):
        for seed, v in enumerate(values):
            make_run(tmp_path, layers, seed, v)
    (step,) = compare_runs([tmp_path]).steps
    assert "P(2 layers beats 1): too few runs to estimate (n=2 vs 2; 3 or more per group)" in step.verdict
    assert "= 0.00 [0.00, 0.00]" not in step.verdict and "= 1.00 [1.00, 1.00]" not in step.verdict


def test_no_iqm_footnote_without_an_iqm_column(tmp_path):
    for layers, values in ((1, [0.1, 0.12]), (2, [0.05, 0.06])):
        for seed, v in enumerate(values):
            make_run(tmp_path, layers, seed, v)
    result = CliRunner().invoke(app, ["compare", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "IQM" not in result.output
    three = CliRunner().invoke(app, ["compare", str(tmp_path), "--format", "markdown"])
    assert "| IQM |" in three.output and "IQM: mean of the middle half" in three.output


def test_json_values_are_finite_and_known_fields_stay(tmp_path):
    flip_study(tmp_path, seeds=3)
    obj = json_object(compare_runs([tmp_path]))
    assert list(obj)[:5] == ["by", "metric", "groups", "steps", "skipped"]  # round 2's, first and in order
    for point in obj["steps"][0]["over_training"]:
        assert all(not isinstance(v, float) or math.isfinite(v) for v in point.values())
    assert ADDING["metric"] == "mse"  # the shared fixtures are the ones test_compare uses


def test_an_arrays_run_has_no_solve_count_unless_the_user_sets_a_threshold(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6, 1)).astype(np.float32)
    np.savez(tmp_path / "signs.npz", inputs=x, targets=(x.sum(axis=(1, 2)) > 0).astype(np.int64))
    raw = {"experiment": "mine", "task": {"name": "arrays", "path": str(tmp_path / "signs.npz"),
                                          "kind": "sequence-class"},
           "model": {"type": "lstm", "hidden_size": 8},
           "train": {"steps": 20, "batch_size": 16, "eval_every": 10, "lr": 0.01, "threads": 1, "device": "cpu"}}
    config = write_config(tmp_path / "mine.yaml", raw)
    dirs = ["--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")]
    result = CliRunner().invoke(app, ["train", str(config), "-q", *dirs])
    assert result.exit_code == 0, result.output
    (summary_path,) = (tmp_path / "runs" / "mine").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["solve_threshold"] is None and summary["solved"] is None
    assert summary["converged"] is None  # 2 evaluations: too few to judge
    table = CliRunner().invoke(app, ["compare", str(tmp_path / "runs"), "--format", "markdown"])
    assert table.exit_code == 0 and "| solved |" not in table.output and "solved:" not in table.output
    mine = CliRunner().invoke(app, ["train", str(config), "-q", "--set", "experiment=set",
                                    "--set", "task.solve_threshold=0.5", *dirs])
    assert mine.exit_code == 0, mine.output
    (summary_path,) = (tmp_path / "runs" / "set").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["solve_threshold"] == 0.5 and summary["solved"] == (summary["test_metric"] >= 0.5)
    assert len(list((tmp_path / "data").glob("arrays-*/meta.json"))) == 1  # the threshold left the dataset alone
