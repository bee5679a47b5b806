"""Shared fixtures: tiny configs so that end-to-end tests take seconds on 2 cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lstmlab.tasks import TASKS

TINY = {
    "experiment": "tiny",
    "task": {"name": "adding", "seq_len": 8, "n_train": 256, "n_val": 64, "n_test": 64},
    "model": {"type": "lstm", "layers": 1, "hidden_size": 8},
    "train": {"steps": 20, "batch_size": 16, "eval_every": 10, "lr": 0.01, "threads": 1},
}


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A tiny adding-problem config written to a file; returns its path."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    return path


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path



def _self_contained(task_class) -> bool:
    return all(not field.is_required() for field in task_class.Config.model_fields.values())


# tasks that make their data from their config alone (the arrays task reads a user's file: tests/test_arrays.py)
SYNTHETIC_TASKS = sorted(name for name, cls in TASKS.items() if _self_contained(cls))


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """Four completed runs (layers 1, 2 × seeds 0, 1) of the tiny config: runs/tiny/<run-name>/. Read only."""
    from typer.testing import CliRunner

    from lstmlab.cli import app

    root = tmp_path_factory.mktemp("study")
    result = CliRunner().invoke(app, ["train", str(write_config(root / "tiny.yaml", TINY)), "-q", "--sweep",
                                      "model.layers=1,2", "--sweep", "train.seed=0,1", "--runs-dir",
                                      str(root / "runs"), "--data-dir", str(root / "data")])
    assert result.exit_code == 0, result.output
    return root / "runs"
