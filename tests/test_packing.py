"""Pack planning: which sweep points train together, in what packs, in which order."""

from __future__ import annotations

import pytest
from conftest import TINY

from lstmlab.config import ExperimentConfig, TrainConfig, validate
from lstmlab.run.packing import MEMBER_KEYS, Point, balanced_sizes, pack_key, plan

SCRATCH = {**TINY, "model": {**TINY["model"], "type": "scratch-lstm"}}


def points(sweep: dict, base: dict = SCRATCH, steps: dict | None = None) -> list[Point]:
    cfg = validate({**base, "sweep": sweep})
    out = []
    for i, run in enumerate(cfg.runs()):
        name = f"p{i}"
        out.append(Point(run, name, (steps or {}).get(name, 0)))
    return out


def names(units) -> list[list[str]]:
    return [u.names for u in units]


def test_runs_differing_in_member_keys_share_a_pack():
    ps = points({"train.seed": [0, 1], "train.lr": [0.01, 0.1], "train.grad_clip": [None, 1.0],
                 "train.optimizer": ["adam", "sgd"], "model.dropout": [0.0, 0.2]})
    assert len({pack_key(p.cfg) for p in ps}) == 1
    assert names(plan(ps, 32)) == [[p.name for p in ps]]


@pytest.mark.parametrize("key,values", [("model.layers", [1, 2]), ("model.hidden_size", [8, 9]),
                                        ("train.batch_size", [8, 16]), ("train.steps", [10, 20]),
                                        ("train.eval_every", [5, 10]), ("train.dtype", ["float32", "float64"]),
                                        ("model.backend", ["reference", "fused"]), ("task.seq_len", [8, 9])])
def test_runs_differing_in_a_shared_key_never_share_a_pack(key, values):
    ps = points({key: values, "train.seed": [0, 1]})
    assert names(plan(ps, 8)) == [["p0", "p1"], ["p2", "p3"]]


def test_every_member_key_is_a_config_key_and_every_other_key_is_shared():
    for key in MEMBER_KEYS:
        section, name = key.split(".")
        assert name in ExperimentConfig.model_fields[section].annotation.model_fields, key
    # a train key that is not listed (say, one added later) splits packs
    shared = [k for k in TrainConfig.model_fields if f"train.{k}" not in MEMBER_KEYS]
    assert "threads" in shared and "steps" in shared


def test_torch_nn_models_never_pack():
    ps = points({"train.seed": [0, 1, 2]}, base={**SCRATCH, "model": {**SCRATCH["model"], "type": "lstm"}})
    assert pack_key(ps[0].cfg) is None
    assert names(plan(ps, 8)) == [["p0"], ["p1"], ["p2"]]


def test_packs_are_balanced_and_keep_the_sweep_order():
    ps = points({"model.layers": [1, 2], "train.seed": list(range(10))})
    units = plan(ps, 4)
    assert [len(u) for u in units] == [4, 3, 3, 4, 3, 3]
    assert [p.name for u in units for p in u.points] == [p.name for p in ps]
    assert {p.cfg.model.layers for p in units[0].points} == {1}
    assert balanced_sizes(10, 4) == [4, 3, 3]
    assert balanced_sizes(3, 16) == [3]
    assert balanced_sizes(16, 16) == [16]


def test_pack_1_is_one_unit_per_run_in_sweep_order():
    ps = points({"model.layers": [1, 2], "train.seed": [0, 1]})
    assert names(plan(ps, 1)) == [["p0"], ["p1"], ["p2"], ["p3"]]
    with pytest.raises(ValueError, match="at least 1"):
        plan(ps, 0)


def test_members_regroup_by_their_checkpoint_step():
    ps = points({"train.seed": [0, 1, 2, 3]}, steps={"p1": 10, "p3": 10})
    assert names(plan(ps, 8)) == [["p0", "p2"], ["p1", "p3"]]
    assert [u.points[0].step for u in plan(ps, 8)] == [0, 10]


def test_auto_pack_size_keeps_every_worker_busy():
    from lstmlab.run.packing import auto_pack_size, makespan

    assert auto_pack_size("cpu", [10, 10, 10], jobs=1) == 10  # one pack per depth
    assert auto_pack_size("cpu", [10, 10, 10], jobs=2) == 5  # six packs, three per worker
    assert makespan([10, 10, 10], 10, 2) == pytest.approx(21.2) and makespan([10, 10, 10], 5, 2) == pytest.approx(16.8)
    assert auto_pack_size("cpu", [40], jobs=1) == 14  # at most 16: 14, 13, 13
    assert auto_pack_size("cpu", [1, 1, 1], jobs=2) == 1  # runs that never pack
