"""lstmlab.models.gradflow: the per-step forward and the hand-written backward through time, in float64.

- the per-step forward of every core (LSTM, GRU, RNN tanh/relu; 3 layers) gives torch.nn's outputs;
- dL/dh_t, dL/dc_t and dL/dx_t equal autograd's on retained per-step tensors of torch's own cells
  (torch.lstm_cell, gru_cell, rnn_*_cell), for both readouts, to 1e-10;
- with W_hh = 0 and a last-step readout the gradient reaching c_1 is the gradient at c_T times the
  product of the forget gates in between, elementwise: ≈1 with the forget bias at +20, < 1e-8 at −20;
- `output.retain_grad()` on a fused nn.LSTM sees none of that: only the head's part.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lstmlab.config import ModelConfig
from lstmlab.models import gradflow
from lstmlab.models.sequence import SequenceModel
from lstmlab.tasks.base import TaskSpec

F64 = torch.float64
B, T, VOCAB, CLASSES = 4, 7, 6, 3

CORE_CELLS = {  # model.type -> torch's own one-step function: (x, state, w_ih, w_hh, b_ih, b_hh) -> state
    "lstm": lambda x, s, *w: torch.lstm_cell(x, s, *w),
    "gru": lambda x, s, *w: (torch.gru_cell(x, s[0], *w),),
    "rnn": lambda x, s, *w: (torch.rnn_tanh_cell(x, s[0], *w),),
    "rnn-relu": lambda x, s, *w: (torch.rnn_relu_cell(x, s[0], *w),),
}


def make_model(kind: str, layers: int = 3, readout: str = "last", hidden: int = 5, seed: int = 0) -> SequenceModel:
    torch.manual_seed(seed)
    model_type = "rnn" if kind.startswith("rnn") else kind
    cfg = ModelConfig(type=model_type, layers=layers, hidden_size=hidden,
                      nonlinearity="relu" if kind == "rnn-relu" else "tanh")
    spec = TaskSpec(input_kind="tokens", input_size=VOCAB, output_size=CLASSES, readout=readout)
    return SequenceModel(cfg, spec).to(F64)


def batch_for(readout: str, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    targets = torch.randint(CLASSES, (B,) if readout == "last" else (B, T), generator=gen)
    return {"inputs": torch.randint(VOCAB, (B, T), generator=gen), "targets": targets}


def cross_entropy(output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(output.reshape(-1, CLASSES), batch["targets"].reshape(-1))


def autograd_reference(model: SequenceModel, kind: str, batch: dict) -> dict:
    """Run torch's own cells step by step, keep every h_t, c_t (and x_t) as a graph node, and ask autograd."""
    x = model.encoder(batch["inputs"]).detach().transpose(0, 1).requires_grad_()  # (T, B, I)
    states, layer_in = [], list(x.unbind(0))
    for weights in model.core.all_weights:
        hidden = weights[1].shape[1]
        state = tuple(torch.zeros(B, hidden, dtype=F64) for _ in range(2 if kind == "lstm" else 1))
        steps = []
        for x_t in layer_in:
            state = CORE_CELLS[kind](x_t, state, *weights)
            steps.append(state)
        states.append(steps)
        layer_in = [s[0] for s in steps]
    y = torch.stack(layer_in)  # (T, B, H)
    output = model.head(y[-1] if model.readout == "last" else y.transpose(0, 1))
    loss = cross_entropy(output, batch)
    nodes = [x] + [s for steps in states for state in steps for s in state]
    grads = torch.autograd.grad(loss, nodes)
    per_layer, k = [], 1
    for steps in states:
        n_state = len(steps[0])
        layer = [grads[k + t * n_state : k + (t + 1) * n_state] for t in range(len(steps))]
        per_layer.append({"dh": torch.stack([g[0] for g in layer]),
                          "dc": torch.stack([g[1] for g in layer]) if n_state == 2 else None})
        k += len(steps) * n_state
    return {"dx": grads[0], "layers": per_layer, "output": output.detach(), "loss": loss.item()}


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "rnn-relu"])
def test_per_step_forward_matches_torch(kind):
    torch.manual_seed(0)
    x = torch.randn(T, B, VOCAB, dtype=F64)
    core = nn.LSTM if kind == "lstm" else nn.GRU if kind == "gru" else nn.RNN
    extra = {"nonlinearity": "relu"} if kind == "rnn-relu" else {}
    theirs = core(VOCAB, 5, 3, dtype=F64, **extra)
    name = "rnn" if kind.startswith("rnn") else kind
    layers = gradflow.trace_core(name, x, gradflow.core_weights(theirs), extra.get("nonlinearity", "tanh"))
    output, state = theirs(x)
    torch.testing.assert_close(layers[-1].h, output, atol=1e-12, rtol=0)
    h_n = state[0] if kind == "lstm" else state
    torch.testing.assert_close(torch.stack([layer.h[-1] for layer in layers]), h_n, atol=1e-12, rtol=0)
    if kind == "lstm":
        torch.testing.assert_close(torch.stack([layer.c[-1] for layer in layers]), state[1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("readout", ["last", "every"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "rnn-relu"])
def test_gradients_match_autograd_on_per_step_tensors(kind, readout):
    model = make_model(kind, readout=readout)
    batch = batch_for(readout)
    ours = gradflow.trace(model, batch["inputs"], batch, cross_entropy)
    ref = autograd_reference(model, kind, batch)
    assert ours.loss == pytest.approx(ref["loss"], rel=1e-12)
    torch.testing.assert_close(ours.output, ref["output"], atol=1e-12, rtol=0)
    torch.testing.assert_close(ours.dx, ref["dx"], atol=1e-10, rtol=0)
    for layer, expected in zip(ours.layers, ref["layers"], strict=True):
        torch.testing.assert_close(layer.dh, expected["dh"], atol=1e-10, rtol=0)
        if kind == "lstm":
            torch.testing.assert_close(layer.dc, expected["dc"], atol=1e-10, rtol=0)
        else:
            assert layer.dc is None
    assert ours.layers[0].dh.abs().max() > 1e-6  # a vacuous match of zeros would prove nothing


def test_lstm_types_trace_alike():
    """torch.nn.LSTM and lstmlab's LSTM with the same state_dict give the same trace."""
    ours = make_model("scratch-lstm")
    theirs = make_model("lstm")
    ours.load_state_dict(theirs.state_dict())
    batch = batch_for("last")
    a = gradflow.trace(ours, batch["inputs"], batch, cross_entropy)
    b = gradflow.trace(theirs, batch["inputs"], batch, cross_entropy)
    torch.testing.assert_close(a.dx, b.dx, atol=0, rtol=0)
    torch.testing.assert_close(a.layers[1].dc, b.layers[1].dc, atol=0, rtol=0)


def forget_gate_model(forget_bias: float, input_dependent: bool) -> SequenceModel:
    """One LSTM layer with W_hh = 0, read at the last step; f_t = σ(forget_bias) unless input_dependent."""
    model = make_model("lstm", layers=1, readout="last", hidden=4, seed=3)
    core = model.core
    H = core.hidden_size
    with torch.no_grad():
        core.weight_hh_l0.zero_()
        core.bias_ih_l0[H : 2 * H] = forget_bias
        core.bias_hh_l0[H : 2 * H] = 0.0
        if not input_dependent:
            core.weight_ih_l0[H : 2 * H] = 0.0
    return model


def test_with_no_recurrent_weights_the_cell_gradient_is_the_product_of_forget_gates():
    """δc_1 = δc_T ⊙ f_T ⊙ ... ⊙ f_2, elementwise, when nothing else reaches c_t (W_hh = 0, last-step head)."""
    model = forget_gate_model(0.5, input_dependent=True)
    batch = batch_for("last")
    trace = gradflow.trace(model, batch["inputs"], batch, cross_entropy)
    layer = trace.layers[0]
    product = layer.gates["f"][1:].prod(dim=0)  # (B, H): f_2 ⊙ ... ⊙ f_T
    assert product.std() > 0.01  # the gates differ between units and sequences: the elementwise claim is tested
    torch.testing.assert_close(layer.dc[0], layer.dc[-1] * product, atol=0, rtol=1e-10)
    for t in range(T - 1):  # and at every step on the way: δc_t = δc_{t+1} ⊙ f_{t+1}
        torch.testing.assert_close(layer.dc[t], layer.dc[t + 1] * layer.gates["f"][t + 1], atol=0, rtol=1e-10)


@pytest.mark.parametrize("forget_bias", [20.0, -20.0])
def test_forget_bias_sets_how_much_gradient_reaches_the_first_step(forget_bias):
    from lstmlab.models.gradflow import summarize

    model = forget_gate_model(forget_bias, input_dependent=False)
    batch = batch_for("last")
    summary = summarize(gradflow.trace(model, batch["inputs"], batch, cross_entropy))
    ratio = summary["layers"][0]["grad_c_first_to_last"]
    expected = torch.sigmoid(torch.tensor(forget_bias, dtype=F64)).item() ** (T - 1)
    assert ratio == pytest.approx(expected, rel=1e-10)
    if forget_bias > 0:
        assert ratio > 1 - 1e-6
    else:
        assert ratio < 1e-8


def test_retain_grad_on_a_fused_lstm_misses_the_recurrent_path():
    """nn.LSTM's output.grad holds only what the head sends: zero before the last step with a last-step readout,
    although the loss depends on every h_t through the recurrence."""
    model = make_model("lstm", layers=1, readout="last")
    batch = batch_for("last")
    x = model.encoder(batch["inputs"])
    output, _ = model.core(x)
    output.retain_grad()
    cross_entropy(model.head(output[:, -1]), batch).backward()
    assert output.grad[:, :-1].abs().max() == 0
    trace = gradflow.trace(model, batch["inputs"], batch, cross_entropy)
    assert trace.layers[0].dh[:-1].abs().min(dim=-1).values.max() > 0
    torch.testing.assert_close(trace.layers[0].dh[-1], output.grad[:, -1], atol=1e-12, rtol=0)


def test_trace_leaves_the_model_and_random_state_alone():
    model = make_model("gru", readout="every").to(torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    batch = batch_for("every")
    trace = gradflow.trace(model, batch["inputs"], batch, cross_entropy)
    assert trace.dx.dtype == F64
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert next(model.parameters()).dtype == torch.float32
