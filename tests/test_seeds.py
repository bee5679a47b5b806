"""The seed shortcut: `train --seeds N` is `--sweep train.seed=0,...,N-1`, and a sweep axis `{range: N}` is the
list 0..N-1; a bad N or two flags that both set the seeds stop with exit 2 naming the key or flag."""

from __future__ import annotations

import pytest
import yaml
from conftest import TINY, write_config
from typer.testing import CliRunner

from lstmlab.cli import app
from lstmlab.config import load_config, validate
from lstmlab.errors import ConfigError

runner = CliRunner()


def printed(tmp_path, config, *args: str) -> list[dict]:
    """The resolved run configs `train --print-config` prints (one YAML document each)."""
    result = runner.invoke(app, ["train", str(config), "--print-config", "--data-dir", str(tmp_path / "data"), *args])
    assert result.exit_code == 0, result.output
    return list(yaml.safe_load_all(result.stdout))


def test_seeds_n_is_a_seed_sweep_of_0_to_n_minus_1(tmp_path):
    config = write_config(tmp_path / "t.yaml", {**TINY, "sweep": {"model.layers": [1, 2], "train.seed": [7]}})
    short = printed(tmp_path, config, "--seeds", "3")
    assert [(r["model"]["layers"], r["train"]["seed"]) for r in short] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1),
                                                                           (2, 2)]
    assert short == printed(tmp_path, config, "--sweep", "train.seed=0,1,2")  # the config's seed axis replaced


def test_a_range_axis_in_a_config_is_0_to_n_minus_1():
    cfg = validate({**TINY, "sweep": {"model.layers": [1, 2], "train.seed": {"range": 4}}})
    assert cfg.sweep["train.seed"] == [0, 1, 2, 3]
    assert [(r.model.layers, r.train.seed) for r in cfg.runs()] == [(layers, seed) for layers in (1, 2)
                                                                   for seed in range(4)]
    assert cfg.sweep == validate({**TINY, "sweep": {"model.layers": [1, 2], "train.seed": [0, 1, 2, 3]}}).sweep


@pytest.mark.parametrize("axis", [{"range": 0}, {"range": "3"}, {"range": 2.5}, {"range": True},
                                  {"range": 3, "start": 1}, {"steps": 3}])
def test_a_bad_range_names_the_axis(tmp_path, axis):
    config = write_config(tmp_path / "t.yaml", {**TINY, "sweep": {"train.seed": axis}})
    with pytest.raises(ConfigError, match=r"t\.yaml: sweep: axis train\.seed: a mapping here must be \{range: N\}"):
        load_config(config)
    result = runner.invoke(app, ["train", str(config), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2 and "sweep: axis train.seed" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--seeds", "0"], "--seeds 0: give the number of seeds, N ≥ 1"),
    (["--seeds", "-2"], "--seeds -2: give the number of seeds"),
    (["--seeds", "2", "--sweep", "train.seed=5,6"], "--seeds 2 and --sweep train.seed=5,6 both set train.seed"),
    (["--seeds", "2", "--set", "train.seed=5"], "--seeds 2 and --set train.seed=5 both set train.seed"),
])
def test_bad_seeds_exit_2_naming_the_flags(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)  # the default --runs-dir, runs, is made here if anything starts
    config = write_config(tmp_path / "t.yaml", TINY)
    result = runner.invoke(app, ["train", str(config), "--data-dir", str(tmp_path / "data"), *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()
