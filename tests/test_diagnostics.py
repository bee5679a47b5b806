"""diagnostics.csv rows: what they hold, that recording them changes nothing in training, resume and restart."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lstmlab.config import ModelConfig
from lstmlab.models.gradflow import summarize, trace
from lstmlab.models.sequence import SequenceModel
from lstmlab.run.diagnostics import Diagnostics, diagnostics_row
from lstmlab.run.folder import DIAGNOSTICS, RunFolder
from lstmlab.tasks.base import TaskSpec

B, T, VOCAB, CLASSES = 8, 9, 5, 3


def make_model(model_type: str, layers: int = 2) -> SequenceModel:
    torch.manual_seed(0)
    cfg = ModelConfig(type=model_type, layers=layers, hidden_size=6, dropout=0.3 if layers > 1 else 0.0)
    return SequenceModel(cfg, TaskSpec(input_kind="tokens", input_size=VOCAB, output_size=CLASSES, readout="last"))


def loss_fn(output, batch):
    return F.cross_entropy(output, batch["targets"])


def data(n: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randint(VOCAB, (n, T), generator=gen)
    return {"inputs": inputs, "targets": torch.randint(CLASSES, (n,), generator=gen)}


@pytest.mark.parametrize("model_type", ["scratch-lstm", "gru"])
def test_rows_are_the_inspect_numbers_of_the_probe_batch(tmp_path, model_type):
    model = make_model(model_type)
    probe = data(6, seed=1)
    diagnostics = Diagnostics(RunFolder(tmp_path), loss_fn, probe)
    first, second = diagnostics.record(model, 0), diagnostics.record(model, 10)
    rows = RunFolder(tmp_path).metrics(DIAGNOSTICS)
    assert [r["step"] for r in rows] == [0, 10]
    assert rows[0] == pytest.approx(first) and rows[1] == pytest.approx(second)  # floats read back exactly

    numbers = summarize(trace(model, probe["inputs"], probe, loss_fn))
    assert first["grad_x_first"] == numbers["grad_x"][0] and first["grad_x_last"] == numbers["grad_x"][-1]
    assert first["l1_grad_h_first"] == numbers["layers"][1]["grad_h"][0]
    gates = ("i", "f", "g", "o") if model_type == "scratch-lstm" else ("r", "z", "n")
    for gate in gates:
        assert first[f"l0_{gate}_saturated"] == numbers["layers"][0]["gates"][gate]["saturated"]
    assert ("l0_grad_c_first" in first) == (model_type == "scratch-lstm")
    assert list(first)[:4] == ["step", "loss", "grad_x_first", "grad_x_last"]


def test_recording_changes_nothing_in_training():
    """Same weights after 6 steps with rows recorded every 2 steps as without: dropout draws and all."""
    results = []
    for every in (None, 2):
        model = make_model("scratch-lstm")
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        torch.manual_seed(1)
        for step in range(1, 7):
            batch = data(B, seed=step)
            optimizer.zero_grad()
            loss_fn(model(batch["inputs"]), batch).backward()
            optimizer.step()
            if every and step % every == 0:
                diagnostics_row(model, data(4, seed=99), loss_fn, step)
        assert model.training
        results.append(model.state_dict())
    for name, value in results[0].items():
        assert torch.equal(value, results[1][name]), name


def test_resume_drops_rows_past_the_checkpoint_and_restart_removes_the_file(tmp_path):
    run = RunFolder(tmp_path)
    diagnostics = Diagnostics(run, loss_fn, data(4, seed=1))
    model = make_model("gru", layers=1)
    for step in (0, 5, 10, 15):
        diagnostics.record(model, step)
    run.truncate_metrics(10, DIAGNOSTICS)
    assert [r["step"] for r in run.metrics(DIAGNOSTICS)] == [0, 5, 10]
    diagnostics.record(model, 15)
    assert [r["step"] for r in run.metrics(DIAGNOSTICS)] == [0, 5, 10, 15]
    run.clear()
    assert not (tmp_path / DIAGNOSTICS).exists()
