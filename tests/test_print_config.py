"""train --print-config is a dry run: it writes nothing (no data folder, no run folder), and the hidden size it
prints for a param_budget is the one train derives; a size only the data can give is said to come at train time."""

from __future__ import annotations

import yaml
from conftest import TINY, write_config
from typer.testing import CliRunner

from lstmlab.cli import app
from lstmlab.run.folder import RunFolder

runner = CliRunner()


def files_under(path) -> list:
    return sorted(p for p in path.rglob("*")) if path.exists() else []


def test_print_config_writes_nothing_and_prints_what_train_derives(tmp_path):
    config = write_config(tmp_path / "c.yaml", {**TINY, "model": {"type": "gru", "param_budget": 400}})
    args = ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"), "-q"]
    printed = runner.invoke(app, [*args, "--print-config"])
    assert printed.exit_code == 0, printed.output
    assert files_under(tmp_path / "data") == [] and files_under(tmp_path / "runs") == []
    (document,) = yaml.safe_load_all(printed.stdout)
    assert "derived at train time" not in printed.stdout

    trained = runner.invoke(app, args)
    assert trained.exit_code == 0, trained.output
    run = RunFolder(tmp_path / "runs" / "tiny" / "L1-gru-s0")
    assert run.config() == document and document["model"]["hidden_size"] != TINY["model"]["hidden_size"]


def test_a_size_only_the_data_gives_is_left_to_train_time(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 50)
    raw = {**TINY, "task": {"name": "charlm", "text": [str(corpus)], "seq_len": 8, "n_train": 20, "n_val": 4,
                            "n_test": 4},
           "model": {"type": "lstm", "param_budget": 2000}, "sweep": {"model.layers": [1, 2]}}
    printed = runner.invoke(app, ["train", str(write_config(tmp_path / "c.yaml", raw)), "--print-config",
                                  "--data-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs")])
    assert printed.exit_code == 0, printed.output
    assert files_under(tmp_path / "data") == [] and files_under(tmp_path / "runs") == []
    assert printed.stdout.count("# model.hidden_size: derived at train time from model.param_budget") == 2
    assert [d["model"]["layers"] for d in yaml.safe_load_all(printed.stdout)] == [1, 2]
