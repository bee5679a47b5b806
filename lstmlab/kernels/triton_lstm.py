"""The Triton LSTM layer (CUDA): the fused backend's time loops with the pointwise cell as Triton kernels.

Per step, forward: one cuBLAS GEMM (`a_t += h_{t-1} · W_hhᵀ`, torch.addmm_) then `_cell_forward_kernel`,
which reads the four gate pre-activations and c_{t-1} once and writes the activations, c_t and h_t.
Backward: `_cell_backward_kernel` (saved activations, c, dh_t, dc_t -> da_t, dc_{t-1}) then one GEMM
(`dh_{t-1} = da_t · W_hh`). The input projection, the autograd.Function, the loop skeleton and the
weight-gradient GEMMs are the fused backend's (`fused.PythonLoops`, `fused.run_layer`).

float32, bfloat16 and float16 inputs; the kernels compute in float32 and store in the input dtype.
Off CUDA the layer refuses to run unless Triton's interpreter is on (`TRITON_INTERPRET=1`, set before
triton is imported), which is how the tests run these kernels on CPU tensors.

Not here: a persistent kernel that keeps W_hh on chip across steps (FlashRNN, arXiv 2412.07752).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from lstmlab.kernels import BackendUnavailable
from lstmlab.kernels.fused import PythonLoops, check_arguments, run_layer

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BLOCK = 256  # elements of (B, H) per program


def interpreting() -> bool:
    """Whether Triton's CPU interpreter is on (it must be set before triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0  # tanh(x) = 2σ(2x) - 1


@triton.jit
def _cell_forward_kernel(gates_ptr, c_prev_ptr, c_ptr, h_ptr, n, hidden, BLOCK: tl.constexpr):
    """gates (B, 4H) pre-activations -> activations in place; c_t, h_t (B, H). n = B·H."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    row = idx // hidden
    gate = row * 4 * hidden + idx % hidden  # offset of gate i of element (b, j); f, g, o follow H apart
    i = tl.sigmoid(tl.load(gates_ptr + gate, mask=mask).to(tl.float32))  # i_t = σ(a_i)
    f = tl.sigmoid(tl.load(gates_ptr + gate + hidden, mask=mask).to(tl.float32))  # f_t = σ(a_f)
    g = _tanh(tl.load(gates_ptr + gate + 2 * hidden, mask=mask).to(tl.float32))  # g_t = tanh(a_g)
    o = tl.sigmoid(tl.load(gates_ptr + gate + 3 * hidden, mask=mask).to(tl.float32))  # o_t = σ(a_o)
    c_prev = tl.load(c_prev_ptr + idx, mask=mask).to(tl.float32)
    c = f * c_prev + i * g  # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h = o * _tanh(c)  # h_t = o_t ⊙ tanh(c_t)
    out = gates_ptr.dtype.element_ty
    tl.store(gates_ptr + gate, i.to(out), mask=mask)
    tl.store(gates_ptr + gate + hidden, f.to(out), mask=mask)
    tl.store(gates_ptr + gate + 2 * hidden, g.to(out), mask=mask)
    tl.store(gates_ptr + gate + 3 * hidden, o.to(out), mask=mask)
    tl.store(c_ptr + idx, c.to(c_ptr.dtype.element_ty), mask=mask)
    tl.store(h_ptr + idx, h.to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _cell_backward_kernel(acts_ptr, c_prev_ptr, c_ptr, dh_ptr, dc_ptr, dgates_ptr, n, hidden, BLOCK: tl.constexpr):
    """acts (B, 4H), c_{t-1}, c_t, dh_t, dc_t (B, H) -> dgates (B, 4H); dc overwritten with dc_{t-1}."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    row = idx // hidden
    gate = row * 4 * hidden + idx % hidden
    i = tl.load(acts_ptr + gate, mask=mask).to(tl.float32)
    f = tl.load(acts_ptr + gate + hidden, mask=mask).to(tl.float32)
    g = tl.load(acts_ptr + gate + 2 * hidden, mask=mask).to(tl.float32)
    o = tl.load(acts_ptr + gate + 3 * hidden, mask=mask).to(tl.float32)
    c_prev = tl.load(c_prev_ptr + idx, mask=mask).to(tl.float32)
    tanh_c = _tanh(tl.load(c_ptr + idx, mask=mask).to(tl.float32))
    dh = tl.load(dh_ptr + idx, mask=mask).to(tl.float32)
    dc = tl.load(dc_ptr + idx, mask=mask).to(tl.float32) + dh * o * (1.0 - tanh_c * tanh_c)
    # ^ dc_t += dh_t ⊙ o_t ⊙ (1 - tanh²(c_t))
    out = dgates_ptr.dtype.element_ty
    tl.store(dgates_ptr + gate, (dc * g * i * (1.0 - i)).to(out), mask=mask)  # da_i = dc_t ⊙ g_t ⊙ i_t(1 - i_t)
    tl.store(dgates_ptr + gate + hidden, (dc * c_prev * f * (1.0 - f)).to(out), mask=mask)
    # ^ da_f = dc_t ⊙ c_{t-1} ⊙ f_t(1 - f_t)
    tl.store(dgates_ptr + gate + 2 * hidden, (dc * i * (1.0 - g * g)).to(out), mask=mask)
    # ^ da_g = dc_t ⊙ i_t ⊙ (1 - g_t²)
    tl.store(dgates_ptr + gate + 3 * hidden, (dh * tanh_c * o * (1.0 - o)).to(out), mask=mask)
    # ^ da_o = dh_t ⊙ tanh(c_t) ⊙ o_t(1 - o_t)
    tl.store(dc_ptr + idx, (dc * f).to(dc_ptr.dtype.element_ty), mask=mask)  # dc_{t-1} = dc_t ⊙ f_t


def cell_forward(gates: Tensor, c_prev: Tensor, c: Tensor, h: Tensor) -> None:
    """Same contract as `fused.torch_cell_forward`, one kernel launch."""
    n = c.numel()
    _cell_forward_kernel[(triton.cdiv(n, BLOCK),)](gates, c_prev, c, h, n, c.shape[-1], BLOCK=BLOCK)


def cell_backward(acts: Tensor, c_prev: Tensor, c: Tensor, dh: Tensor, dc: Tensor, dgates: Tensor) -> None:
    """Same contract as `fused.torch_cell_backward`, one kernel launch."""
    n = c.numel()
    _cell_backward_kernel[(triton.cdiv(n, BLOCK),)](acts, c_prev, c, dh, dc, dgates, n, c.shape[-1], BLOCK=BLOCK)


LOOPS = PythonLoops(cell_forward, cell_backward)


def lstm_layer(
    x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Run one layer over a time-major sequence x (T, B, I) -> (y (T, B, H), h_T, c_T) with Triton cells."""
    check_arguments(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    if x.device.type != "cuda" and not interpreting():
        raise BackendUnavailable(
            f"the triton LSTM backend runs CUDA tensors (got {x.device.type}); "
            "set TRITON_INTERPRET=1 before importing triton to run it on CPU through the interpreter"
        )
    if x.dtype not in DTYPES:
        raise ValueError(f"the triton LSTM backend takes {', '.join(map(str, DTYPES))}, got {x.dtype}")
    return run_layer(LOOPS, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
