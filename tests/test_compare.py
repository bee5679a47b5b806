"""compare: grouping across seeds, statistics, step verdicts, skipped runs, formats and plots.

Run folders are written by hand here (config.yaml, summary.json, metrics.csv), so every number a test
checks is known; tests/test_sweep.py compares run folders that real training wrote.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lstmlab import stats
from lstmlab.cli import app
from lstmlab.compare import compare_runs, render
from lstmlab.errors import UserError

ADDING = {"task": "adding", "metric": "mse", "higher_is_better": False, "baseline": 0.1667,
          "baselines": {"trivial": 0.1667}, "solve_threshold": 0.001667}
ORDER = {"task": "temporal-order", "metric": "accuracy", "higher_is_better": True, "baseline": 0.25,
         "baselines": {"trivial": 0.25}, "solve_threshold": 0.99}


def make_run(root: Path, layers: int, seed: int, value: float | None, *, kind=ADDING, model_type="lstm",
             status="completed", params=20000, hidden=None, curve=(), summary_extra=None, drop=()) -> Path:
    """A run folder as train() writes it, with the given test metric."""
    path = root / "exp" / f"L{layers}-{model_type}-s{seed}"
    path.mkdir(parents=True)
    config = {"experiment": "exp", "task": {"name": kind["task"], "seq_len": 50},
              "model": {"type": model_type, "layers": layers, "hidden_size": hidden or 70 // layers},
              "train": {"seed": seed, "steps": 100}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {"status": status, "run": path.name, **kind, "model_type": model_type, "layers": layers,
               "hidden_size": hidden or 70 // layers, "params": params, "steps": 100, "step": 100, "wall_s": 1.5}
    if status == "completed":
        threshold = kind["solve_threshold"]
        solved = value >= threshold if kind["higher_is_better"] else value <= threshold
        summary.update({"test": {kind["metric"]: value}, "test_metric": value, "solved": solved})
    summary.update(summary_extra or {})
    for key in drop:
        summary.pop(key, None)
    (path / "summary.json").write_text(json.dumps(summary))
    rows = [f"{step},1.0,val,{v},{v},0.01,0.5,1.0,100.0" for step, v in curve]
    metric = kind["metric"]
    (path / "metrics.csv").write_text(f"step,epoch,split,loss,{metric},lr,grad_norm,elapsed_s,seq_per_s\n"
                                      + "".join(r + "\n" for r in rows))
    return path


def depth_study(root: Path, values: dict[int, list[float]], **kwargs) -> Path:
    for layers, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            make_run(root, layers, seed, value, **kwargs)
    return root


def test_groups_summarise_seeds(tmp_path):
    values = {1: [0.16, 0.15, 0.17], 2: [0.05, 0.07, 0.06], 3: [0.04, 0.05, 0.06]}
    c = compare_runs([depth_study(tmp_path, values)])
    assert [g.key for g in c.groups] == [{"model.layers": 1}, {"model.layers": 2}, {"model.layers": 3}]
    g = c.to_dict()["groups"][1]
    assert g["n"] == 3
    assert g["mean"] == pytest.approx(0.06)
    assert g["std"] == pytest.approx(0.01)  # deviations -0.01, 0.01, 0: sqrt(0.0002 / 2)
    half = 4.302653 * 0.01 / 3**0.5  # t_{0.975, 2} · s / sqrt(n)
    assert g["ci95"] == [pytest.approx(0.06 - half, abs=1e-6), pytest.approx(0.06 + half, abs=1e-6)]
    assert g["median"] == pytest.approx(0.06)
    assert g["best"] == pytest.approx(0.05)  # lower is better for mse
    assert g["solved"] == 0.0
    assert g["params"] == {"mean": 20000, "min": 20000, "max": 20000}
    assert g["hidden_size"] == [35]
    assert [r["seed"] for r in g["runs"]] == [0, 1, 2]
    assert c.to_dict()["metric"] == {"name": "mse", "task": "adding", "higher_is_better": False, "baseline": 0.1667,
                                     "baselines": {"trivial": 0.1667}, "solve_threshold": 0.001667, "split": "test"}


def test_step_verdicts_follow_the_direction_of_better(tmp_path):
    lower_better = compare_runs([depth_study(tmp_path / "a", {1: [0.16, 0.15, 0.17], 2: [0.05, 0.07, 0.06]})])
    (step,) = lower_better.steps
    expected = stats.welch_interval([0.16, 0.15, 0.17], [0.05, 0.07, 0.06])
    assert step.diff == pytest.approx(-0.1)
    assert step.ci95 == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert step.relative == pytest.approx(-0.1 / 0.16)
    assert step.better is True
    assert step.verdict.startswith("2 vs 1 layers: mse -0.1 (-62%), 95% CI [")
    assert "better, beyond seed noise at n=3" in step.verdict

    worse = compare_runs([depth_study(tmp_path / "b", {1: [0.05, 0.07, 0.06], 2: [0.16, 0.15, 0.17]})])
    assert worse.steps[0].better is False and "worse, beyond seed noise" in worse.steps[0].verdict

    higher_better = compare_runs([depth_study(tmp_path / "c", {1: [0.50, 0.52, 0.51], 2: [0.90, 0.91, 0.92]},
                                              kind=ORDER)])
    step = higher_better.steps[0]
    assert step.diff == pytest.approx(0.4) and step.better is True
    assert "accuracy +0.4 (+78%)" in step.verdict and "better, beyond seed noise" in step.verdict
    assert higher_better.to_dict()["groups"][1]["best"] == pytest.approx(0.92)


def test_overlapping_seeds_are_not_called_a_difference(tmp_path):
    c = compare_runs([depth_study(tmp_path, {1: [0.10, 0.14, 0.12], 2: [0.11, 0.09, 0.13]})])
    assert c.steps[0].better is None
    assert "not distinguishable from seed noise at n=3" in c.steps[0].verdict


def test_bimodal_solved_fraction_is_called_out(tmp_path):
    # one seed solves with 2 layers, the other stays at the baseline: the mean alone would read as "halved"
    c = compare_runs([depth_study(tmp_path, {1: [0.165, 0.166], 2: [0.0008, 0.166]})])
    assert [g.solved for g in c.groups] == [0.0, 0.5]
    verdict = c.steps[0].verdict
    assert "solved 0/2 → 1/2" in verdict and "bimodal across seeds" in verdict
    assert "not distinguishable from seed noise at n=2" in verdict


def test_single_seed_groups_have_no_spread(tmp_path):
    c = compare_runs([depth_study(tmp_path, {1: [0.16], 2: [0.05, 0.07]})])
    g = c.to_dict()["groups"][0]
    assert (g["n"], g["std"], g["ci95"]) == (1, None, None)
    assert c.steps[0].ci95 is None and "no interval: a group has n=1" in c.steps[0].verdict
    markdown = render(c, "markdown")
    assert "— (n=1)" in markdown and "n=1 groups have no std or interval" in markdown


def test_unequal_parameter_counts_are_flagged(tmp_path):
    make_run(tmp_path, 1, 0, 0.1, params=20000)
    make_run(tmp_path, 1, 1, 0.1, params=20000)
    make_run(tmp_path, 2, 0, 0.1, params=30000)
    make_run(tmp_path, 2, 1, 0.1, params=31000)
    c = compare_runs([tmp_path])
    assert "parameters differ: 20,000 → 30,500 (not an equal-budget comparison)" in c.steps[0].verdict
    assert "30,500 (30,000–31,000)" in render(c, "markdown")


def test_steps_stay_within_other_by_keys(tmp_path):
    for model_type in ("lstm", "gru"):
        depth_study(tmp_path / model_type, {1: [0.1, 0.2], 2: [0.1, 0.2], 3: [0.1, 0.2]}, model_type=model_type)
    c = compare_runs([tmp_path], by=("model.layers", "model.type"))
    assert len(c.groups) == 6
    labels = [s.verdict.split(":")[0] for s in c.steps]
    assert labels == ["2 vs 1 layers (model.type=gru)", "3 vs 2 layers (model.type=gru)",
                      "2 vs 1 layers (model.type=lstm)", "3 vs 2 layers (model.type=lstm)"]
    by_type = compare_runs([tmp_path], by=("model.type",))
    assert [g.key["model.type"] for g in by_type.groups] == ["gru", "lstm"] and by_type.groups[0].n == 6
    assert by_type.steps[0].verdict.startswith("model.type=lstm vs gru: mse +0 (+0.0%)")


def test_runs_that_cannot_be_compared_are_listed_with_the_reason(tmp_path):
    depth_study(tmp_path, {1: [0.1, 0.12], 2: [0.05, 0.06]})
    make_run(tmp_path, 3, 0, None, status="running")
    make_run(tmp_path, 3, 1, None, status="interrupted", summary_extra={"step": 40})
    make_run(tmp_path, 3, 2, None, status="failed", summary_extra={"error": "FloatingPointError: loss became nan"})
    make_run(tmp_path, 3, 3, 0.9, kind=ORDER)
    (make_run(tmp_path, 3, 4, 0.1) / "summary.json").write_text('{"status": "compl')
    (make_run(tmp_path, 3, 5, 0.1) / "summary.json").unlink()
    (make_run(tmp_path, 3, 6, 0.1) / "config.yaml").write_text("model: [unclosed")
    c = compare_runs([tmp_path])
    assert [g.n for g in c.groups] == [2, 2]
    reasons = {s.path.name: s.reason for s in c.skipped}
    assert reasons["L3-lstm-s0"].startswith("incomplete: status running")
    assert reasons["L3-lstm-s1"].startswith("interrupted at step 40 of 100")
    assert reasons["L3-lstm-s2"] == "failed: FloatingPointError: loss became nan"
    assert reasons["L3-lstm-s3"].startswith("task temporal-order (metric accuracy) differs from the majority's "
                                            "adding (mse)")
    assert reasons["L3-lstm-s4"].startswith("unreadable summary.json")
    assert reasons["L3-lstm-s5"].startswith("no summary.json")
    assert reasons["L3-lstm-s6"].startswith("unreadable config.yaml")
    listed = json.loads(render(c, "json"))["skipped"]
    assert len(listed) == 7 and all(set(s) == {"path", "reason"} for s in listed)
    assert "Skipped 7 run(s):" in render(c, "markdown")


def test_run_folders_of_earlier_versions(tmp_path):
    """No solved, params, hidden_size, test_metric or higher_is_better: read what is there, derive the rest."""
    for layers, value in ((1, 0.1), (2, 0.0001)):
        make_run(tmp_path, layers, 0, value, drop=("solved", "params", "hidden_size", "test_metric",
                                                   "higher_is_better", "baselines"))
    c = compare_runs([tmp_path])
    assert c.higher_is_better is False  # from the task registry
    assert [g.values for g in c.groups] == [[0.1], [0.0001]]  # from summary["test"]
    assert [g.solved for g in c.groups] == [0.0, 1.0]  # from solve_threshold
    assert c.groups[0].params() is None
    render(c, "table"), render(c, "markdown"), render(c, "csv"), render(c, "json")


def test_bad_input_names_what_is_valid(tmp_path):
    with pytest.raises(UserError, match="no run folders under"):
        compare_runs([tmp_path])
    depth_study(tmp_path, {1: [0.1], 2: [0.2]})
    with pytest.raises(UserError) as error:
        compare_runs([tmp_path], by=("model.layer",))
    message = str(error.value)
    assert message.startswith("--by model.layer: not a config key of these runs")
    assert "keys that vary across these runs: model.hidden_size, model.layers" in message
    assert "train.seed" in message


def test_json_is_one_object_per_the_contract(tmp_path):
    depth_study(tmp_path, {1: [0.16, 0.15], 2: [0.05, 0.07], 3: [0.04, 0.05]})
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert list(obj) == ["by", "metric", "groups", "steps", "skipped"]
    assert obj["by"] == ["model.layers"]
    assert [(g["key"], g["n"]) for g in obj["groups"]] == [({"model.layers": i}, 2) for i in (1, 2, 3)]
    assert {"key", "n", "mean", "std", "ci95", "solved"} <= set(obj["groups"][0])
    assert [(s["from"], s["to"]) for s in obj["steps"]] == [({"model.layers": 1}, {"model.layers": 2}),
                                                            ({"model.layers": 2}, {"model.layers": 3})]


def test_markdown_and_csv_tables(tmp_path):
    depth_study(tmp_path, {1: [0.16, 0.15], 2: [0.05, 0.07]})
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--format", "markdown"])
    lines = result.stdout.splitlines()
    assert lines[0].startswith("**adding: test mse (lower is better); trivial baseline 0.1667")
    assert lines[2].startswith("| model.layers | n | mean | std | 95% CI | median | best | solved | params |")
    assert lines[4].startswith("| 1 | 2 | 0.155 | 0.00707 | [")
    assert any(line.startswith("- 2 vs 1 layers: mse -0.095") for line in lines)

    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["model.layers"], r["n"]) for r in rows] == [("1", "2"), ("2", "2")]
    assert float(rows[1]["mean"]) == pytest.approx(0.06) and rows[1]["solved"] == "0.0"


def test_table_and_cli_errors(tmp_path):
    depth_study(tmp_path, {1: [0.16, 0.15], 2: [0.05, 0.07]})
    result = CliRunner().invoke(app, ["compare", str(tmp_path)])
    assert result.exit_code == 0 and "2 vs 1 layers: mse -0.095" in result.stdout
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--by", "model.nope"])
    assert result.exit_code == 2 and "--by model.nope: not a config key" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["compare", str(empty)])
    assert result.exit_code == 2 and "no run folders under" in result.stderr


def test_plot_files(tmp_path):
    pytest.importorskip("matplotlib")
    curve = [(10, 0.16), (20, 0.1), (30, 0.05)]
    depth_study(tmp_path / "runs", {1: [0.16, 0.15], 2: [0.05, 0.0009]}, curve=curve)
    for suffix in ("png", "svg"):
        result = CliRunner().invoke(app, ["compare", str(tmp_path / "runs"), "--plot", str(tmp_path / f"p.{suffix}")])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "p.svg").read_bytes()[:500]
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "runs"), "--plot", str(tmp_path / "p.bmp")])
    assert result.exit_code == 2 and "valid suffixes: .png, .svg, .pdf" in result.stderr


def test_plot_without_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    depth_study(tmp_path, {1: [0.16], 2: [0.05]})
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"install lstmlab\[plot\]"):
        from lstmlab.compare import plot

        plot(compare_runs([tmp_path]), tmp_path / "p.png")


def test_groups_that_pool_different_configs_are_flagged(tmp_path):
    depth_study(tmp_path / "a", {1: [0.1], 2: [0.05]})
    depth_study(tmp_path / "b", {1: [0.2], 2: [0.15]})
    config = tmp_path / "b" / "exp" / "L1-lstm-s0" / "config.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["train"]["lr"] = 0.1
    config.write_text(yaml.safe_dump(raw))
    c = compare_runs([tmp_path])
    assert [g.mixed() for g in c.groups] == [["train.lr"], []]
    assert json.loads(render(c, "json"))["groups"][0]["mixed"] == ["train.lr"]
    assert "differ in train.lr, not only in the seed; add --by train.lr to separate them" in render(c, "markdown")
    assert compare_runs([tmp_path], by=("model.layers", "train.lr")).groups[0].mixed() == []
    assert "warning: group model.layers=2 holds several runs of seed(s) [0]" in render(c, "markdown")


def test_only_unfinished_runs(tmp_path):
    make_run(tmp_path, 1, 0, None, status="running", curve=[(10, 0.2), (20, 0.1)])
    c = compare_runs([tmp_path])
    assert c.groups == [] and c.steps == []
    assert c.skipped[0].reason.startswith("incomplete: status running at step 20 of 100 (last evaluation)")
    assert render(c, "markdown").startswith("**no completed runs to compare; 1 run folder(s) skipped**")
    assert json.loads(render(c, "json"))["groups"] == []


def test_large_relative_changes_read_as_factors(tmp_path):
    c = compare_runs([depth_study(tmp_path, {1: [0.001, 0.001], 2: [0.5, 0.5]})])
    assert c.steps[0].verdict.startswith("2 vs 1 layers: mse +0.499 (×500), 95% CI [0.499, 0.499] — worse")


def test_identical_groups_at_a_ceiling(tmp_path):
    c = compare_runs([depth_study(tmp_path, {1: [1.0, 1.0, 1.0], 2: [1.0, 1.0, 1.0]}, kind=ORDER)])
    assert c.steps[0].verdict == ("2 vs 1 layers: accuracy the same — every run of both groups scored 1; all solved: "
                                  "at this ceiling the metric cannot tell the depths apart")
