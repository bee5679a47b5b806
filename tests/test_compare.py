"""compare: grouping across seeds, statistics, step verdicts, skipped runs, formats and plots.

Run folders are written by hand here (config.yaml, summary.json, metrics.csv), so every number a test
checks is known; tests/test_sweep.py compares run folders that real training wrote.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from lstmlab.analysis.compare import compare_runs, json_object, render, stats
from lstmlab.analysis.compare.plot import plot_comparison
from lstmlab.cli import app
from lstmlab.errors import UserError

ADDING = {"task": "adding", "metric": "mse", "higher_is_better": False, "baseline": 0.1667,
          "baselines": {"trivial": 0.1667}, "solve_threshold": 0.001667}
ORDER = {"task": "temporal-order", "metric": "accuracy", "higher_is_better": True, "baseline": 0.25,
         "baselines": {"trivial": 0.25}, "solve_threshold": 0.99}


def make_run(root: Path, layers: int, seed: int, value: float | None, *, kind=ADDING, model_type="lstm",
             status="completed", params=20000, hidden=None, curve=(), summary_extra=None, drop=(), lr=None,
             val=None) -> Path:
    """A run folder as train() writes it, with the given test metric (and best validation metric `val`)."""
    path = root / "exp" / (f"L{layers}-{model_type}-s{seed}" + (f"-lr{lr}" if lr is not None else ""))
    path.mkdir(parents=True)
    config = {"experiment": "exp", "task": {"name": kind["task"], "seq_len": 50},
              "model": {"type": model_type, "layers": layers, "hidden_size": hidden or 70 // layers},
              "train": {"seed": seed, "steps": 100, **({"lr": lr} if lr is not None else {})}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {"status": status, "run": path.name, **kind, "model_type": model_type, "layers": layers,
               "hidden_size": hidden or 70 // layers, "params": params, "steps": 100, "step": 100, "wall_s": 1.5}
    if status == "completed":
        threshold = kind["solve_threshold"]
        solved = value >= threshold if kind["higher_is_better"] else value <= threshold
        summary.update({"test": {kind["metric"]: value}, "test_metric": value, "solved": solved})
        if val is not None:
            summary["best_val"] = {kind["metric"]: val, "loss": val}
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
    g = json_object(c)["groups"][1]
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
    assert json_object(c)["metric"] == {"name": "mse", "task": "adding", "higher_is_better": False, "baseline": 0.1667,
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
    assert json_object(higher_better)["groups"][1]["best"] == pytest.approx(0.92)


def test_overlapping_seeds_are_not_called_a_difference(tmp_path):
    c = compare_runs([depth_study(tmp_path, {1: [0.10, 0.14, 0.12], 2: [0.11, 0.09, 0.13]})])
    assert c.steps[0].better is None
    assert "not distinguishable from seed noise at n=3" in c.steps[0].verdict


def test_bimodal_solved_fraction_is_called_out(tmp_path):
    # one seed solves with 2 layers, the other stays at the baseline: the mean alone would read as "halved"
    study = depth_study(tmp_path, {1: [0.165, 0.166], 2: [0.0008, 0.166]})
    assert compare_runs([study]).steps[0].evidence == "mean"  # auto: one run across the threshold does not switch
    c = compare_runs([study], evidence="solve-rate")
    assert [g.solved for g in c.groups] == [0.0, 0.5]
    step = c.steps[0]
    # asked for: the solve rates decide, by Boschloo's exact test
    assert (step.evidence, step.test) == ("solved", "boschloo")
    assert step.p == pytest.approx(scipy_stats.boschloo_exact([[1, 0], [1, 2]]).pvalue)
    assert step.verdict.startswith("2 vs 1 layers: solved 0/2 → 1/2 — not distinguishable from seed noise at n=2; "
                                   "mse -0.0821 (-50%), a mean over solved and unsolved runs: read the per-seed values")
    assert f"Boschloo p = {step.p:.2g}" in step.verdict
    assert step.seeds_needed == stats.seeds_for_rates(0.0, 0.5)
    assert f"about {step.seeds_needed} seeds per depth would settle this" in step.verdict


def test_single_seed_groups_have_no_spread(tmp_path):
    c = compare_runs([depth_study(tmp_path, {1: [0.16], 2: [0.05, 0.07]})])
    g = json_object(c)["groups"][0]
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
    assert list(obj) == ["by", "metric", "groups", "steps", "skipped", "at_step", "unfinished_runs"]  # added last
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
    assert lines[2] == "| model.layers | n | mean | std | 95% CI | IQM | median | best | solved | params | hidden |"
    assert lines[4] == "| 1 | 2 | 0.155 | 0.00707 | [0.15, 0.16] | 0.155 | 0.155 | 0.15 | 0/2 (0%–84%) | 20,000 | 70 |"
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
        plot_comparison(compare_runs([tmp_path]), tmp_path / "p.png")


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
    assert ("differ in train.lr, not only in the seed; use --by model.layers --by train.lr to separate them"
            in render(c, "markdown"))
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
    c = compare_runs([depth_study(tmp_path, {1: [0.002, 0.002], 2: [1.0, 1.0]})])  # none solved: the means decide
    assert c.steps[0].verdict.startswith("2 vs 1 layers: mse +0.998 (×500), 95% CI [0.998, 0.998] — worse")


def test_identical_groups_at_a_ceiling(tmp_path):
    c = compare_runs([depth_study(tmp_path, {1: [1.0, 1.0, 1.0], 2: [1.0, 1.0, 1.0]}, kind=ORDER)])
    assert c.steps[0].verdict == ("2 vs 1 layers: accuracy the same — every run of both groups scored 1; all solved: "
                                  "at this ceiling the metric cannot tell the depths apart")


# -- round 2: statistics in the JSON, the evidence a verdict rests on, Holm, --tune --------------------------


def test_round_one_json_fields_keep_their_values(tmp_path, monkeypatch):
    """compare --format json of a study still carries every field of the earlier output with the same value.

    tests/data/compare-round1.json is what the earlier compare printed for these run folders; new fields are
    added beside the old ones, and a verdict keeps its earlier text as its beginning.
    """
    monkeypatch.chdir(tmp_path)
    root = Path("runs")
    values = {1: [0.16, 0.15, 0.17], 2: [0.05, 0.07, 0.06], 3: [0.01, 0.012, 0.011], 4: [0.012, 0.009, 0.014]}
    for layers, per_seed in values.items():
        for seed, v in enumerate(per_seed):
            make_run(root, layers, seed, v, params=20000 + 10 * layers, curve=[(10, 0.2), (20, v * 1.1)],
                     summary_extra={"best_val": {"mse": v * 1.1, "loss": v * 1.1}})
    make_run(root, 4, 5, None, status="failed", summary_extra={"error": "FloatingPointError: loss became nan"})
    result = CliRunner().invoke(app, ["compare", "runs", "--format", "json"])
    assert result.exit_code == 0, result.output
    new = json.loads(result.stdout)
    old = json.loads((Path(__file__).parent / "data" / "compare-round1.json").read_text())

    def same(old_value, new_value, where):
        if isinstance(old_value, dict):
            assert isinstance(new_value, dict), where
            for key in old_value:
                assert key in new_value, f"{where}.{key} is gone"
                same(old_value[key], new_value[key], f"{where}.{key}")
        elif isinstance(old_value, list):
            assert isinstance(new_value, list) and len(new_value) == len(old_value), where
            for i, (a, b) in enumerate(zip(old_value, new_value, strict=True)):
                same(a, b, f"{where}[{i}]")
        elif where.endswith(".verdict"):
            assert new_value.startswith(old_value), where
        elif isinstance(old_value, float):
            assert new_value == pytest.approx(old_value, rel=1e-12), where
        else:
            assert new_value == old_value, where

    same(old, new, "json")
    assert {"tuned", "grid", "iqm", "iqm_ci95", "median_ci95", "mean_ci95", "solved_ci95"} <= set(new["groups"][0])
    assert {"p_solved", "prob_improvement", "prob_improvement_ci95", "seeds_needed"} <= set(new["steps"][0])


def test_group_statistics_in_json(tmp_path):
    values = {1: [0.16, 0.15, 0.17, 0.5], 2: [0.0008, 0.0009, 0.05, 0.07]}
    g1, g2 = json_object(compare_runs([depth_study(tmp_path, values)]))["groups"]
    assert g1["iqm"] == pytest.approx(stats.iqm(values[1]))
    assert g1["mean_ci95"] == pytest.approx(list(stats.bootstrap_interval(values[1], "mean")))
    assert g1["median_ci95"] == pytest.approx(list(stats.bootstrap_interval(values[1], "median")))
    assert g1["iqm_ci95"] == pytest.approx(list(stats.bootstrap_interval(values[1], "iqm")))
    assert g2["solved_ci95"] == pytest.approx(list(scipy_stats.binomtest(2, 4).proportion_ci(method="exact")))
    assert g1["ci95"][0] < 0 <= g1["mean_ci95"][0]  # the t-interval goes below 0 for an MSE; the bootstrap cannot
    assert (g1["tuned"], g1["grid"]) == (None, None)  # no --tune


def test_bounded_intervals_for_all_none_and_mixed_solved(tmp_path):
    values = {1: [1.0, 1.0, 1.0], 2: [0.26, 0.31, 0.28], 3: [1.0, 0.27, 0.99, 0.3], 4: [0.3], 5: [0.999, 0.2]}
    groups = json_object(compare_runs([depth_study(tmp_path, values, kind=ORDER)]))["groups"]
    for g in groups:
        for name in ("mean_ci95", "median_ci95", "iqm_ci95", "solved_ci95"):
            if g["n"] == 1 and name != "solved_ci95":
                assert g[name] is None  # n = 1: no interval, but a solve rate still has its exact one
                continue
            low, high = g[name]
            assert 0.0 <= low <= high <= 1.0, (g["key"], name)
    assert groups[0]["mean_ci95"] == [1.0, 1.0] and groups[0]["solved_ci95"][1] == 1.0
    assert groups[4]["ci95"][1] > 1  # the t-interval of 0.999 and 0.2 reaches past an accuracy of 1
    assert groups[4]["mean_ci95"] == pytest.approx([0.2, 0.999])


def test_bimodal_steps_are_decided_by_solve_rates_and_holm_joins_the_steps(tmp_path):
    # 1 layer: all solved; 2 layers: none; 3 layers: 2 of 3. Runs on both sides of the threshold: exact tests decide
    values = {1: [1.0, 1.0, 0.995], 2: [0.26, 0.76, 0.73], 3: [1.0, 0.3, 0.999]}
    c = compare_runs([depth_study(tmp_path, values, kind=ORDER)])
    first, second = c.steps
    assert (first.evidence, first.test) == ("solved", "boschloo")
    assert first.p == first.p_solved == pytest.approx(0.03125)  # 3/3 vs 0/3, worked in test_stats
    assert second.p == pytest.approx(scipy_stats.boschloo_exact([[2, 0], [1, 3]]).pvalue)
    assert [s.p_adjusted for s in c.steps] == pytest.approx(stats.holm([first.p, second.p]))
    assert first.family == 2 and first.p_adjusted == pytest.approx(0.0625)
    assert first.better is None  # 0.031 alone would pass 5%; as one of two steps it does not
    assert "not distinguishable from seed noise at n=3 once the 2 steps are tested together" in first.verdict
    assert "Boschloo p = 0.031, Holm-adjusted p = 0.063 over 2 steps" in first.verdict
    assert first.seeds_needed == stats.seeds_for_rates(1.0, 0.0, alpha=0.025)
    assert f"about {first.seeds_needed} seeds per depth would settle this" in first.verdict
    assert first.prob_improvement == 0.0 and "P(2 layers beats 1) = 0.00" in first.verdict


def test_unimodal_steps_use_welch_and_report_power(tmp_path):
    c = compare_runs([depth_study(tmp_path, {1: [0.10, 0.14, 0.12], 2: [0.11, 0.09, 0.13]})])
    (step,) = c.steps
    welch = stats.welch_interval([0.10, 0.14, 0.12], [0.11, 0.09, 0.13])
    assert (step.evidence, step.test, step.family) == ("mean", "welch", 1)
    assert step.p == step.p_adjusted == pytest.approx(welch.p)
    assert step.p_solved == 1.0  # none solved either way
    assert step.seeds_needed == stats.seeds_for_mean(-0.01, 0.02, 0.02) == 64  # d = 0.5: Cohen's 64 per group
    assert step.verdict.endswith("; about 64 seeds per depth would settle this (80% power for a difference of this "
                                 "size)")
    assert step.prob_improvement == pytest.approx(stats.prob_improvement([0.10, 0.14, 0.12], [0.11, 0.09, 0.13], False))


def test_garbage_and_wrongly_typed_summaries_are_skipped_naming_the_file(tmp_path):
    depth_study(tmp_path, {1: [0.1, 0.12], 2: [0.05, 0.06]})
    (make_run(tmp_path, 3, 0, 0.1) / "summary.json").write_text("garbage")
    make_run(tmp_path, 3, 1, 0.1, summary_extra={"params": "abc"})
    make_run(tmp_path, 3, 2, 0.1, summary_extra={"solved": "yes"})
    result = CliRunner().invoke(app, ["compare", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "L3-lstm-s0: unreadable summary.json: not JSON (Expecting value: line 1 column 1 (char 0))" in result.stdout
    assert 'L3-lstm-s1: unreadable summary.json: params is "abc", not an integer' in result.stdout
    assert 'L3-lstm-s2: unreadable summary.json: solved is "yes", not true or false' in result.stdout


def test_plot_to_an_unwritable_path_is_bad_input(tmp_path):
    pytest.importorskip("matplotlib")
    depth_study(tmp_path, {1: [0.16, 0.15], 2: [0.05, 0.07]})
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--plot", "/proc/nope/x.png"])
    assert result.exit_code == 2
    assert "--plot /proc/nope/x.png: cannot write the file" in result.stderr
    assert "Traceback" not in result.output


def test_plot_with_two_by_keys(tmp_path):
    pytest.importorskip("matplotlib")
    from lstmlab.analysis.compare.plot import plot_order, title

    for model_type in ("lstm", "gru"):
        depth_study(tmp_path / model_type, {1: [0.999, 1.0], 2: [0.3, 0.99], 3: [0.26, 0.5]}, kind=ORDER,
                    model_type=model_type, curve=[(10, 0.3), (20, 0.6)])
    c = compare_runs([tmp_path], by=("model.layers", "model.type"))
    figure = plot_comparison(c, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert title(c) == "temporal-order: does depth help? test accuracy by model.layers, within each model.type"
    # each type's depths side by side, so one label per type sits under its depths
    assert [(g.key["model.type"], g.key["model.layers"]) for g in plot_order(c)] == \
        [("gru", 1), ("gru", 2), ("gru", 3), ("lstm", 1), ("lstm", 2), ("lstm", 3)]
    finals = figure.axes[1]
    assert [t.get_text() for t in finals.get_xticklabels()] == ["1 layer", "2 layers", "3 layers"] * 2
    # the solve threshold is drawn, and the t-interval of (0.3, 0.99) leaves the axis: cut there and marked
    assert any(list(line.get_ydata()) == [0.99, 0.99] for line in finals.get_lines())
    low, high = finals.get_ylim()
    assert high < c.groups[2].stats.ci95[1]
    markers = [line for line in finals.get_lines() if line.get_marker() in ("^", "v")]
    assert any(line.get_marker() == "^" and line.get_ydata()[0] == high for line in markers)


def test_clip_to_axis():
    from lstmlab.analysis.compare.plot import clip_to_axis

    assert clip_to_axis((0.2, 0.5), (0.0, 1.0)) == (0.2, 0.5, False, False)
    assert clip_to_axis((-0.09, 1.26), (0.0, 1.0)) == (0.0, 1.0, True, True)
    assert clip_to_axis((1.1, 1.3), (0.0, 1.0)) == (None, None, False, True)


def tune_study(root: Path) -> Path:
    """Learning-rate grids whose validation and test metrics disagree on the best value.

    1 layer:  lr 0.001 val 0.05, 0.06  test 0.010, 0.012  |  lr 0.01 val 0.02, 0.03  test 0.10, 0.11
              validation picks 0.01 (the largest value tried), although the test metric favours 0.001
    2 layers: lr 0.001 / 0.003 / 0.01 / 0.1 with mean validation 0.045 / 0.015 / 0.025 / 0.001, but one of
              the two lr 0.1 runs failed: 0.003 is chosen, inside the grid
    """
    for seed, (val, test) in enumerate([(0.05, 0.010), (0.06, 0.012)]):
        make_run(root, 1, seed, test, lr=0.001, val=val)
    for seed, (val, test) in enumerate([(0.02, 0.10), (0.03, 0.11)]):
        make_run(root, 1, seed, test, lr=0.01, val=val)
    for lr, vals in ((0.001, (0.04, 0.05)), (0.003, (0.01, 0.02)), (0.01, (0.02, 0.03))):
        for seed, val in enumerate(vals):
            make_run(root, 2, seed, val + 0.001, lr=lr, val=val)
    make_run(root, 2, 0, 0.002, lr=0.1, val=0.001)
    make_run(root, 2, 1, None, lr=0.1, status="failed", summary_extra={"error": "FloatingPointError: loss became nan"})
    return root


def test_tune_chooses_by_validation_and_reports_test_at_that_value(tmp_path):
    c = compare_runs([tune_study(tmp_path)], tune_keys=("train.lr",))
    one, two = c.groups
    assert one.tuning.chosen.value == {"train.lr": 0.01} and one.values == [0.10, 0.11]
    assert one.stats.mean == pytest.approx(0.105)  # the test metric of the chosen runs only, not 0.011
    assert two.tuning.chosen.value == {"train.lr": 0.003} and two.values == [0.011, 0.021]
    assert [(cand.value["train.lr"], len(cand.runs), cand.failed) for cand in two.tuning.candidates] == \
        [(0.001, 2, 0), (0.003, 2, 0), (0.01, 2, 0), (0.1, 1, 1)]
    g1, g2 = json_object(c)["groups"]
    assert (g1["tuned"], g1["grid"]) == ({"train.lr": 0.01}, {"train.lr": [0.001, 0.01]})
    assert (g2["tuned"], g2["grid"]) == ({"train.lr": 0.003}, {"train.lr": [0.001, 0.003, 0.01, 0.1]})
    assert g2["tuning"][1] == {"value": {"train.lr": 0.003}, "n": 2, "failed": 0, "val_mean": pytest.approx(0.015)}
    assert g1["mixed"] == [] and g2["mixed"] == []  # a tuned key is pooled, not mixed
    assert c.steps[0].lower is one and c.steps[0].upper is two


def test_tune_never_looks_at_the_test_metric(tmp_path):
    """Swap the test metrics of the two 1-layer learning rates: the choice stays where validation put it."""
    tune_study(tmp_path)
    before = compare_runs([tmp_path], tune_keys=("train.lr",)).groups[0]
    for run in (tmp_path / "exp").glob("L1-*"):
        summary = json.loads((run / "summary.json").read_text())
        summary["test_metric"] = summary["test"]["mse"] = 0.5 - summary["test_metric"]
        (run / "summary.json").write_text(json.dumps(summary))
    after = compare_runs([tmp_path], tune_keys=("train.lr",)).groups[0]
    assert before.tuning.chosen.value == after.tuning.chosen.value == {"train.lr": 0.01}
    assert after.values == [pytest.approx(0.4), pytest.approx(0.39)]


def test_tune_warns_at_the_grid_edge(tmp_path):
    tune_study(tmp_path)
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--tune", "train.lr", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[2].startswith("| model.layers | train.lr (tuned) | n | mean |")
    assert lines[4].startswith("| 1 | 0.01 (edge) | 2 | 0.105 |")
    assert lines[5].startswith("| 2 | 0.003 | 2 | 0.016 |")
    text = result.stdout
    assert "warning: model.layers=1: train.lr=0.01 is the largest value tried; the best may lie beyond it: tune wider" \
        in text
    assert "model.layers=2: train.lr=" not in text.split("tune wider")[-1]  # no edge warning for 2 layers
    assert ("tuned model.layers=2: train.lr=0.003 chosen by mean validation mse — 0.001: 0.045 (n=2); 0.003: 0.015 "
            "(n=2); 0.01: 0.025 (n=2); 0.1: 0.001 (n=1, 1 failed)") in text
    assert "train.lr tuned per group on validation mse" in lines[0]


def test_no_edge_warning_when_every_value_ties(tmp_path):
    """Every learning rate scores the same (as at a ceiling): the first is kept, and no "tune wider" is said."""
    for lr in (0.001, 0.01):
        for seed in (0, 1):
            make_run(tmp_path, 1, seed, 0.5, lr=lr, val=0.25)
    group = compare_runs([tmp_path], tune_keys=("train.lr",)).groups[0]
    assert group.tuning.chosen.value == {"train.lr": 0.001} and group.tuning.edges() == []
    make_run(tmp_path, 1, 2, 0.5, lr=0.01, val=0.5)  # now 0.001 is strictly best, at the grid's edge
    group = compare_runs([tmp_path], tune_keys=("train.lr",)).groups[0]
    assert group.tuning.edges() == [("train.lr", 0.001, "smallest")]


def test_tune_bad_keys_and_missing_validation(tmp_path):
    tune_study(tmp_path)
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--tune", "train.lr", "--by", "train.lr"])
    assert result.exit_code == 2 and "--tune train.lr is also a --by key" in result.stderr
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--tune", "train.lrr"])
    assert result.exit_code == 2 and "--tune train.lrr: not a config key of these runs" in result.stderr
    # an earlier version's run without best_val: its validation curve stands in; without a curve it is skipped
    make_run(tmp_path, 3, 0, 0.2, lr=0.01, curve=[(10, 0.3), (20, 0.25)])
    make_run(tmp_path, 3, 1, 0.2, lr=0.01)
    c = compare_runs([tmp_path], tune_keys=("train.lr",))
    assert [r.val for r in c.groups[2].runs] == [0.25]
    reasons = {s.path.name: s.reason for s in c.skipped}
    assert reasons["L3-lstm-s1-lr0.01"].startswith("no validation mse (summary.json best_val, or val rows in")


def test_synthetic_run_folders_for_timing_compare(tmp_path):
    """benchmarks/synthetic_runs.py writes folders compare reads like real ones (it times compare at scale)."""
    script = Path(__file__).parents[1] / "benchmarks" / "synthetic_runs.py"
    subprocess.run([sys.executable, str(script), str(tmp_path), "--runs", "60", "--evals", "4"], check=True,
                   capture_output=True)
    c = compare_runs([tmp_path], tune_keys=("train.lr",))
    assert c.skipped == [] and [g.key["model.layers"] for g in c.groups] == [1, 2, 3, 4]
    assert sum(len(cand.runs) for g in c.groups for cand in g.tuning.candidates) == 60
    assert all(len(r.curve) == 4 for g in c.groups for r in g.runs)
    assert c.groups[0].tuning.grid == {"train.lr": [0.001, 0.003, 0.01, 0.03, 0.1]}
