"""Parity of the fast LSTM layers with their slow twin (`reference`) and with torch.nn.LSTM.

Every output (y, h_T, c_T) and every gradient (x, h0, c0, w_ih, w_hh, b_ih, b_hh) is compared, in float64
to 1e-10. The Triton kernels run under Triton's CPU interpreter in a subprocess, so that the interpreter
flag (read when triton is imported) never leaks into this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from lstmlab import kernels
from lstmlab.kernels import BackendUnavailable, fused, reference

REPO = Path(__file__).resolve().parents[1]

SHAPES = [  # (T, B, I, H)
    (1, 1, 3, 5),
    (7, 1, 3, 5),
    (1, 4, 6, 8),
    (9, 3, 3, 5),
    (6, 5, 7, 1),
    (12, 2, 16, 32),
]


def cpp_available() -> bool:
    return fused.cpp_loops() is not None


LOOPS = ["sequences", "steps", "python"]  # the C++ loops' two schedules, and the Python loop


def loop_kwargs(loop: str) -> dict:
    """Keyword arguments of the fused layer for `loop`; the C++ ones are skipped, with the build error, where the
    C++ loop cannot be built."""
    if loop == "python":
        return {"loop": "python"}
    if not cpp_available():
        pytest.skip(f"C++ loop unavailable: {fused._cpp_state['error']}")
    return {"loop": "cpp", "schedule": loop}


def make_inputs(steps, batch, inputs, hidden, dtype=torch.float64, bias=True, seed=0, zero_state=False):
    """x, h0, c0, w_ih, w_hh, b_ih, b_hh as leaves that require grad (biases None when bias=False)."""
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_()

    state = (
        (lambda: torch.zeros(batch, hidden, dtype=dtype, requires_grad=True))
        if zero_state
        else (lambda: leaf(batch, hidden))
    )
    w_scale = 1.0 / max(hidden, inputs) ** 0.5
    return [
        leaf(steps, batch, inputs),
        state(),
        state(),
        leaf(4 * hidden, inputs, scale=w_scale),
        leaf(4 * hidden, hidden, scale=w_scale),
        leaf(4 * hidden, scale=0.5) if bias else None,
        leaf(4 * hidden, scale=0.5) if bias else None,
    ]


def detached(tensors):
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


def outputs_and_grads(layer, tensors, seed=1):
    """Run the layer, back-propagate fixed random cotangents into y, h_T and c_T; return outputs + grads."""
    y, h, c = layer(*tensors)
    g = torch.Generator().manual_seed(seed)
    # drawn on the CPU (the same numbers on every device), then moved to each output's device and dtype
    cotangents = [torch.randn(t.shape, generator=g, dtype=torch.float64).to(t) for t in (y, h, c)]
    torch.autograd.backward([y, h, c], cotangents)
    return [y.detach(), h.detach(), c.detach()] + [t.grad for t in tensors if t is not None]


NAMES = ["y", "h_T", "c_T", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh"]


def assert_close(actual, expected, atol, rtol=0.0):
    assert len(actual) == len(expected)
    for name, a, e in zip(NAMES, actual, expected, strict=False):
        assert a is not None and e is not None, name
        assert a.shape == e.shape, name
        torch.testing.assert_close(a.double(), e.double(), atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


def assert_relative(actual, expected, tol):
    for name, a, e in zip(NAMES, actual, expected, strict=False):
        err = (a.double() - e.double()).norm() / e.double().norm().clamp_min(1e-30)
        assert err < tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


def fused_layer(kwargs):
    return lambda *t: fused.lstm_layer(*t, **kwargs)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_matches_reference_float64(shape, bias, loop):
    kwargs = loop_kwargs(loop)
    tensors = make_inputs(*shape, bias=bias)
    expected = outputs_and_grads(reference.lstm_layer, detached(tensors))
    actual = outputs_and_grads(fused_layer(kwargs), detached(tensors))
    assert_close(actual, expected, atol=1e-10)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 3, 5), (9, 3, 3, 5), (12, 2, 16, 32)])
def test_fused_matches_nn_lstm_float64(shape, bias, loop):
    kwargs = loop_kwargs(loop)
    steps, batch, inputs, hidden = shape
    tensors = make_inputs(*shape, bias=bias, seed=3)
    ours = outputs_and_grads(fused_layer(kwargs), detached(tensors))

    module = torch.nn.LSTM(inputs, hidden, bias=bias).double()
    with torch.no_grad():
        module.weight_ih_l0.copy_(tensors[3])
        module.weight_hh_l0.copy_(tensors[4])
        if bias:
            module.bias_ih_l0.copy_(tensors[5])
            module.bias_hh_l0.copy_(tensors[6])
    x, h0, c0 = detached(tensors[:3])
    theirs = outputs_and_grads(lambda x, h0, c0: _nn_lstm(module, x, h0, c0), [x, h0, c0])
    params = [module.weight_ih_l0, module.weight_hh_l0] + ([module.bias_ih_l0, module.bias_hh_l0] if bias else [])
    assert_close(ours, theirs + [p.grad for p in params], atol=1e-10)


def _nn_lstm(module, x, h0, c0):
    y, (h, c) = module(x, (h0.unsqueeze(0), c0.unsqueeze(0)))
    return y, h[0], c[0]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("shape", [(1, 1, 3, 5), (9, 3, 3, 5), (20, 8, 24, 48), (7, 33, 5, 17), (5, 20, 3, 49),
                                   (4, 17, 6, 23)])  # H's last tile: 1 or 5 of 16 lanes (a quarter, a half, 7 of 8)
def test_fused_float32_matches_float64_reference(shape, loop):
    kwargs = loop_kwargs(loop)
    tensors = make_inputs(*shape, seed=5)
    expected = outputs_and_grads(reference.lstm_layer, detached(tensors))
    actual = outputs_and_grads(fused_layer(kwargs), [t.detach().float().requires_grad_() for t in tensors])
    assert all(a.dtype == torch.float32 for a in actual)
    assert_relative(actual, expected, tol=1e-5)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("initial_state", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_stacked_fused_layers_match_nn_lstm(layers, initial_state, bias, loop):
    """Layer l's y feeds layer l+1, as in nn.LSTM(num_layers=L); without a state both start at zeros."""
    kwargs = loop_kwargs(loop)
    steps, batch, inputs, hidden = 8, 3, 5, 7
    torch.manual_seed(11)
    module = torch.nn.LSTM(inputs, hidden, num_layers=layers, bias=bias).double()
    x = torch.randn(steps, batch, inputs, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(layers, batch, hidden, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(layers, batch, hidden, dtype=torch.float64, requires_grad=True)
    cot_y = torch.randn(steps, batch, hidden, dtype=torch.float64)
    cot_h = torch.randn(layers, batch, hidden, dtype=torch.float64)

    y_ref, (h_ref, _) = module(x, (h0, c0)) if initial_state else module(x)
    ((y_ref * cot_y).sum() + (h_ref * cot_h).sum()).backward()
    expected = [y_ref.detach(), h_ref.detach(), x.grad.clone()] + [p.grad.clone() for p in module.parameters()]
    expected += [h0.grad.clone(), c0.grad.clone()] if initial_state else []
    for tensor in (x, h0, c0, *module.parameters()):
        tensor.grad = None

    inp, finals = x, []
    for layer in range(layers):
        weights = [getattr(module, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh")]
        biases = [getattr(module, f"{name}_l{layer}") for name in ("bias_ih", "bias_hh")] if bias else [None, None]
        state = (
            (h0[layer], c0[layer])
            if initial_state
            else (torch.zeros(batch, hidden, dtype=torch.float64), torch.zeros(batch, hidden, dtype=torch.float64))
        )
        inp, h_last, _ = fused.lstm_layer(inp, *state, *weights, *biases, **kwargs)
        finals.append(h_last)
    h_ours = torch.stack(finals)
    ((inp * cot_y).sum() + (h_ours * cot_h).sum()).backward()
    actual = [inp.detach(), h_ours.detach(), x.grad] + [p.grad for p in module.parameters()]
    actual += [h0.grad, c0.grad] if initial_state else []
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=0.0)


@pytest.mark.parametrize("loop", LOOPS)
def test_fused_inference_saves_nothing_and_matches(loop):
    kwargs = loop_kwargs(loop)
    tensors = make_inputs(6, 2, 3, 4)
    with torch.no_grad():
        y, h, c = fused.lstm_layer(*tensors, **kwargs)
        y_ref, h_ref, c_ref = reference.lstm_layer(*tensors)
    assert y.grad_fn is None and h.grad_fn is None and c.grad_fn is None
    for a, e in ((y, y_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, e, atol=1e-12, rtol=0.0)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_saturated_gates_stay_finite_and_nan_propagates(loop, dtype):
    """Pre-activations of ±1e30 saturate the gates (no overflow to NaN); a NaN input still shows as NaN."""
    kwargs = loop_kwargs(loop)
    x, h0, c0, w_ih, w_hh, _, _ = [None if t is None else t.detach().to(dtype) for t in make_inputs(4, 3, 2, 5)]
    for scale in (30.0, 1e30):
        y, h, c = fused.lstm_layer(x * scale, h0, c0, w_ih, w_hh, None, None, **kwargs)
        y_ref, h_ref, c_ref = reference.lstm_layer(x * scale, h0, c0, w_ih, w_hh, None, None)
        for a, e in ((y, y_ref), (h, h_ref), (c, c_ref)):
            torch.testing.assert_close(a, e, atol=1e-6 if dtype == torch.float32 else 1e-12, rtol=0.0)
    x[1, 0, 0] = float("nan")
    y, _, _ = fused.lstm_layer(x, h0, c0, w_ih, w_hh, None, None, **kwargs)
    assert not y[0].isnan().any() and y[1:, 0].isnan().all()


def test_fused_grad_only_for_some_inputs():
    """Weights frozen, only x requires grad: the result still matches the reference."""
    tensors = [t.detach() for t in make_inputs(5, 2, 3, 4)]
    x_ours, x_ref = tensors[0].clone().requires_grad_(), tensors[0].clone().requires_grad_()
    fused.lstm_layer(x_ours, *tensors[1:])[0].sum().backward()
    reference.lstm_layer(x_ref, *tensors[1:])[0].sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-10, rtol=0.0)


@pytest.mark.parametrize("stacked", [False, True])
def test_bias_gradients_do_not_share_memory(stacked):
    """db_ih = db_hh, but as two tensors: an in-place change to one .grad (an optimizer's, a clip's) must not
    reach the other."""
    tensors = make_stacked(2, 3, 2, 3, 4) if stacked else make_inputs(3, 2, 3, 4)
    layer = fused.lstm_layer_stacked if stacked else fused.lstm_layer
    layer(*tensors)[0].sum().backward()
    b_ih, b_hh = tensors[5], tensors[6]
    torch.testing.assert_close(b_ih.grad, b_hh.grad, rtol=0, atol=0)
    before = b_hh.grad.clone()
    b_ih.grad.mul_(2)
    torch.testing.assert_close(b_hh.grad, before, rtol=0, atol=0)


def test_fused_double_backward_raises():
    tensors = make_inputs(3, 2, 3, 4)
    y, _, _ = fused.lstm_layer(*tensors)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(y.sum(), tensors[0], create_graph=True)


def test_fused_rejects_bad_arguments():
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = [None if t is None else t.detach() for t in make_inputs(3, 2, 3, 4)]
    with pytest.raises(ValueError, match="h0 must have shape"):
        fused.lstm_layer(x, h0[:1], c0, w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="both"):
        fused.lstm_layer(x, h0, c0, w_ih, w_hh, b_ih, None)
    with pytest.raises(ValueError, match="one dtype"):
        fused.lstm_layer(x.float(), h0, c0, w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="unknown loop"):
        fused.lstm_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, loop="fortran")


# ---------------------------------------------------------------------------------------------------------------------
# The stacked layer: every member of a pack is exactly the plain layer (and the reference, and nn.LSTM) on its slices.

STACKED_SHAPES = [  # (K, T, B, I, H): T = 1, B = 1, odd sizes, H past one vector of lanes, members ≠ threads,
    (1, 1, 1, 3, 5),  # and B = 37: enough rows that the C++ backward sums the weight gradients in its loop
    (3, 1, 4, 6, 8),
    (2, 7, 1, 3, 5),
    (3, 9, 3, 3, 5),
    (4, 6, 5, 7, 1),
    (3, 5, 9, 2, 23),
    (2, 3, 37, 4, 21),
]


def make_stacked(members, steps, batch, inputs, hidden, bias=True, zero_state=False, seed=0):
    """x, h0, c0, w_ih, w_hh, b_ih, b_hh with a leading member axis: each member's own draw of `make_inputs`."""
    per_member = [make_inputs(steps, batch, inputs, hidden, bias=bias, seed=seed + k, zero_state=zero_state)
                  for k in range(members)]  # fmt: skip
    return [None if parts[0] is None else torch.stack([p.detach() for p in parts]).requires_grad_()
            for parts in zip(*per_member, strict=True)]  # fmt: skip


def member_results(stacked_results, k):
    """Member k's slice of every output and gradient."""
    return [r[k] for r in stacked_results]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("initial_state", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", STACKED_SHAPES)
def test_every_member_matches_reference_float64(shape, bias, initial_state, loop):
    kwargs = loop_kwargs(loop)
    tensors = make_stacked(*shape, bias=bias, zero_state=not initial_state)
    ours = outputs_and_grads(lambda *t: fused.lstm_layer_stacked(*t, **kwargs), detached(tensors))
    for k in range(shape[0]):
        member = [None if t is None else t[k] for t in tensors]
        expected = _reference_with_cotangents(member, ours[:3], k)
        assert_close(member_results(ours, k), expected, atol=1e-10)


def _reference_with_cotangents(member, stacked_outputs, k, seed=1):
    """The reference layer on one member, back-propagating member k's slice of the cotangents that
    `outputs_and_grads` drew for the stacked run (same seed, same shapes)."""
    g = torch.Generator().manual_seed(seed)
    cotangents = [torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)[k] for t in stacked_outputs]
    leaves = detached(member)
    y, h, c = reference.lstm_layer(*leaves)
    torch.autograd.backward([y, h, c], cotangents)
    return [y.detach(), h.detach(), c.detach()] + [t.grad for t in leaves if t is not None]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("bias", [True, False])
def test_every_member_matches_nn_lstm_float64(bias, loop):
    kwargs = loop_kwargs(loop)
    members, steps, batch, inputs, hidden = 3, 6, 5, 4, 19
    tensors = make_stacked(members, steps, batch, inputs, hidden, bias=bias, seed=3)
    ours = outputs_and_grads(lambda *t: fused.lstm_layer_stacked(*t, **kwargs), detached(tensors))
    g = torch.Generator().manual_seed(1)
    cotangents = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in ours[:3]]
    for k in range(members):
        module = torch.nn.LSTM(inputs, hidden, bias=bias).double()
        with torch.no_grad():
            for name, t in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), tensors[3:], strict=True):
                if t is not None:
                    getattr(module, name).copy_(t[k])
        x, h0, c0 = detached([t[k] for t in tensors[:3]])
        y, h, c = _nn_lstm(module, x, h0, c0)
        torch.autograd.backward([y, h, c], [ct[k] for ct in cotangents])
        params = [module.weight_ih_l0, module.weight_hh_l0] + ([module.bias_ih_l0, module.bias_hh_l0] if bias else [])
        theirs = [y.detach(), h.detach(), c.detach(), x.grad, h0.grad, c0.grad] + [p.grad for p in params]
        assert_close(member_results(ours, k), theirs, atol=1e-10)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("schedule", ["sequences", "steps"])
def test_members_and_batch_slices_split_over_threads(schedule, threads):
    """The C++ loops split (member, batch slice) units over threads (3 members on 2 threads: each member's batch
    in two slices, of 20 and 17 rows); any split gives the same numbers as one thread."""
    kwargs = loop_kwargs(schedule)
    tensors = make_stacked(3, 4, 37, 3, 21, seed=5)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        expected = outputs_and_grads(lambda *t: fused.lstm_layer_stacked(*t, **kwargs), detached(tensors))
        torch.set_num_threads(threads)
        actual = outputs_and_grads(lambda *t: fused.lstm_layer_stacked(*t, **kwargs), detached(tensors))
    finally:
        torch.set_num_threads(previous)
    assert_close(actual, expected, atol=1e-12)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_stacked_inference_matches_training_forward(loop, steps):
    """Without a gradient nothing is saved (the C++ loop keeps only the last two c_t); the numbers are the same."""
    kwargs = loop_kwargs(loop)
    tensors = make_stacked(2, steps, 3, 4, 18, seed=9)
    trained = fused.lstm_layer_stacked(*tensors, **kwargs)
    with torch.no_grad():
        inferred = fused.lstm_layer_stacked(*tensors, **kwargs)
    for a, e in zip(inferred, trained, strict=True):
        assert a.grad_fn is None
        torch.testing.assert_close(a, e.detach(), atol=0, rtol=0)


def test_large_buffers_are_reused_only_once_their_graph_is_freed():
    """Activation buffers of 32 MiB and more are pooled across calls: a second call while the first one's graph is
    alive gets its own; the gradients of both are the ones each call alone gives; once freed, a buffer is reused."""
    kwargs = loop_kwargs("sequences")
    shape = (2, 64, 64, 8, 256)  # K·T·B·4H float32 values: 33.5 MB of activations
    first, second = ([t.detach().float().requires_grad_() for t in make_stacked(*shape, seed=s)] for s in (1, 2))

    def grads(tensors, y):
        return torch.autograd.grad(y.square().sum(), [tensors[0], tensors[3], tensors[4]])

    alone = [grads(t, fused.lstm_layer_stacked(*t, **kwargs)[0]) for t in (first, second)]
    y1 = fused.lstm_layer_stacked(*first, **kwargs)[0]
    y2 = fused.lstm_layer_stacked(*second, **kwargs)[0]  # while y1's graph holds its activations
    acts1, acts2 = (y.grad_fn.saved_tensors[5] for y in (y1, y2))
    assert acts1.data_ptr() != acts2.data_ptr()
    for together, expected in zip((grads(second, y2), grads(first, y1)), reversed(alone), strict=True):
        for a, e in zip(together, expected, strict=True):
            torch.testing.assert_close(a, e, rtol=0, atol=0)
    pointers = {acts1.data_ptr(), acts2.data_ptr()}
    del y1, y2, acts1, acts2
    y3 = fused.lstm_layer_stacked(*first, **kwargs)[0]
    assert y3.grad_fn.saved_tensors[5].data_ptr() in pointers


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_stacked_layer_is_each_member_alone(backend):
    """The stacked form: member k of the result is the plain layer on member k's slices (float64)."""
    g = torch.Generator().manual_seed(7)
    K, T, B, I, H = 3, 5, 2, 3, 4
    x = torch.randn(K, T, B, I, generator=g, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.randn(K, B, H, generator=g, dtype=torch.float64) for _ in range(2))
    w_ih = torch.randn(K, 4 * H, I, generator=g, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(K, 4 * H, H, generator=g, dtype=torch.float64, requires_grad=True)
    b_ih, b_hh = (torch.randn(K, 4 * H, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    y, h, c = kernels.get_stacked(backend)(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    assert y.shape == (K, T, B, H) and h.shape == (K, B, H) and c.shape == (K, B, H)
    (y.sum() + h.square().sum() + c.sum()).backward()
    stacked_grads = [t.grad.clone() for t in (x, w_ih, w_hh, b_ih)]
    for k in range(K):
        leaves = [t[k].detach().clone().requires_grad_() for t in (x, w_ih, w_hh, b_ih)]
        xk, wik, whk, bik = leaves
        yk, hk, ck = kernels.get("reference")(xk, h0[k], c0[k], wik, whk, bik, b_hh[k].detach())
        torch.testing.assert_close(y[k], yk, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(h[k], hk, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(c[k], ck, rtol=1e-10, atol=1e-12)
        (yk.sum() + hk.square().sum() + ck.sum()).backward()
        for leaf, grad in zip(leaves, stacked_grads, strict=True):
            torch.testing.assert_close(grad[k], leaf.grad, rtol=1e-10, atol=1e-12)


def test_fused_stacked_is_its_own_kernel_and_rejects_bad_shapes():
    assert kernels.get_stacked("fused") is fused.lstm_layer_stacked
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = [t.detach() for t in make_stacked(2, 3, 2, 3, 4)]
    with pytest.raises(ValueError, match=r"x must be \(K, T, B, I\)"):
        fused.lstm_layer_stacked(x[0], h0, c0, w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="w_hh must have shape"):
        fused.lstm_layer_stacked(x, h0, c0, w_ih, w_hh[:1], b_ih, b_hh)
    with pytest.raises(ValueError, match="biases must have shape"):
        fused.lstm_layer_stacked(x, h0, c0, w_ih, w_hh, b_ih[0], b_hh[0])
    with pytest.raises(ValueError, match="unknown schedule"):
        fused.lstm_layer_stacked(x, h0, c0, w_ih, w_hh, b_ih, b_hh, schedule="sometimes")


def test_schedule_choice():
    """sequences while a member's weights (and, backward, their gradients) fit what a core's L2 holds."""
    assert fused.choose_schedule(2, 23, 4, backward=True) == "sequences"  # the study sizes
    assert fused.choose_schedule(100, 100, 8, backward=True) == "sequences"
    assert fused.choose_schedule(64, 256, 4, backward=True) == "sequences"  # 2.6 MB with the gradients
    assert fused.choose_schedule(256, 256, 4, backward=True) == "steps"  # 4.2 MB
    assert fused.choose_schedule(256, 256, 4, backward=False) == "sequences"  # the forward holds half of it
    assert fused.choose_schedule(512, 512, 4, backward=False) == "steps"


# ---------------------------------------------------------------------------------------------------------------------
# Building the C++ loop: said in one line, once per machine, safe when two processes build at once; without a
# compiler the Python loop runs and one line says how to get the fast one.


def test_cpp_loop_falls_back_when_it_cannot_be_built(monkeypatch, tmp_path, capfd):
    """A source that does not compile: one line naming the error, then the Python loop under `auto`."""
    broken = tmp_path / "_cpu_loop.cpp"
    broken.write_text("#error this build is meant to fail\n")
    monkeypatch.setattr(fused, "_CPP_SOURCE", broken)
    monkeypatch.setattr(fused, "_cpp_state", {})
    monkeypatch.setenv("LSTMLAB_CACHE_DIR", str(tmp_path / "cache"))
    assert fused.cpp_loops() is None
    assert "this build is meant to fail" in fused._cpp_state["error"]
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("lstmlab:")]
    assert len(lines) == 2, lines  # "building ..." and "did not build ... Python time loop instead"
    assert "building the C++ LSTM time loop" in lines[0]
    assert "did not build" in lines[1] and "Python time loop" in lines[1]
    assert isinstance(fused.choose_loops(torch.device("cpu"), torch.float64), fused.PythonLoops)
    with pytest.raises(RuntimeError, match="unavailable"):
        fused.choose_loops(torch.device("cpu"), torch.float64, "cpp")


def test_without_a_compiler_one_line_says_how_to_get_the_fast_loop(monkeypatch, tmp_path, capfd):
    monkeypatch.setattr(fused, "_cpp_state", {})
    monkeypatch.setenv("LSTMLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", "no-such-compiler-lstmlab")
    assert fused.prepare(torch.device("cpu"), torch.float64) == "python"
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "Warning" not in err, err
    assert "no C++ compiler" in err and "Python time loop" in err and "install" in err
    tensors = make_inputs(4, 2, 3, 5)
    expected = outputs_and_grads(reference.lstm_layer, detached(tensors))
    assert_close(outputs_and_grads(fused.lstm_layer, detached(tensors)), expected, atol=1e-10)


TINY_EXTENSION = 'extern "C" int lstmlab_lock_test_answer() { return 42; }\n'  # no torch headers: builds in seconds

BUILD_AT_ONCE = textwrap.dedent(
    """
    import ctypes, sys
    from pathlib import Path
    from lstmlab.kernels import fused
    fused._CPP_SOURCE = Path(sys.argv[1])
    assert fused.cpp_loops() is not None, fused._cpp_state["error"]
    library = fused._build_dir() / "lstmlab_cpu_loop.so"
    print("answer", ctypes.CDLL(str(library)).lstmlab_lock_test_answer())
    """
)


def test_two_processes_building_at_once_build_once(tmp_path):
    """Two processes start on an empty cache at the same moment: one builds (saying so once), the other waits
    for the lock and loads the same library."""
    if fused._compiler() is None:
        pytest.skip("no C++ compiler here")
    source = tmp_path / "tiny.cpp"
    source.write_text(TINY_EXTENSION)
    env = dict(os.environ, LSTMLAB_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    env.pop("LSTMLAB_NO_CPP", None)
    runs = [subprocess.Popen([sys.executable, "-c", BUILD_AT_ONCE, str(source)], cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]  # fmt: skip
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, out + err
        assert "answer 42" in out
    said = "".join(err for _, err in outputs)
    assert said.count("building the C++ LSTM time loop") == 1, said
    assert len(list((tmp_path / "cache").glob("cpu_loop-*/lstmlab_cpu_loop.so"))) == 1


def test_prepare_builds_and_warms_every_backend_it_can(capfd):
    for name in ("reference", "fused"):
        kernels.prepare(name, torch.device("cpu"), torch.float64)
    if cpp_available():
        assert fused.prepare(torch.device("cpu"), torch.float32) == "cpp"
        assert capfd.readouterr().err == ""  # already built and loaded: nothing more to say


def _activation_grid(dtype):
    dense = torch.linspace(-30, 30, 1_200_001, dtype=torch.float64)
    wide = torch.linspace(-800, 800, 160_001, dtype=torch.float64)
    tiny = torch.logspace(-40, 1, 4_001, dtype=torch.float64)
    return torch.cat([dense, wide, tiny, -tiny, torch.tensor([0.0, 1e30, -1e30])]).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpp_cell_activations_accuracy(dtype):
    """σ and tanh as the C++ cells compute them (vectorised, built with -ffast-math): relative error ≤ 1e-6
    (float32) / 1e-13 (float64) against float64 torch over a dense grid, large |x| included; ±inf saturate;
    NaN propagates."""
    if not cpp_available():
        pytest.skip(f"C++ loop unavailable: {fused._cpp_state['error']}")
    x = _activation_grid(dtype)
    sig, tanh = torch.ops.lstmlab_cpu.activations(x)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    smallest = torch.finfo(dtype).tiny  # below it (subnormal results) only the absolute error is bounded
    for name, ours, exact in (("sigmoid", sig, torch.sigmoid(x.double())), ("tanh", tanh, torch.tanh(x.double()))):
        assert ours.dtype == dtype
        err = (ours.double() - exact).abs()
        normal = exact.abs() >= smallest
        rel = err[normal] / exact[normal].abs()
        assert rel.max() <= tol, f"{name}: relative error {rel.max():.2e} at x={x[normal][rel.argmax()]:.6g}"
        assert (err[~normal] <= smallest).all(), name
    special = torch.tensor([float("inf"), -float("inf"), float("nan")], dtype=dtype)
    sig, tanh = torch.ops.lstmlab_cpu.activations(special)
    assert sig[:2].tolist() == [1.0, 0.0] and tanh[:2].tolist() == [1.0, -1.0]
    assert sig[2].isnan() and tanh[2].isnan()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_fused_on_cuda_matches_reference():
    tensors = [None if t is None else t.detach().cuda().requires_grad_() for t in make_inputs(9, 3, 3, 5)]
    expected = outputs_and_grads(reference.lstm_layer, detached(tensors))
    actual = outputs_and_grads(fused.lstm_layer, detached(tensors))
    assert_close(actual, expected, atol=1e-10)


# ---------------------------------------------------------------------------------------------------------------------
# Triton: under the interpreter in a subprocess (CPU tensors), and on a real GPU when there is one.

TRITON_PARITY = textwrap.dedent(
    """
    import torch
    from lstmlab.kernels import reference, triton_lstm
    from tests.test_kernels import (make_inputs, make_stacked, outputs_and_grads, assert_relative, detached,
                                    _reference_with_cotangents)

    assert triton_lstm.interpreting()
    per_step = lambda *t: triton_lstm.lstm_layer(*t, persistent=False)  # these H fit: persistent by default
    for shape, bias in [((1, 1, 3, 5), True), ((5, 3, 4, 6), False), ((4, 2, 3, 37), True)]:
        tensors = make_inputs(*shape, bias=bias, seed=7)
        expected = outputs_and_grads(reference.lstm_layer, detached(tensors))
        for dtype, tol in [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)]:
            ours = [None if t is None else t.detach().to(dtype).requires_grad_() for t in tensors]
            actual = outputs_and_grads(per_step, ours)
            assert all(a.dtype == dtype for a in actual)
            assert_relative(actual, expected, tol)
            print("ok", shape, bias, dtype)

    # K = 3 members in one launch per step: every member matches the reference on its own slices
    stacked = make_stacked(3, 4, 3, 5, 7, seed=2)
    ours = outputs_and_grads(lambda *t: triton_lstm.lstm_layer_stacked(*t, persistent=False),
                             [t.detach().float().requires_grad_() for t in stacked])
    for k in range(3):
        member = [t[k] for t in stacked]
        assert_relative([r[k] for r in ours], _reference_with_cotangents(member, ours[:3], k), 1e-5)
    print("ok stacked")
    """
)


def test_triton_kernels_match_reference_under_interpreter():
    pytest.importorskip("triton", reason="triton is not installed")
    env = dict(
        os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    result = subprocess.run(
        [sys.executable, "-c", TRITON_PARITY], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok") == 7


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_triton_refuses_cpu_tensors_without_interpreter():
    pytest.importorskip("triton", reason="triton is not installed")
    from lstmlab.kernels import triton_lstm

    if triton_lstm.interpreting():
        pytest.skip("TRITON_INTERPRET is set in this process")
    with pytest.raises(BackendUnavailable, match="CUDA"):
        triton_lstm.lstm_layer(*[None if t is None else t.detach().float() for t in make_inputs(2, 1, 3, 4)])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_triton_on_cuda_matches_reference():
    pytest.importorskip("triton", reason="triton is not installed")
    from lstmlab.kernels import triton_lstm

    tensors = make_inputs(17, 5, 9, 40, seed=2)
    expected = outputs_and_grads(reference.lstm_layer, detached(tensors))
    for dtype, tol in [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)]:
        ours = [None if t is None else t.detach().cuda().to(dtype).requires_grad_() for t in tensors]
        actual = outputs_and_grads(lambda *t: triton_lstm.lstm_layer(*t, persistent=False), ours)
        assert_relative([a.cpu() for a in actual], expected, tol)


# ---------------------------------------------------------------------------------------------------------------------
# The persistent Triton loops (W_hh on chip for the whole sequence): under the interpreter, like the kernels above.

TRITON_PERSISTENT_PARITY = textwrap.dedent(
    """
    import torch
    from lstmlab.kernels import reference, triton_lstm
    from tests.test_kernels import (make_inputs, make_stacked, outputs_and_grads, assert_relative, detached,
                                    _reference_with_cotangents)

    assert triton_lstm.interpreting()
    persistent = lambda *t: triton_lstm.lstm_layer(*t, persistent=True)
    # odd H (20, 5: masked lanes), B=18 (two batch tiles, the second partial), H=64 (the largest that fits), T=1
    cases = [((5, 3, 7, 16), True), ((5, 3, 7, 20), False), ((5, 3, 7, 20), True), ((1, 1, 3, 5), True),
             ((4, 18, 3, 64), False)]
    for shape, bias in cases:
        assert triton_lstm.choose_loops(shape[3], torch.float32, True) is triton_lstm.PERSISTENT_LOOPS
        tensors = make_inputs(*shape, bias=bias, seed=7)
        expected = outputs_and_grads(reference.lstm_layer, detached(tensors))
        for dtype, tol in [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)]:
            ours = [None if t is None else t.detach().to(dtype).requires_grad_() for t in tensors]
            actual = outputs_and_grads(persistent, ours)
            assert all(a.dtype == dtype for a in actual)
            assert_relative(actual, expected, tol)
            print("ok", shape, bias, dtype)

    # inference (no autograd graph) takes the same kernels, by default (H = 20 fits)
    tensors = [t.detach().float() for t in make_inputs(6, 2, 4, 20, seed=3)]
    expected = reference.lstm_layer(*[t.double() for t in tensors])
    assert triton_lstm.choose_loops(20, torch.float32) is triton_lstm.PERSISTENT_LOOPS
    with torch.no_grad():
        actual = triton_lstm.lstm_layer(*tensors)
    assert_relative(actual, expected, 1e-5)
    print("ok inference, persistent by default")

    # K = 3 members: the member is the grid's second axis (B = 18: two batch tiles per member, the second partial)
    stacked = make_stacked(3, 3, 18, 4, 20, seed=4)
    ours = outputs_and_grads(lambda *t: triton_lstm.lstm_layer_stacked(*t, persistent=True),
                             [t.detach().float().requires_grad_() for t in stacked])
    for k in range(3):
        member = [t[k] for t in stacked]
        assert_relative([r[k] for r in ours], _reference_with_cotangents(member, ours[:3], k), 1e-5)
    print("ok stacked")
    """
)


def _version(text: str) -> tuple[int, ...]:
    """'3.6.0+git...' -> (3, 6): the release's major and minor number."""
    return tuple(int(part) for part in text.split(".")[:2])


def test_triton_persistent_kernels_match_reference_under_interpreter():
    triton = pytest.importorskip("triton", reason="triton is not installed")
    if _version(triton.__version__) < (3, 9) and _version(np.__version__) >= (2, 5):
        # the interpreter of Triton 3.6 takes int() of a 1-element array for a runtime loop bound, which numpy 2.5
        # refuses (seen on a GPU machine with triton 3.6.0; 3.9 squeezes it); the compiled kernels are unaffected
        pytest.skip(f"Triton {triton.__version__}'s interpreter: no runtime loop bound under numpy {np.__version__}")
    env = dict(
        os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    env.pop("LSTMLAB_TRITON_PERSISTENT", None)
    result = subprocess.run(
        [sys.executable, "-c", TRITON_PERSISTENT_PARITY], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok") == 12


def test_triton_persistent_is_the_default_where_it_fits(monkeypatch):
    pytest.importorskip("triton", reason="triton is not installed")
    from lstmlab.kernels import triton_lstm

    fits = triton_lstm.PersistentLoops.fits
    assert fits(1, torch.float32) and fits(64, torch.float32) and fits(64, torch.bfloat16)
    assert not fits(65, torch.float32) and not fits(65, torch.bfloat16) and not fits(16, torch.float64)

    choose = triton_lstm.choose_loops
    monkeypatch.delenv("LSTMLAB_TRITON_PERSISTENT", raising=False)
    assert choose(16, torch.float32) is choose(64, torch.bfloat16) is triton_lstm.PERSISTENT_LOOPS  # where it fits
    assert choose(65, torch.float32) is triton_lstm.LOOPS  # where it does not, quietly per step
    assert choose(16, torch.float32, persistent=False) is triton_lstm.LOOPS
    assert choose(16, torch.float32, persistent=True) is triton_lstm.PERSISTENT_LOOPS
    with pytest.raises(ValueError, match="H=65"):
        choose(65, torch.float32, persistent=True)

    monkeypatch.setenv("LSTMLAB_TRITON_PERSISTENT", "0")  # off, unless a call insists
    assert choose(16, torch.bfloat16) is choose(65, torch.float32) is triton_lstm.LOOPS
    assert choose(16, torch.bfloat16, persistent=True) is triton_lstm.PERSISTENT_LOOPS


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_triton_persistent_on_cuda_matches_reference():
    pytest.importorskip("triton", reason="triton is not installed")
    from lstmlab.kernels import triton_lstm

    for shape in [(17, 5, 9, 40), (9, 37, 6, 64)]:
        tensors = make_inputs(*shape, seed=2)
        expected = outputs_and_grads(reference.lstm_layer, detached(tensors))
        for dtype, tol in [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)]:
            ours = [None if t is None else t.detach().cuda().to(dtype).requires_grad_() for t in tensors]
            actual = outputs_and_grads(lambda *t: triton_lstm.lstm_layer(*t, persistent=True), ours)
            assert_relative([a.cpu() for a in actual], expected, tol)
