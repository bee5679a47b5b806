"""Every command that groups runs warns the same way when a group pools runs whose configs differ in more than
the seed: compare, inspect and export tensorboard give compare's warning, word for word (one check, shared)."""

from __future__ import annotations

import json

import pytest
from conftest import TINY, write_config
from typer.testing import CliRunner

from lstmlab.cli import app

runner = CliRunner()
WARNING = ("warning: groups pool runs whose configs differ in train.lr, not only in the seed; use --by model.layers "
           "--by train.lr to separate them.")


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    """Two runs of one depth at two learning rates: grouped by model.layers, one group pools both."""
    root = tmp_path_factory.mktemp("pooled")
    config = write_config(root / "lr.yaml", {**TINY, "sweep": {"train.lr": [0.01, 0.02]}})
    result = runner.invoke(app, ["train", str(config), "-q", "--runs-dir", str(root / "runs"),
                                 "--data-dir", str(root / "data")])
    assert result.exit_code == 0, result.output
    return root


def warnings_in(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip().startswith("warning: groups pool")]


def test_compare_inspect_and_export_give_the_same_warning(pooled, tmp_path):
    compared = runner.invoke(app, ["compare", str(pooled / "runs")])
    assert compared.exit_code == 0 and warnings_in(compared.output) == [WARNING]

    inspected = runner.invoke(app, ["inspect", str(pooled / "runs"), "--data-dir", str(pooled / "data"),
                                    "--batch", "8", "--format", "json"])
    assert inspected.exit_code == 0, inspected.output
    assert warnings_in(inspected.output) == [WARNING]
    assert json.loads(inspected.stdout)["warnings"] == [WARNING]

    pytest.importorskip("tensorboardX", reason="the [tensorboard] extra (in [dev])")
    exported = runner.invoke(app, ["export", "tensorboard", str(pooled / "runs"), "--logdir", str(tmp_path / "tb")])
    assert exported.exit_code == 0, exported.output
    assert warnings_in(exported.output) == [WARNING]

    # grouped by the key they differ in, nothing is pooled: no warning anywhere
    for args in (["compare", str(pooled / "runs"), "--by", "train.lr"],
                 ["inspect", str(pooled / "runs"), "--by", "train.lr", "--data-dir", str(pooled / "data"),
                  "--batch", "8"],
                 ["export", "tensorboard", str(pooled / "runs"), "--by", "train.lr", "--logdir",
                  str(tmp_path / "tb2")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert warnings_in(result.output) == [], args


def test_groups_that_differ_only_in_seed_get_no_warning(tiny_study, tmp_path):
    pytest.importorskip("tensorboardX", reason="the [tensorboard] extra (in [dev])")
    result = runner.invoke(app, ["export", "tensorboard", str(tiny_study), "--logdir", str(tmp_path / "tb")])
    assert result.exit_code == 0 and warnings_in(result.output) == []
