"""One config per experiment folder: a rerun whose config differs in a key that is not a sweep axis is refused
before anything is generated or trained, naming the keys and the ways out; sweep axes, seeds, a derived hidden
size, another experiment name, --allow-mixed-configs and a --restart that replaces every old run pass."""

from __future__ import annotations

import pytest
from conftest import TINY, write_config
from typer.testing import CliRunner

from lstmlab.cli import app

runner = CliRunner()


@pytest.fixture
def study(tmp_path):
    """tiny with layers 1 trained: runs/tiny/L1-lstm-s0; returns a function that runs `train` with more args."""
    config = write_config(tmp_path / "tiny.yaml", TINY)

    def train(*args: str):
        return runner.invoke(app, ["train", str(config), "-q", "--runs-dir", str(tmp_path / "runs"),
                                   "--data-dir", str(tmp_path / "data"), *args])

    first = train("--sweep", "model.layers=1")
    assert first.exit_code == 0, first.output
    return tmp_path / "runs", train


def folders(runs) -> dict[str, list[str]]:
    return {e.name: sorted(p.name for p in e.iterdir() if p.is_dir()) for e in sorted(runs.iterdir())}


def snapshot(runs) -> dict:
    return {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}


def test_a_changed_key_is_refused_before_anything_trains(study):
    runs, train = study
    before = snapshot(runs)
    result = train("--sweep", "model.layers=1,2", "--set", "train.lr=0.02", "--set", "train.batch_size=8")
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = result.output
    assert (f"{runs / 'tiny'} holds 1 run(s) of another config: they differ from this one in "
            "train.batch_size (16 there, 8 here), train.lr (0.01 there, 0.02 here), not sweep axes.") in message
    assert "A changed key (--set) makes other runs, not the same ones again" in message
    assert "--set experiment=tiny-batch_size8-lr0.02" in message and "--runs-dir" in message
    assert "--allow-mixed-configs" in message and "Nothing was trained" in message
    assert folders(runs) == {"tiny": ["L1-lstm-s0"]} and snapshot(runs) == before  # L2 was not trained


def test_sweep_axes_seeds_and_a_derived_hidden_size_may_differ(tmp_path):
    config = write_config(tmp_path / "b.yaml", {**TINY, "model": {"type": "lstm", "param_budget": 600}})

    def train(*args: str):
        result = runner.invoke(app, ["train", str(config), "-q", "--runs-dir", str(tmp_path / "runs"),
                                     "--data-dir", str(tmp_path / "data"), *args])
        assert result.exit_code == 0, result.output

    train("--sweep", "model.layers=1")
    train("--sweep", "model.layers=1,2")  # a wider axis; L2's hidden size differs, derived from the budget
    train("--sweep", "model.layers=2", "--seeds", "2")  # seeds
    train("--sweep", "model.layers=1", "--sweep", "train.lr=0.02")  # a new axis
    train("--set", "model.layers=3", "--set", "train.seed=1")  # keys the folder's runs already differ in
    assert folders(tmp_path / "runs") == {
        "tiny": ["L1-lstm-s0", "L1-lstm-s0-lr0.02", "L2-lstm-s0", "L2-lstm-s1", "L3-lstm-s1"]}


def test_the_ways_out(study):
    runs, train = study
    moved = train("--sweep", "model.layers=1,2", "--set", "train.lr=0.02", "--set", "experiment=tiny-lr0.02")
    assert moved.exit_code == 0, moved.output
    mixed = train("--set", "model.layers=2", "--set", "train.lr=0.02", "--allow-mixed-configs")
    assert mixed.exit_code == 0, mixed.output
    assert folders(runs) == {"tiny": ["L1-lstm-s0", "L2-lstm-s0"], "tiny-lr0.02": ["L1-lstm-s0", "L2-lstm-s0"]}
    # --restart replaces every run in the folder: nothing of the old config stays, so nothing mixes
    again = train("--sweep", "model.layers=1,2", "--set", "train.lr=0.03", "--restart")
    assert again.exit_code == 0, again.output
    assert "lr: 0.03" in (runs / "tiny" / "L1-lstm-s0" / "config.yaml").read_text()
    kept = train("--sweep", "model.layers=1", "--set", "train.lr=0.04", "--restart")  # L2 (lr 0.03) would stay
    assert kept.exit_code == 2 and "train.lr (0.03 there, 0.04 here)" in kept.output


def test_a_big_folder_is_judged_by_a_sample_spread_over_it(tmp_path, monkeypatch):
    """Folders of run configs as training writes them (config.yaml is the resolved config), 7 seeds of one
    config; with a sample of 3, a changed key is still seen, and seeds (an axis of the folder) still pass."""
    from lstmlab.config import validate
    from lstmlab.run import identity

    for seed in range(7):
        run = tmp_path / "runs" / "tiny" / f"L1-lstm-s{seed}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(validate({**TINY, "train": {**TINY["train"], "seed": seed}}).dump_yaml())
    read = []
    monkeypatch.setattr(identity, "SAMPLE", 3)
    original = identity.RunFolder.config

    def counted(self):
        read.append(self.path.name)
        return original(self)

    monkeypatch.setattr(identity.RunFolder, "config", counted)
    changed = validate({**TINY, "train": {**TINY["train"], "lr": 0.5}})
    with pytest.raises(identity.ConfigError, match=r"tiny holds 7 run\(s\) of another config: they differ from this "
                                                   r"one in train.lr \(0.01 there, 0.5 here\), not a sweep axis"):
        identity.check_experiment(changed, tmp_path / "runs")
    assert read == ["L1-lstm-s0", "L1-lstm-s2", "L1-lstm-s4"]
    identity.check_experiment(validate({**TINY, "train": {**TINY["train"], "seed": 9}}), tmp_path / "runs")
    identity.check_experiment(changed, tmp_path / "runs", allow_mixed=True)
