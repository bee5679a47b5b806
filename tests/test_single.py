"""The single-run loop (lstmlab.run.single) is a pack of one: the same tiny config trained by it and by
train_pack with one member, in float64, gives metrics.csv equal row by row to 1e-12 and the same summary."""

from __future__ import annotations

import math

import pytest
from conftest import TINY

from lstmlab.config import validate
from lstmlab.run.folder import RunFolder
from lstmlab.run.single import train_single
from lstmlab.run.train import train_pack

TIMING = {"elapsed_s", "seq_per_s", "wall_s"}  # wall-clock columns: the only ones allowed to differ


def assert_close(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            if key not in TIMING:
                assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12), (where, a, b)
    else:
        assert a == b, (where, a, b)


@pytest.mark.parametrize("model", [{"type": "lstm"}, {"type": "scratch-lstm", "layers": 2, "dropout": 0.25},
                                   {"type": "gru", "param_budget": 300}])
@pytest.mark.parametrize("train", [{}, {"schedule": "cosine", "warmup_steps": 3, "grad_clip": 0.05,
                                        "early_stop_patience": 1, "steps": 60, "eval_every": 5, "lr": 0.1}])
def test_single_run_equals_a_pack_of_one(tmp_path, model, train):
    cfg = validate({**TINY, "model": {**TINY["model"], **model},
                    "train": {**TINY["train"], "dtype": "float64", **train}})
    single = train_single(cfg, runs_dir=tmp_path / "single", data_dir=tmp_path / "data")
    packed = train_pack([cfg], runs_dir=tmp_path / "pack", data_dir=tmp_path / "data", quiet=True,
                        log=lambda _: None)[0]
    assert packed.status == single["status"] == "completed"

    a, b = RunFolder(tmp_path / "single" / "tiny" / packed.name), RunFolder(packed.path)
    rows_a, rows_b = a.metrics(), b.metrics()
    assert [r["split"] for r in rows_a] == [r["split"] for r in rows_b] and rows_a[-1]["split"] == "test"
    assert len(rows_a) >= 5
    for i, (row_a, row_b) in enumerate(zip(rows_a, rows_b, strict=True)):
        assert_close(row_a, row_b, f"metrics.csv row {i}")
    assert_close(single, b.summary(), "summary")
    assert a.summary() == single and a.config() == b.config()
    if train:  # the schedule, the clipping and the early stop all took part
        assert rows_a[-1]["step"] < 60 and single["best_step"] < single["step"]
