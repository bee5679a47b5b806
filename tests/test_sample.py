"""`lstmlab sample`: text from a trained charlm run's best weights, in its alphabet, the same for the same seed."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from conftest import TINY, write_config
from typer.testing import CliRunner

from lstmlab.analysis.sample import load_run, sample_text
from lstmlab.cli import app

runner = CliRunner()
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 60


@pytest.fixture(scope="module")
def charlm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("charlm")
    (root / "fox.txt").write_text(TEXT)
    cfg = {"experiment": "fox",
           "task": {"name": "charlm", "text": [str(root / "fox.txt")], "seq_len": 16, "n_train": 120, "n_val": 20,
                    "n_test": 20},
           "model": {"type": "lstm", "layers": 2, "hidden_size": 16},
           "train": {"steps": 60, "batch_size": 16, "eval_every": 20, "lr": 0.01, "threads": 1,
                     "dtype": "float64"}}
    result = runner.invoke(app, ["train", str(write_config(root / "fox.yaml", cfg)), "-q",
                                 "--runs-dir", str(root / "runs"), "--data-dir", str(root / "data")])
    assert result.exit_code == 0, result.output
    return root, root / "runs" / "fox" / "L2-lstm-s0"


def sample_cli(root, run, *args: str):
    return runner.invoke(app, ["sample", str(run), "--data-dir", str(root / "data"), *args])


def test_sample_prints_text_of_the_runs_alphabet_reproducibly(charlm_run):
    root, run = charlm_run
    first = sample_cli(root, run, "--chars", "200", "--seed", "3", "--prime", "the ")
    assert first.exit_code == 0, first.output
    text = first.stdout.rstrip("\n")
    assert text.startswith("the ") and len(text) == 4 + 200
    assert set(text) <= set(TEXT)
    assert sample_cli(root, run, "--chars", "200", "--seed", "3", "--prime", "the ").stdout == first.stdout
    assert sample_cli(root, run, "--chars", "200", "--seed", "4", "--prime", "the ").stdout != first.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert f"best weights (step {summary['best_step']})" in first.stderr


def test_stepping_with_the_state_equals_reading_the_whole_text_again(charlm_run):
    """Greedy text from the carried recurrent state equals greedy text from re-reading every prefix."""
    root, run = charlm_run
    greedy = sample_text(run, chars=30, temperature=0, prime="lazy", data_dir=root / "data").text
    _, vocab, model, _ = load_run(run, root / "data")
    index = {ch: i for i, ch in enumerate(vocab)}
    text = "lazy"
    with torch.no_grad():
        for _ in range(30):
            logits = model(torch.tensor([[index[ch] for ch in text]]))[0, -1]  # (V,), the whole prefix again
            logits[0] = -torch.inf
            text += vocab[int(logits.argmax())]
    assert greedy == text


def test_best_weights_are_the_ones_sampled(charlm_run):
    root, run = charlm_run
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    _, _, model, step = load_run(run, root / "data")
    assert step == ckpt["best"]["step"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ckpt["best"]["model"][name]), name


def test_a_prime_outside_the_alphabet_is_read_as_unknown(charlm_run):
    root, run = charlm_run
    result = sample_cli(root, run, "--chars", "5", "--seed", "0", "--prime", "Zebra")
    assert result.exit_code == 0
    assert "lacks 'Z'" in result.stderr and result.stdout.startswith("Zebra")


def test_a_run_of_another_task_or_no_run_is_refused(tmp_path):
    result = runner.invoke(app, ["train", str(write_config(tmp_path / "t.yaml", TINY)), "-q",
                                 "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0
    run = tmp_path / "runs" / "tiny" / "L1-lstm-s0"
    refused = runner.invoke(app, ["sample", str(run), "--data-dir", str(tmp_path / "data")])
    assert refused.exit_code == 2 and "is a run of task adding" in refused.output
    assert "Traceback" not in refused.output
    nowhere = runner.invoke(app, ["sample", str(tmp_path / "nowhere")])
    assert nowhere.exit_code == 2 and "is not a run folder" in nowhere.output
    (run / "checkpoint.pt").unlink()
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["task"] = {"name": "charlm", "text": [str(tmp_path / "t.yaml")]}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    no_weights = runner.invoke(app, ["sample", str(run)])
    assert no_weights.exit_code == 2 and "has no checkpoint.pt" in no_weights.output


def test_the_run_finds_its_dataset_without_data_dir(charlm_run, tmp_path, monkeypatch):
    root, run = charlm_run
    data = json.loads((run / "env.json").read_text())["data"]
    summary = json.loads((run / "summary.json").read_text())
    meta = json.loads((root / "data" / data["dataset"] / "meta.json").read_text())
    assert data == {"dir": str((root / "data").resolve()), "dataset": summary["dataset"],
                    "meta_sha256": meta["meta_sha256"]}
    monkeypatch.chdir(tmp_path)  # no ./data here: only env.json can say where the dataset is
    found = runner.invoke(app, ["sample", str(run), "--chars", "30", "--seed", "3"])
    assert found.exit_code == 0, found.output
    assert found.stdout == sample_cli(root, run, "--chars", "30", "--seed", "3").stdout

    # a run folder without the record (an earlier version's) falls back to ./data, and says where it looked
    old = tmp_path / "old" / "L2-lstm-s0"
    shutil.copytree(run, old)
    env = json.loads((old / "env.json").read_text())
    del env["data"]
    (old / "env.json").write_text(json.dumps(env))
    lost = runner.invoke(app, ["sample", str(old), "--chars", "5"])
    assert lost.exit_code == 2 and "Traceback" not in lost.output
    assert f"({data['dataset']}) is in none of data;" in lost.output and "--data-dir" in lost.output
    shutil.copytree(root / "data", tmp_path / "data")
    fallback = runner.invoke(app, ["sample", str(old), "--chars", "30", "--seed", "3"])
    assert fallback.exit_code == 0 and fallback.stdout == found.stdout

    # a recorded data dir that is gone: ./data still serves; with neither, both places are named
    moved = tmp_path / "moved" / "L2-lstm-s0"
    shutil.copytree(run, moved)
    env = json.loads((moved / "env.json").read_text())
    env["data"]["dir"] = str(tmp_path / "gone")
    (moved / "env.json").write_text(json.dumps(env))
    assert runner.invoke(app, ["sample", str(moved), "--chars", "30", "--seed", "3"]).stdout == found.stdout
    shutil.rmtree(tmp_path / "data")
    neither = runner.invoke(app, ["sample", str(moved), "--chars", "5"])
    assert neither.exit_code == 2 and f"is in none of {tmp_path / 'gone'}, data;" in neither.output
