"""The command line: exit codes and one-line messages for bad input, help that stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lstmlab.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_help_does_not_import_torch():
    code = "import sys, lstmlab.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_python_dash_m_help():
    out = subprocess.run([sys.executable, "-m", "lstmlab", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("train", "generate-data", "compare", "inspect", "sample", "export", "verify", "bench"):
        assert f" {command} " in out.stdout, command


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "model.layerz=2"], "model.layerz: unknown key; valid keys:"),
        (["--set", "train.lr=fast"], "train.lr: Input should be a valid number"),
        (["--set", "model.layers=-1"], "model.layers: Input should be greater than or equal to 1"),
        (["--set", "task.name=nope"], "task.name"),
        (["--set", "model.type=lstmx"], "model.type: Input should be 'scratch-lstm', 'lstm', 'gru' or 'rnn'"),
        (["--set", "model.layers"], "malformed --set 'model.layers'"),
        (["--sweep", "model.layers"], "malformed --sweep"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_config, tmp_path, args, message):
    result = invoke("train", str(tiny_config), *args, "--runs-dir", str(tmp_path / "runs"),
                    "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_missing_config_file(tmp_path):
    result = invoke("train", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "nope.yaml does not exist" in result.output


def test_invalid_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: {name: adding\n")
    result = invoke("train", str(bad))
    assert result.exit_code == 2
    assert "invalid YAML" in result.output
    assert "Traceback" not in result.output


def test_print_config_shows_resolved_runs(tiny_config, tmp_path):
    result = invoke("train", str(tiny_config), "--sweep", "model.layers=1,2", "--set", "model.param_budget=2000",
                    "--print-config", "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 0, result.output
    assert result.output.count("# run ") == 2
    assert "param_budget: 2000" in result.output
    assert "hidden_size: 8\n" not in result.output  # derived from the budget, not the file's 8


def test_generate_data_needs_config_or_task(tmp_path):
    result = invoke("generate-data", "--data-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "either a CONFIG file or --task" in result.output


def test_generate_data_by_task_name(tmp_path):
    result = invoke("generate-data", "--task", "adding", "--set", "task.n_train=50", "--set", "task.seq_len=5",
                    "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    folders = list(tmp_path.glob("adding-*"))
    assert len(folders) == 1 and (folders[0] / "meta.json").exists()
    assert "baselines" in result.output


def test_generate_data_unknown_task(tmp_path):
    result = invoke("generate-data", "--task", "nope", "--data-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "task.name" in result.output and "adding" in result.output


def test_compare_missing_path(tmp_path):
    result = invoke("compare", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert "nowhere" in result.output
