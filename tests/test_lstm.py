"""lstmlab.models.LSTM / LSTMCell against torch.nn.LSTM / nn.LSTMCell.

Parity tests load the torch module's state_dict into ours and assert, in float64, that outputs, final
state and the gradients of input, initial state and every parameter agree to 1e-10. The backward pass
is driven by random cotangents on output, h_n and c_n at once, so a mistake on any path shows.
"""

from __future__ import annotations

import math
import sys
import types
import warnings

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from lstmlab import kernels
from lstmlab.kernels import reference
from lstmlab.models import LSTM, LSTMCell

F64 = torch.float64
I, H, B = 4, 5, 3


def assert_exact(actual: Tensor, expected: Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, atol=1e-10, rtol=0, msg=lambda m: f"{what}: {m}")


def lstm_pair(num_layers: int = 2, **kwargs) -> tuple[nn.LSTM, LSTM]:
    """A torch LSTM and an lstmlab LSTM holding the same float64 weights."""
    theirs = nn.LSTM(I, H, num_layers, dtype=F64, **kwargs)
    ours = LSTM(I, H, num_layers, dtype=F64, backend="reference", **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def forward_backward(model: nn.Module, x: Tensor, state: tuple[Tensor, Tensor] | None, seed: int = 0) -> dict:
    """Run model on leaf copies of x and state, backpropagate random cotangents; return results."""
    x = x.clone().requires_grad_()
    hx = None if state is None else tuple(s.clone().requires_grad_() for s in state)
    out = model(x, hx)
    outputs = [out[0], *out[1]] if isinstance(model, (nn.LSTM, LSTM)) else list(out)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in outputs)
    model.zero_grad()
    loss.backward()
    results = {f"output[{k}]": t.detach() for k, t in enumerate(outputs)}
    results["grad input"] = x.grad
    if hx is not None:
        results["grad h0"], results["grad c0"] = hx[0].grad, hx[1].grad
    for name, parameter in model.named_parameters():
        results[f"grad {name}"] = parameter.grad
    return results


def assert_same_results(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for key, expected in theirs.items():
        assert_exact(ours[key], expected, key)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("initial_state", [False, True])
@pytest.mark.parametrize("batched", [True, False])
def test_lstm_matches_torch(num_layers: int, batch_first: bool, initial_state: bool, batched: bool) -> None:
    torch.manual_seed(num_layers)
    theirs, ours = lstm_pair(num_layers, batch_first=batch_first)
    T = 9
    if batched:
        x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=F64)
        state_shape = (num_layers, B, H)
    else:
        x = torch.randn(T, I, dtype=F64)
        state_shape = (num_layers, H)
    state = (
        (torch.randn(state_shape, dtype=F64), torch.randn(state_shape, dtype=F64)) if initial_state else None
    )
    assert_same_results(forward_backward(ours, x, state), forward_backward(theirs, x, state))


@pytest.mark.parametrize("T, hidden", [(1, H), (200, 3)])
def test_lstm_matches_torch_short_and_long_sequences(T: int, hidden: int) -> None:
    torch.manual_seed(T)
    theirs = nn.LSTM(2, hidden, 2, dtype=F64)
    ours = LSTM(2, hidden, 2, dtype=F64, backend="reference")
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(T, 2, 2, dtype=F64)
    state = (torch.randn(2, 2, hidden, dtype=F64), torch.randn(2, 2, hidden, dtype=F64))
    assert_same_results(forward_backward(ours, x, state), forward_backward(theirs, x, state))


def test_lstm_without_bias_matches_torch() -> None:
    torch.manual_seed(0)
    theirs, ours = lstm_pair(2, bias=False)
    assert not any("bias" in name for name, _ in ours.named_parameters())
    x = torch.randn(6, B, I, dtype=F64)
    assert_same_results(forward_backward(ours, x, None), forward_backward(theirs, x, None))


def test_lstm_dropout_in_eval_mode_matches_torch() -> None:
    torch.manual_seed(0)
    theirs, ours = lstm_pair(3, dropout=0.5)
    theirs.eval()
    ours.eval()
    x = torch.randn(6, B, I, dtype=F64)
    assert_same_results(forward_backward(ours, x, None), forward_backward(theirs, x, None))


def test_dropout_in_train_mode_acts_between_layers_only() -> None:
    torch.manual_seed(0)
    theirs, ours = lstm_pair(2, dropout=0.5)
    x = torch.randn(6, B, I, dtype=F64)
    first, (h1, c1) = ours(x)
    second, (h2, c2) = ours(x)
    assert not torch.allclose(first, second)  # the last layer sees a fresh dropout mask
    assert not torch.allclose(h1[1], h2[1])
    assert torch.equal(h1[0], h2[0]) and torch.equal(c1[0], c2[0])  # layer 0 runs before any dropout
    ours.eval()
    assert torch.equal(ours(x)[0], ours(x)[0])
    # Same mask as nn.LSTM's under the same seed: dropout sits at the same place in the computation.
    ours.train()
    torch.manual_seed(1)
    ours_out = ours(x)[0]
    torch.manual_seed(1)
    assert_exact(ours_out, theirs(x)[0].detach(), "train-mode output under the same seed")


def test_dropout_with_one_layer_warns_and_never_drops() -> None:
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        model = LSTM(I, H, 1, dropout=0.9, dtype=F64, backend="reference")
    x = torch.randn(6, B, I, dtype=F64)
    train_out = model(x)[0]
    assert torch.equal(train_out, model(x)[0])
    model.eval()
    assert torch.equal(train_out, model(x)[0])


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_keys_and_shapes_match_torch(num_layers: int, bias: bool) -> None:
    theirs = nn.LSTM(I, H, num_layers, bias=bias)
    ours = LSTM(I, H, num_layers, bias=bias)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]
    assert [[p.shape for p in layer] for layer in ours.all_weights] == [
        [p.shape for p in layer] for layer in theirs.all_weights
    ]
    ours.load_state_dict(theirs.state_dict())  # strict: no missing or unexpected keys


@pytest.mark.parametrize("bias", [True, False])
def test_cell_state_dict_keys_and_shapes_match_torch(bias: bool) -> None:
    theirs, ours = nn.LSTMCell(I, H, bias=bias), LSTMCell(I, H, bias=bias)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]


def test_init_is_torchs_uniform() -> None:
    hidden = 64
    model = LSTM(8, hidden, 2)
    bound = 1 / math.sqrt(hidden)
    values = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert values.abs().max() <= bound
    assert values.min() < -0.99 * bound and values.max() > 0.99 * bound  # fills the interval
    assert abs(values.mean().item()) < 0.02 * bound  # centred: the mean of ~52k draws has std ≈ 0.0025·bound
    # Drawn in the same order as torch, so the same seed gives the same weights.
    for make_ours, make_theirs in [
        (lambda: LSTM(I, H, 3), lambda: nn.LSTM(I, H, 3)),
        (lambda: LSTMCell(I, H), lambda: nn.LSTMCell(I, H)),
    ]:
        torch.manual_seed(7)
        ours = make_ours()
        torch.manual_seed(7)
        theirs = make_theirs()
        for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
            assert torch.equal(a, b), name


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("initial_state", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_matches_torch(batched: bool, initial_state: bool, bias: bool) -> None:
    torch.manual_seed(0)
    theirs = nn.LSTMCell(I, H, bias=bias, dtype=F64)
    ours = LSTMCell(I, H, bias=bias, dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    lead = (B,) if batched else ()
    x = torch.randn(*lead, I, dtype=F64)
    state = (torch.randn(*lead, H, dtype=F64), torch.randn(*lead, H, dtype=F64)) if initial_state else None
    assert_same_results(forward_backward(ours, x, state), forward_backward(theirs, x, state))


def test_repr_matches_torch() -> None:
    kwargs = {"num_layers": 2, "bias": False, "batch_first": True, "dropout": 0.25}
    assert repr(LSTM(I, H, **kwargs)) == repr(nn.LSTM(I, H, **kwargs))
    assert repr(LSTM(I, H)) == repr(nn.LSTM(I, H))
    assert repr(LSTMCell(I, H, bias=False)) == repr(nn.LSTMCell(I, H, bias=False))
    assert repr(LSTM(I, H, backend="reference")) == "LSTM(4, 5, backend='reference')"
    LSTM(I, H).flatten_parameters()  # accepted, does nothing


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"bidirectional": True}, NotImplementedError, "does not support bidirectional.*torch.nn.LSTM"),
        ({"proj_size": 2}, NotImplementedError, "does not support projections.*torch.nn.LSTM"),
        ({"dropout": 1.5}, ValueError, r"dropout should be a number in range \[0, 1\]"),
        ({"num_layers": 0}, ValueError, "num_layers must be greater than zero"),
        ({"hidden_size": 0}, ValueError, "hidden_size must be greater than zero"),
        ({"input_size": 2.0}, TypeError, "input_size should be of type int, got: float"),
        ({"bias": 1}, TypeError, "bias should be of type bool"),
        ({"batch_first": "yes"}, TypeError, "batch_first should be of type bool"),
        ({"backend": "cudnn"}, ValueError, "unknown LSTM backend 'cudnn'; valid backends: auto, reference"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs: dict, error: type, message: str) -> None:
    arguments = {"input_size": I, "hidden_size": H} | kwargs
    with pytest.raises(error, match=message):
        LSTM(**arguments)


def _lstm_call(x_shape, hx_shapes=None, dtype=F64):
    model = LSTM(I, H, 2, dtype=F64, backend="reference")
    hx = None if hx_shapes is None else tuple(torch.zeros(s, dtype=F64) for s in hx_shapes)
    return lambda: model(torch.zeros(x_shape, dtype=dtype), hx)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (_lstm_call((2, 3, 4, 5)), ValueError, "Expected input to be 2D or 3D, got 4D"),
        (_lstm_call((6, B, I + 1)), RuntimeError, "Expected 4, got 5"),
        (_lstm_call((6, B, I), dtype=torch.float32), ValueError, "does not match weight dtype"),
        (_lstm_call((0, B, I)), RuntimeError, "sequence length to be larger than 0"),
        (
            _lstm_call((6, B, I), [(2, B, H), (2, B + 1, H)]),
            RuntimeError,
            r"Expected hidden\[1\] size \(2, 3, 5\), got \[2, 4, 5\]",
        ),
        (
            _lstm_call((6, B, I), [(2, H), (2, H)]),
            RuntimeError,
            "For batched 3-D input, hx and cx should also be 3-D",
        ),
        (
            _lstm_call((6, I), [(2, B, H), (2, B, H)]),
            RuntimeError,
            "For unbatched 2-D input, hx and cx should",
        ),
        (_lstm_call((6, I), [(1, H), (1, H)]), RuntimeError, r"Expected hidden\[0\] size \(2, 1, 5\)"),
    ],
)
def test_bad_lstm_inputs_raise(call, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call()


def test_packed_sequence_is_refused_with_a_pointer_to_torch() -> None:
    packed = pack_padded_sequence(torch.zeros(6, B, I, dtype=F64), [6, 4, 2])
    with pytest.raises(TypeError, match="PackedSequence.*torch.nn.LSTM"):
        LSTM(I, H, dtype=F64)(packed)


def test_bad_cell_inputs_raise() -> None:
    cell = LSTMCell(I, H, dtype=F64)
    with pytest.raises(ValueError, match="Expected input to be 1D or 2D, got 3D"):
        cell(torch.zeros(1, B, I, dtype=F64))
    with pytest.raises(RuntimeError, match="Expected 4, got 3"):
        cell(torch.zeros(B, 3, dtype=F64))
    with pytest.raises(RuntimeError, match=r"Expected hx\[0\] size \(3, 5\), got \[2, 5\]"):
        cell(torch.zeros(B, I, dtype=F64), (torch.zeros(2, H, dtype=F64), torch.zeros(B, H, dtype=F64)))
    with pytest.raises(ValueError, match=r"Expected hx\[1\] to be 1D or 2D, got 3D"):
        cell(torch.zeros(B, I, dtype=F64), (torch.zeros(B, H, dtype=F64), torch.zeros(1, B, H, dtype=F64)))


def test_backend_is_resolved_once_per_device_type_and_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counting_resolve(name: str, device_type: str) -> str:
        calls.append((name, device_type))
        return "reference"

    monkeypatch.setattr(kernels, "resolve", counting_resolve)
    model = LSTM(I, H, 2, dtype=F64)
    assert model.last_backend is None
    for _ in range(3):
        model(torch.randn(4, B, I, dtype=F64))
    assert calls == [("auto", "cpu")]
    assert model.last_backend == "reference"


def test_auto_fallback_warns_at_most_once_per_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(kernels.BACKENDS, "fused", "lstmlab_no_such_module:lstm_layer")  # nothing fast here
    model = LSTM(I, H, dtype=F64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            model(torch.randn(4, B, I, dtype=F64))
    assert [str(w.message) for w in caught] == [
        "no fast LSTM backend for device type 'cpu'; falling back to 'reference'"
    ]
    assert model.last_backend == "reference"


def test_a_backend_plugs_in_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def spy_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        seen.append(tuple(x.shape))
        return reference.lstm_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh)

    module = types.ModuleType("lstmlab_test_spy_backend")
    module.lstm_layer = spy_layer
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(kernels.BACKENDS, "fused", f"{module.__name__}:lstm_layer")
    torch.manual_seed(0)
    theirs, ours = lstm_pair(2, batch_first=True)
    ours.backend = "fused"
    x = torch.randn(B, 6, I, dtype=F64)
    assert_same_results(forward_backward(ours, x, None), forward_backward(theirs, x, None))
    assert seen == [(6, B, I), (6, B, H)]  # time-major, one call per layer
    assert ours.last_backend == "fused"
