"""`lstmlab inspect` on tiny trained runs: the JSON contract, table and plot, read-only, running runs, bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_config
from typer.testing import CliRunner

from lstmlab.cli import app
from lstmlab.config import validate
from lstmlab.run.folder import RunFolder
from lstmlab.run.train import train

runner = CliRunner()
TINY_ORDER = {
    "experiment": "tiny",
    "task": {"name": "temporal-order", "seq_len": 20, "n_train": 128, "n_val": 32, "n_test": 32},
    "model": {"type": "lstm", "layers": 2, "hidden_size": 6},
    "train": {"steps": 12, "batch_size": 16, "eval_every": 4, "lr": 0.01, "threads": 1},
}
T = 22  # temporal order pads every sequence to 1.1 · seq_len


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """runs/tiny/: LSTM at 1 and 2 layers, and a 2-layer GRU, each trained for 12 steps."""
    root = tmp_path_factory.mktemp("inspect")
    for model in ({"layers": 1}, {"layers": 2}, {"layers": 2, "type": "gru"}):
        raw = {**TINY_ORDER, "model": {**TINY_ORDER["model"], **model}}
        cfg = validate(raw)
        swept = ("model.type",) if model.get("type") else ()
        train(cfg, runs_dir=root / "runs", data_dir=root / "data", swept_keys=swept, quiet=True, log=lambda _: None)
    return root


def invoke(root: Path, *args: str):
    return runner.invoke(app, ["inspect", *args, "--data-dir", str(root / "data")])


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_json_contract_for_one_run(trained):
    run = trained / "runs" / "tiny" / "L2-lstm-s0"
    result = invoke(trained, str(run), "--format", "json", "--batch", "20")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["run"] == "L2-lstm-s0" and data["batch"] == 20 and data["seq_len"] == T
    assert data["weights"]["source"] == "best"
    assert data["weights"]["step"] == RunFolder(run).summary()["best_step"]
    assert len(data["grad_x"]) == T and all(v > 0 for v in data["grad_x"])
    assert [layer["layer"] for layer in data["layers"]] == [0, 1]
    for layer in data["layers"]:
        assert len(layer["grad_h"]) == T and len(layer["grad_c"]) == T
        assert set(layer["gates"]) == {"i", "f", "g", "o"}
        for stats in layer["gates"].values():
            assert 0 <= stats["saturated"] <= 1
            assert sum(stats["histogram"]["fraction"]) == pytest.approx(1.0)
        assert layer["grad_h_first_to_last"] == pytest.approx(layer["grad_h"][0] / layer["grad_h"][-1])
        assert 0 < layer["gates"]["f"]["mean"] < 1 and -1 < layer["gates"]["g"]["mean"] < 1


def test_the_numbers_are_the_runs_best_weights_traced(trained):
    """inspect reads the best weights out of the checkpoint and traces them: the same numbers by hand."""
    from lstmlab.analysis.inspect import inspect_run
    from lstmlab.models.gradflow import summarize, trace
    from lstmlab.models.sequence import build_model
    from lstmlab.tasks import make_task
    from lstmlab.tasks.datasets import load

    folder = RunFolder(trained / "runs" / "tiny" / "L1-lstm-s0")
    cfg = validate(folder.config())
    dataset = load(cfg.task, trained / "data")
    model = build_model(cfg.model, dataset.spec)  # torch.nn.LSTM, as it was trained
    model.load_state_dict(folder.load_checkpoint()["best"]["model"])
    val = {k: torch.from_numpy(v[:10]) for k, v in dataset.splits["val"].items()}
    expected = summarize(trace(model, val["inputs"], val, make_task(cfg.task).loss))
    got = inspect_run(folder.path, batch=10, data_dir=trained / "data")
    assert got["grad_x"] == pytest.approx(expected["grad_x"], rel=1e-9)
    assert got["layers"][0]["grad_c"] == pytest.approx(expected["layers"][0]["grad_c"], rel=1e-9)


def test_gru_run_names_its_own_gates(trained):
    result = invoke(trained, str(trained / "runs" / "tiny" / "L2-gru-s0"), "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["core"] == "gru"
    for layer in data["layers"]:
        assert set(layer["gates"]) == {"r", "z", "n"} and layer["grad_c"] is None and len(layer["grad_h"]) == T


def test_folder_of_runs_is_grouped(trained):
    result = invoke(trained, str(trained / "runs"), "--format", "json", "--by", "model.layers", "--by", "model.type")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["by"] == ["model.layers", "model.type"] and data["skipped"] == []
    keys = [group["key"] for group in data["groups"]]
    assert keys == [{"model.layers": 1, "model.type": "lstm"}, {"model.layers": 2, "model.type": "gru"},
                    {"model.layers": 2, "model.type": "lstm"}]
    two = data["groups"][2]
    assert two["n"] == 1 and two["runs"][0]["run"] == "L2-lstm-s0"
    assert two["layers"][1]["grad_h"] == pytest.approx(two["runs"][0]["layers"][1]["grad_h"])


def test_table_and_plot_change_nothing_in_the_run_folders(trained, tmp_path):
    runs = trained / "runs"
    before = checksums(runs)
    table = invoke(trained, str(runs))
    assert table.exit_code == 0, table.output
    for text in ("L1-lstm-s0", "L2-gru-s0", "δh_1/δh_T", "best weights", "Gate columns: mean (saturated"):
        assert text in table.output
    single = invoke(trained, str(runs / "tiny" / "L2-lstm-s0"), "--plot", str(tmp_path / "one.png"))
    assert single.exit_code == 0, single.output
    assert "best weights (from step" in single.output and "T = 22" in single.output
    grouped = invoke(trained, str(runs), "--plot", str(tmp_path / "groups.png"), "--format", "json")
    assert grouped.exit_code == 0, grouped.output
    for name in ("one.png", "groups.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert checksums(runs) == before


def test_unfinished_run_is_read_at_its_latest_checkpoint(trained, tmp_path):
    """A run whose summary says running (still training, or killed) is inspected at checkpoint['model']."""
    run = tmp_path / "L2-lstm-s0"
    shutil.copytree(trained / "runs" / "tiny" / "L2-lstm-s0", run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    result = invoke(trained, str(run), "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["weights"] == {"source": "latest checkpoint", "step": 12, "status": "interrupted",
                               "checkpoint_step": 12}
    (run / "checkpoint.pt").unlink()
    result = invoke(trained, str(run))
    assert result.exit_code == 2
    assert "no checkpoint.pt yet" in result.output and str(run) in result.output


def test_inspects_a_run_while_it_trains(trained, tmp_path):
    """A second process trains; inspect reads its latest checkpoint meanwhile and leaves it running."""
    raw = {**TINY_ORDER, "train": {**TINY_ORDER["train"], "steps": 100_000, "eval_every": 5}}
    config = write_config(tmp_path / "long.yaml", raw)
    run = tmp_path / "runs" / "tiny" / "L2-lstm-s0"
    shutil.copytree(trained / "data", tmp_path / "data")
    proc = subprocess.Popen([sys.executable, "-m", "lstmlab", "train", str(config), "--runs-dir",
                             str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline
            time.sleep(0.05)
        result = runner.invoke(app, ["inspect", str(run), "--format", "json", "--data-dir", str(tmp_path / "data")])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["weights"]["source"] == "latest checkpoint" and data["weights"]["status"] == "running"
        assert data["weights"]["step"] % 5 == 0
        assert proc.poll() is None  # still training
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def test_weights_option_picks_best_or_last(trained):
    """A completed run: --weights latest reads the weights it ended with, best (the default) those it was tested
    with; the two differ here, and so do the gradients."""
    run = trained / "runs" / "tiny" / "L2-lstm-s0"
    best_step = RunFolder(run).summary()["best_step"]
    assert best_step != 12  # else the test could not tell the two apart
    results = {}
    for choice in ("auto", "best", "latest"):
        result = invoke(trained, str(run), "--format", "json", "--weights", choice)
        assert result.exit_code == 0, result.output
        results[choice] = json.loads(result.output)
    assert results["auto"]["weights"]["source"] == results["best"]["weights"]["source"] == "best"
    assert results["best"]["weights"]["step"] == best_step
    assert results["latest"]["weights"] == {"source": "latest checkpoint", "step": 12, "status": "completed",
                                            "checkpoint_step": 12}
    assert results["auto"]["grad_x"] == results["best"]["grad_x"] != results["latest"]["grad_x"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["{runs}/tiny/L1-lstm-s0", "--split", "dev"], "--split: unknown split 'dev'; valid splits: train, val, test"),
        (["{runs}/tiny/L1-lstm-s0", "--batch", "0"], "--batch: must be at least 1"),
        (["{runs}/tiny/L1-lstm-s0", "--format", "csv"], "--format: unknown format 'csv'"),
        (["{runs}/tiny/L1-lstm-s0", "--weights", "final"], "--weights: unknown choice 'final'; valid: auto, best"),
        (["{data}"], "no run folders under {data}"),
        (["{runs}/nowhere"], "no such path: {runs}/nowhere"),
        (["{runs}", "--by", "model.layerz"], "--by model.layerz: not a config key of these runs"),
        (["{runs}/tiny/L1-lstm-s0", "--plot", "{data}/x.gif"], "unknown image type '.gif'"),
    ],
)
def test_bad_input_exits_2_naming_the_thing(trained, args, message):
    fill = {"runs": str(trained / "runs"), "data": str(trained / "data")}
    result = invoke(trained, *(a.format(**fill) for a in args))
    assert result.exit_code == 2, result.output
    assert message.format(**fill) in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_missing_matplotlib_is_a_clear_message(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = invoke(trained, str(trained / "runs" / "tiny" / "L1-lstm-s0"), "--plot", str(tmp_path / "p.png"))
    assert result.exit_code == 2
    assert "--plot needs matplotlib: install lstmlab[plot]" in result.output
    assert "L1-lstm-s0" not in result.output  # refused before the work, not after it
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("name, output, targets", [
    ("adding", torch.randn(4, 1, dtype=torch.float64), torch.rand(4, 1, dtype=torch.float64)),
    ("temporal-order", torch.randn(4, 4, dtype=torch.float64), torch.randint(4, (4,))),
])
def test_task_loss_keeps_float64(name, output, targets):
    """The gradients are computed in float64: the task's loss must not round the output to float32 first."""
    from lstmlab.tasks import make_task

    task = make_task(validate({"task": {"name": name}}).task)
    loss = task.loss(output, {"targets": targets})
    assert loss.dtype == torch.float64
    import torch.nn.functional as F

    expected = F.mse_loss(output, targets) if name == "adding" else F.cross_entropy(output, targets)
    assert loss.item() == expected.item()  # the float64 value itself, not a float32 rounding of it


def test_inspect_finds_the_dataset_its_run_was_trained_from(trained, tmp_path, monkeypatch):
    """No --data-dir: the data dir in the run's env.json, not ./data (where nothing is generated)."""
    run = trained / "runs" / "tiny" / "L2-lstm-s0"
    expected = invoke(trained, str(run), "--format", "json", "--batch", "8")
    monkeypatch.chdir(tmp_path)  # no ./data here
    found = runner.invoke(app, ["inspect", str(run), "--format", "json", "--batch", "8"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["grad_x"] == json.loads(expected.stdout)["grad_x"]
    assert not (tmp_path / "data").exists()  # read where it was, not made again in ./data
