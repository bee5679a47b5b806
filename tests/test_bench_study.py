"""The study benchmark: every variant trains the whole study to completion; rows and ratios add up."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, write_config
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from lstmlab.checks.study import bench_study, render_study, variants
from lstmlab.cli import app
from lstmlab.config import validate
from lstmlab.models.lstm import LSTM

STUDY = {**TINY, "model": {"type": "scratch-lstm", "hidden_size": 6}, "train": {**TINY["train"], "steps": 6,
         "eval_every": 3}, "sweep": {"train.seed": [0, 1, 2]}}


def test_every_variant_trains_the_whole_study(tmp_path):
    lines: list[str] = []
    rows = bench_study(validate(STUDY), data_dir=tmp_path / "data", jobs=1, packs=[2, 3], reps=2, log=lines.append,
                       work_dir=tmp_path / "work")
    assert [(r["variant"], r["model_type"], r["pack"], r["jobs"]) for r in rows] == [
        ("packed 2", "scratch-lstm", 2, 1), ("packed 3", "scratch-lstm", 3, 1), ("unpacked", "scratch-lstm", 1, 1),
        ("lstm unpacked", "lstm", 1, 1)]
    assert [v.name for v in variants(["auto"], 2)] == ["packed", "packed --jobs 2", "unpacked", "lstm unpacked"]
    for row in rows:
        assert row["runs"] == 3 and len(row["times_s"]) == 2
        assert row["wall_s"] == pytest.approx(sum(row["times_s"]) / 2)  # the median of two
        assert row["runs_per_min"] == pytest.approx(3 / row["wall_s"] * 60)
    unpacked = next(r["wall_s"] for r in rows if r["variant"] == "unpacked")
    assert [r["vs_unpacked"] for r in rows] == pytest.approx([r["wall_s"] / unpacked for r in rows])
    assert [line.split(":")[1].strip() for line in lines] == ["packed 2", "packed 3", "unpacked", "lstm unpacked"] * 2
    assert render_study(rows).row_count == 4
    assert list((tmp_path / "work").iterdir()) == [], "run folders are removed"


def test_bench_study_command_prints_json(tmp_path):
    config = write_config(tmp_path / "study.yaml", STUDY)
    result = CliRunner().invoke(app, ["bench", "--study", str(config), "--sweep", "train.seed=0,1", "--jobs", "1",
                                      "--data-dir", str(tmp_path / "data"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["variant"], r["jobs"], r["runs"]) for r in rows] == [("packed", 1, 2), ("unpacked", 1, 2),
                                                                   ("lstm unpacked", 1, 2)]
    bad = CliRunner().invoke(app, ["bench", "--study", str(config), "--pack", "0"])
    assert bad.exit_code == 2 and "--pack: expected a positive integer or auto" in bad.output


def test_study_floor_counts_the_flops_autograd_runs():
    """benchmarks/study_floor.py's GEMM count of a training step equals what torch's FlopCounterMode counts
    for the reference layer's forward and backward (the GEMMs autograd runs: no dx below the first layer)."""
    path = Path(__file__).parents[1] / "benchmarks" / "study_floor.py"
    spec = importlib.util.spec_from_file_location("study_floor", path)
    study_floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study_floor)
    for layers, inputs, hidden, steps, batch in ((1, 2, 5, 4, 3), (3, 7, 6, 5, 2)):
        model = LSTM(inputs, hidden, num_layers=layers, backend="reference", dtype=torch.float64)
        x = torch.randn(steps, batch, inputs, dtype=torch.float64)
        with FlopCounterMode(display=False) as counter:
            y, _ = model(x)
            y[-1].sum().backward()
        state = {f"core.{k}": v for k, v in model.state_dict().items()}  # as a run's checkpoint holds them
        assert study_floor.step_flops(state, steps, batch) == counter.get_total_flops()
