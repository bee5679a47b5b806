"""The Triton LSTM layer (CUDA): the fused backend's time loops with the pointwise cell as Triton kernels, for one
member or a pack of K members (`lstm_layer_stacked`).

Per step, forward: one batched cuBLAS GEMM over all members (`a_t += h_{t-1} · W_hhᵀ`, torch.baddbmm_) then
`_cell_forward_kernel` over all K·B rows, which reads the four gate pre-activations and c_{t-1} once and writes
the activations, c_t and h_t. Backward: `_cell_backward_kernel` (saved activations, c, dh_t, dc_t -> da_t,
dc_{t-1}) then one batched GEMM (`dh_{t-1} = da_t · W_hh`). The input projection, the autograd.Function, the
loop skeleton and the weight-gradient GEMMs are the fused backend's (`fused.PythonLoops`, `fused.run_layer`).

float32, bfloat16 and float16 inputs; the kernels compute in float32 and store in the input dtype.
Off CUDA the layer refuses to run unless Triton's interpreter is on (`TRITON_INTERPRET=1`, set before
triton is imported), which is how the tests run these kernels on CPU tensors.

The default where it fits: `PersistentLoops`, a persistent kernel after FlashRNN (arXiv 2412.07752), simplified.
One program per (tile of BLOCK_B batch rows, member) — the member is the grid's second axis — runs the whole
time loop: it loads W_hh once, keeps it on chip across steps, and per step computes `h_{t-1} · W_hhᵀ` with
`tl.dot` (fp32 accumulation), adds the precomputed input projection A_t and applies the cell — no launch and no
trip through memory for W_hh per step. Its backward twin runs `dh_{t-1} = dA_t · W_hh` the same way with
the pointwise backward fused. Batch rows and members are independent, so the programs never synchronise.
The input projection and the weight-gradient GEMMs stay big cuBLAS GEMMs outside (`fused.LSTMSequence`).
It runs where `PersistentLoops.fits(hidden, dtype)`: W_hh padded to BLOCK_H = next power of two ≥ 16 takes at
most 64 KiB in the kernel dtype (H ≤ 64 for float32, bfloat16 and float16 alike: 128² · 4 · 2 B is 128 KiB);
larger H takes the per-step kernels. `lstm_layer(..., persistent=True)` insists (and raises where it does not
fit), `persistent=False` or LSTMLAB_TRITON_PERSISTENT=0 turns it off.

Measured on one H100 (torch 2.11, Triton 3.6; `bash benchmarks/gpu_check.sh OUT layers`, docs/benchmarks.md):
both loop kinds match the float64 reference on CUDA (float32 1e-5, bfloat16 5e-2), and where the persistent
kernel fits it is 4–20× faster than the per-step kernels (forward+backward at the quickstart's (30, 64, 2, 23):
1.7 ms against 7.7 ms, float32). The per-step kernels cost 80–100 µs a forward step in launches and Python,
4–36× cuDNN's nn.LSTM; cuDNN still wins in float32 (the persistent kernel: 1.1–3× its time), the persistent
kernel wins in bfloat16 at the study shapes that fit (0.2–0.6× a bfloat16 nn.LSTM, which re-packs its weights
on every call). The warp counts are guesses, not tuned. Under the
interpreter a bfloat16 `tl.dot` is widened to float32 first (the interpreter multiplies bfloat16's raw bits as
integers).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from lstmlab.kernels import BackendUnavailable
from lstmlab.kernels.fused import (
    Grads,
    PythonLoops,
    carried_grad,
    check_arguments,
    input_grad,
    project_inputs,
    run_layer,
    weight_grads,
)

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BLOCK = 256  # elements of (B, H) per program


def interpreting() -> bool:
    """Whether Triton's CPU interpreter is on (it must be set before triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0  # tanh(x) = 2σ(2x) - 1


@triton.jit
def _cell_forward_kernel(
    gates_ptr, c_prev_ptr, c_ptr, h_ptr, n, batch, hidden, gates_member, c_prev_member, c_member, h_member,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """gates (K, B, 4H) pre-activations -> activations in place; c_t, h_t (K, B, H). n = K·B·H; rows are
    contiguous, members `*_member` elements apart."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    row = idx // hidden  # k·B + b
    member, b, j = (row // batch).to(tl.int64), row % batch, idx % hidden
    gate = member * gates_member + b * 4 * hidden + j  # gate i of element (k, b, j); f, g, o follow H apart
    i = tl.sigmoid(tl.load(gates_ptr + gate, mask=mask).to(tl.float32))  # i_t = σ(a_i)
    f = tl.sigmoid(tl.load(gates_ptr + gate + hidden, mask=mask).to(tl.float32))  # f_t = σ(a_f)
    g = _tanh(tl.load(gates_ptr + gate + 2 * hidden, mask=mask).to(tl.float32))  # g_t = tanh(a_g)
    o = tl.sigmoid(tl.load(gates_ptr + gate + 3 * hidden, mask=mask).to(tl.float32))  # o_t = σ(a_o)
    state = b * hidden + j
    c_prev = tl.load(c_prev_ptr + member * c_prev_member + state, mask=mask).to(tl.float32)
    c = f * c_prev + i * g  # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h = o * _tanh(c)  # h_t = o_t ⊙ tanh(c_t)
    out = gates_ptr.dtype.element_ty
    tl.store(gates_ptr + gate, i.to(out), mask=mask)
    tl.store(gates_ptr + gate + hidden, f.to(out), mask=mask)
    tl.store(gates_ptr + gate + 2 * hidden, g.to(out), mask=mask)
    tl.store(gates_ptr + gate + 3 * hidden, o.to(out), mask=mask)
    tl.store(c_ptr + member * c_member + state, c.to(c_ptr.dtype.element_ty), mask=mask)
    tl.store(h_ptr + member * h_member + state, h.to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _cell_backward_kernel(
    acts_ptr, c_prev_ptr, c_ptr, dh_ptr, dc_ptr, dgates_ptr, n, batch, hidden, acts_member, c_prev_member,
    c_member, dgates_member, BLOCK: tl.constexpr,
):  # fmt: skip
    """acts (K, B, 4H), c_{t-1}, c_t, dh_t, dc_t (K, B, H) -> dgates (K, B, 4H); dc overwritten with dc_{t-1}.
    dh and dc are contiguous (K, B, H); the others' members are `*_member` elements apart."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    row = idx // hidden
    member, b, j = (row // batch).to(tl.int64), row % batch, idx % hidden
    gate = member * acts_member + b * 4 * hidden + j
    dgate = member * dgates_member + b * 4 * hidden + j
    state = b * hidden + j
    i = tl.load(acts_ptr + gate, mask=mask).to(tl.float32)
    f = tl.load(acts_ptr + gate + hidden, mask=mask).to(tl.float32)
    g = tl.load(acts_ptr + gate + 2 * hidden, mask=mask).to(tl.float32)
    o = tl.load(acts_ptr + gate + 3 * hidden, mask=mask).to(tl.float32)
    c_prev = tl.load(c_prev_ptr + member * c_prev_member + state, mask=mask).to(tl.float32)
    tanh_c = _tanh(tl.load(c_ptr + member * c_member + state, mask=mask).to(tl.float32))
    dh = tl.load(dh_ptr + idx, mask=mask).to(tl.float32)
    dc = tl.load(dc_ptr + idx, mask=mask).to(tl.float32) + dh * o * (1.0 - tanh_c * tanh_c)
    # ^ dc_t += dh_t ⊙ o_t ⊙ (1 - tanh²(c_t))
    out = dgates_ptr.dtype.element_ty
    tl.store(dgates_ptr + dgate, (dc * g * i * (1.0 - i)).to(out), mask=mask)  # da_i = dc_t ⊙ g_t ⊙ i_t(1 - i_t)
    tl.store(dgates_ptr + dgate + hidden, (dc * c_prev * f * (1.0 - f)).to(out), mask=mask)
    # ^ da_f = dc_t ⊙ c_{t-1} ⊙ f_t(1 - f_t)
    tl.store(dgates_ptr + dgate + 2 * hidden, (dc * i * (1.0 - g * g)).to(out), mask=mask)
    # ^ da_g = dc_t ⊙ i_t ⊙ (1 - g_t²)
    tl.store(dgates_ptr + dgate + 3 * hidden, (dh * tanh_c * o * (1.0 - o)).to(out), mask=mask)
    # ^ da_o = dh_t ⊙ tanh(c_t) ⊙ o_t(1 - o_t)
    tl.store(dc_ptr + idx, (dc * f).to(dc_ptr.dtype.element_ty), mask=mask)  # dc_{t-1} = dc_t ⊙ f_t


def _rows(t: Tensor) -> None:
    """The cells' layout: (K, B, ·) with contiguous rows of a member, any member stride."""
    if t.dim() != 3 or t.stride(2) != 1 or t.stride(1) != t.shape[2]:
        raise ValueError(f"the Triton LSTM cells take (K, B, ·) tensors with contiguous rows, got {tuple(t.shape)}")


def cell_forward(gates: Tensor, c_prev: Tensor, c: Tensor, h: Tensor) -> None:
    """Same contract as `fused.torch_cell_forward` on (K, B, ·) tensors, one kernel launch over all K·B rows."""
    for t in (gates, c_prev, c, h):
        _rows(t)
    members, batch, hidden = c.shape
    n = members * batch * hidden
    _cell_forward_kernel[(triton.cdiv(n, BLOCK),)](
        gates, c_prev, c, h, n, batch, hidden, gates.stride(0), c_prev.stride(0), c.stride(0), h.stride(0),
        BLOCK=BLOCK,
    )  # fmt: skip


def cell_backward(acts: Tensor, c_prev: Tensor, c: Tensor, dh: Tensor, dc: Tensor, dgates: Tensor) -> None:
    """Same contract as `fused.torch_cell_backward` on (K, B, ·) tensors (dh, dc contiguous), one kernel launch."""
    for t in (acts, c_prev, c, dgates):
        _rows(t)
    if not (dh.is_contiguous() and dc.is_contiguous()):
        raise ValueError("dh and dc must be contiguous")
    members, batch, hidden = c.shape
    n = members * batch * hidden
    _cell_backward_kernel[(triton.cdiv(n, BLOCK),)](
        acts, c_prev, c, dh, dc, dgates, n, batch, hidden, acts.stride(0), c_prev.stride(0), c.stride(0),
        dgates.stride(0), BLOCK=BLOCK,
    )  # fmt: skip


LOOPS = PythonLoops(cell_forward, cell_backward)


# ---------------------------------------------------------------------------------------------------------------------
# The persistent loops: one program per (batch tile, member) runs every step with W_hh on chip (interpreter-verified
# only).

ON_CHIP_BYTES = 64 * 1024  # the budget for W_hh (4·BLOCK_H × BLOCK_H in the kernel dtype) per program
BLOCK_B = 16  # batch rows per program; tl.dot needs every dimension ≥ 16


@triton.jit
def _gate_weights(w_hh_ptr, hidden, BLOCK_H: tl.constexpr, TRANSPOSE: tl.constexpr):
    """The four (BLOCK_H, BLOCK_H) blocks W_g = w_hh[gH : (g+1)H, :] of W_hh (4H, H), zero-padded;
    TRANSPOSE gives W_gᵀ (element [k, n] = W_g[n, k]), the right operand of h · W_gᵀ."""
    r = tl.arange(0, BLOCK_H)[:, None]
    s = tl.arange(0, BLOCK_H)[None, :]
    offset = s * hidden + r if TRANSPOSE else r * hidden + s
    mask = (r < hidden) & (s < hidden)
    block = hidden * hidden
    w_i = tl.load(w_hh_ptr + offset, mask=mask, other=0.0)
    w_f = tl.load(w_hh_ptr + block + offset, mask=mask, other=0.0)
    w_g = tl.load(w_hh_ptr + 2 * block + offset, mask=mask, other=0.0)
    w_o = tl.load(w_hh_ptr + 3 * block + offset, mask=mask, other=0.0)
    return w_i, w_f, w_g, w_o


@triton.jit
def _dot(a, w, UPCAST: tl.constexpr):
    """a · w with float32 accumulation. UPCAST (bfloat16 under the interpreter only, whose tl.dot multiplies
    bfloat16's raw uint16 bits) widens both operands to float32 first: exact, so the product is the same."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), w.to(tl.float32), input_precision="ieee")
    return tl.dot(a, w, input_precision="ieee", out_dtype=tl.float32)


@triton.jit
def _persistent_forward_kernel(
    gates_ptr, h0_ptr, c0_ptr, w_hh_ptr, y_ptr, cs_ptr, steps, batch, hidden,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """gates (K, T, B, 4H) = A = X·W_ihᵀ + b in, the activations out; y, cs (K, T, B, H) = h_t, c_t; h0, c0
    (K, B, H); w_hh (K, 4H, H). Program (p, k) owns member k's batch rows [p·BLOCK_B, (p+1)·BLOCK_B) for every step."""
    member = tl.program_id(1).to(tl.int64)  # pointers move to member k's tensors (64-bit: K·T·B·4H may pass 2³¹)
    gates_ptr += member * steps * batch * 4 * hidden
    y_ptr += member * steps * batch * hidden
    cs_ptr += member * steps * batch * hidden
    h0_ptr += member * batch * hidden
    c0_ptr += member * batch * hidden
    w_hh_ptr += member * 4 * hidden * hidden
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)[:, None]  # batch row b
    cols = tl.arange(0, BLOCK_H)[None, :]  # hidden unit j
    mask = (rows < batch) & (cols < hidden)
    state = rows * hidden + cols  # (b, j) in a (B, H) tensor
    gate = rows * 4 * hidden + cols  # gate i of (b, j) in a (B, 4H) tensor; f, g, o follow H apart
    w_i, w_f, w_g, w_o = _gate_weights(w_hh_ptr, hidden, BLOCK_H, True)  # W_hhᵀ, loaded once for all steps
    h = tl.load(h0_ptr + state, mask=mask, other=0.0)  # h_0 in the input dtype, as the next dot reads it
    c = tl.load(c0_ptr + state, mask=mask, other=0.0).to(tl.float32)  # c_0, kept in float32 across steps
    a_ptrs, y_ptrs, c_ptrs = gates_ptr + gate, y_ptr + state, cs_ptr + state
    out = gates_ptr.dtype.element_ty
    for _ in range(steps):
        # a_t = A_t + h_{t-1} · W_hhᵀ, one gate block at a time (padded lanes: A = 0, h = 0, W = 0)
        i = tl.sigmoid(tl.load(a_ptrs, mask=mask, other=0.0).to(tl.float32) + _dot(h, w_i, UPCAST))  # i_t = σ(a_i)
        f = tl.sigmoid(tl.load(a_ptrs + hidden, mask=mask, other=0.0).to(tl.float32) + _dot(h, w_f, UPCAST))
        # ^ f_t = σ(a_f)
        g = _tanh(tl.load(a_ptrs + 2 * hidden, mask=mask, other=0.0).to(tl.float32) + _dot(h, w_g, UPCAST))
        # ^ g_t = tanh(a_g)
        o = tl.sigmoid(tl.load(a_ptrs + 3 * hidden, mask=mask, other=0.0).to(tl.float32) + _dot(h, w_o, UPCAST))
        # ^ o_t = σ(a_o)
        c = f * c + i * g  # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h = (o * _tanh(c)).to(out)  # h_t = o_t ⊙ tanh(c_t), rounded once: the value stored is the one carried
        tl.store(a_ptrs, i.to(out), mask=mask)
        tl.store(a_ptrs + hidden, f.to(out), mask=mask)
        tl.store(a_ptrs + 2 * hidden, g.to(out), mask=mask)
        tl.store(a_ptrs + 3 * hidden, o.to(out), mask=mask)
        tl.store(c_ptrs, c.to(out), mask=mask)
        tl.store(y_ptrs, h, mask=mask)
        a_ptrs += batch * 4 * hidden  # next step; pointer arithmetic, so T·B·4H may pass 2³¹
        y_ptrs += batch * hidden
        c_ptrs += batch * hidden


@triton.jit
def _persistent_backward_kernel(
    acts_ptr, cs_ptr, c0_ptr, w_hh_ptr, dy_ptr, dh_ptr, dc_ptr, dgates_ptr, steps, batch, hidden,
    HAS_DY: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """acts_ptr, cs_ptr, dy_ptr, dgates_ptr point at step T-1 of member 0 in their (K, T, B, ·) tensors; the loop
    walks back. dh, dc (K, B, H): dL/dh_T, dL/dc_T in, dL/dh_0, dL/dc_0 out; writes dgates (K, T, B, 4H) = dL/da_t.
    Program (p, k): member k's batch rows [p·BLOCK_B, (p+1)·BLOCK_B)."""
    member = tl.program_id(1).to(tl.int64)
    acts_ptr += member * steps * batch * 4 * hidden
    dgates_ptr += member * steps * batch * 4 * hidden
    cs_ptr += member * steps * batch * hidden
    dy_ptr += member * steps * batch * hidden
    dh_ptr += member * batch * hidden
    dc_ptr += member * batch * hidden
    c0_ptr += member * batch * hidden
    w_hh_ptr += member * 4 * hidden * hidden
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)[:, None]
    cols = tl.arange(0, BLOCK_H)[None, :]
    mask = (rows < batch) & (cols < hidden)
    state = rows * hidden + cols
    gate = rows * 4 * hidden + cols
    w_i, w_f, w_g, w_o = _gate_weights(w_hh_ptr, hidden, BLOCK_H, False)  # W_hh, loaded once for all steps
    dh = tl.load(dh_ptr + state, mask=mask, other=0.0).to(tl.float32)
    dc = tl.load(dc_ptr + state, mask=mask, other=0.0).to(tl.float32)
    c0 = tl.load(c0_ptr + state, mask=mask, other=0.0).to(tl.float32)
    a_ptrs, da_ptrs, dy_ptrs, c_ptrs = acts_ptr + gate, dgates_ptr + gate, dy_ptr + state, cs_ptr + state
    c = tl.load(c_ptrs, mask=mask, other=0.0).to(tl.float32)  # c_{T-1}; later steps reuse the last c_{t-1}
    out = dgates_ptr.dtype.element_ty
    for s in range(steps):
        t = steps - 1 - s
        if HAS_DY:
            dh += tl.load(dy_ptrs, mask=mask, other=0.0).to(tl.float32)  # dh_t = dy_t + da_{t+1} · W_hh
        has_prev = tl.full((BLOCK_B, BLOCK_H), t, tl.int32) > 0  # c_{t-1} from cs for t > 0, else c_0
        c_prev = tl.where(
            has_prev, tl.load(c_ptrs - batch * hidden, mask=mask & has_prev, other=0.0).to(tl.float32), c0
        )
        i = tl.load(a_ptrs, mask=mask, other=0.0).to(tl.float32)
        f = tl.load(a_ptrs + hidden, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(a_ptrs + 2 * hidden, mask=mask, other=0.0).to(tl.float32)
        o = tl.load(a_ptrs + 3 * hidden, mask=mask, other=0.0).to(tl.float32)
        tanh_c = _tanh(c)
        dc += dh * o * (1.0 - tanh_c * tanh_c)  # dc_t += dh_t ⊙ o_t ⊙ (1 - tanh²(c_t))
        da_i = (dc * g * i * (1.0 - i)).to(out)  # da_i = dc_t ⊙ g_t ⊙ i_t(1 - i_t)
        da_f = (dc * c_prev * f * (1.0 - f)).to(out)  # da_f = dc_t ⊙ c_{t-1} ⊙ f_t(1 - f_t)
        da_g = (dc * i * (1.0 - g * g)).to(out)  # da_g = dc_t ⊙ i_t ⊙ (1 - g_t²)
        da_o = (dh * tanh_c * o * (1.0 - o)).to(out)  # da_o = dh_t ⊙ tanh(c_t) ⊙ o_t(1 - o_t)
        tl.store(da_ptrs, da_i, mask=mask)
        tl.store(da_ptrs + hidden, da_f, mask=mask)
        tl.store(da_ptrs + 2 * hidden, da_g, mask=mask)
        tl.store(da_ptrs + 3 * hidden, da_o, mask=mask)
        dc = dc * f  # dc_{t-1} = dc_t ⊙ f_t
        dh = _dot(da_i, w_i, UPCAST) + _dot(da_f, w_f, UPCAST) + _dot(da_g, w_g, UPCAST) + _dot(da_o, w_o, UPCAST)
        # ^ dh_{t-1} = da_t · W_hh = Σ_g da_g · W_g   (B, H)·(H, H) per gate
        c = c_prev
        a_ptrs -= batch * 4 * hidden
        da_ptrs -= batch * 4 * hidden
        dy_ptrs -= batch * hidden
        c_ptrs -= batch * hidden
    tl.store(dh_ptr + state, dh.to(dh_ptr.dtype.element_ty), mask=mask)
    tl.store(dc_ptr + state, dc.to(dc_ptr.dtype.element_ty), mask=mask)


def _block_hidden(hidden: int) -> int:
    return max(16, triton.next_power_of_2(hidden))


class PersistentLoops:
    """`fused.Loops` as two persistent Triton kernels, one program per (BLOCK_B batch rows, member) for all T
    steps. The input projection and dX stay batched GEMMs outside."""

    @staticmethod
    def fits(hidden: int, dtype: torch.dtype) -> bool:
        """W_hh, padded to (4·BLOCK_H, BLOCK_H) with BLOCK_H = max(16, next power of two ≥ H), within
        ON_CHIP_BYTES in `dtype`: H ≤ 64 for float32, bfloat16 and float16."""
        block = _block_hidden(hidden)
        return dtype in DTYPES and 4 * block * block * dtype.itemsize <= ON_CHIP_BYTES

    @staticmethod
    def _launch(members: int, batch: int, hidden: int, dtype: torch.dtype) -> dict:
        block = _block_hidden(hidden)
        return dict(
            grid=(triton.cdiv(batch, BLOCK_B), members),
            meta=dict(
                BLOCK_B=BLOCK_B,
                BLOCK_H=block,
                UPCAST=interpreting() and dtype == torch.bfloat16,
                num_warps=4 if block <= 32 else 8,  # a guess, not tuned
            ),
        )

    def forward(self, x, h0, c0, w_ih, w_hh, bias, y, save=True):  # see fused.Loops; always saves
        members, steps, batch, hidden = y.shape
        gates = project_inputs(x, w_ih, bias)  # (K, T, B, 4H)
        cs = torch.empty_like(y)
        launch = self._launch(members, batch, hidden, y.dtype)
        _persistent_forward_kernel[launch["grid"]](gates, h0, c0, w_hh, y, cs, steps, batch, hidden, **launch["meta"])
        return gates, cs

    def backward(self, acts, cs, y, x, h0, c0, w_ih, w_hh, dy, dh, dc, need_dx, need_weights):  # see fused.Loops
        members, steps, batch, hidden = cs.shape
        dh, dc = carried_grad(c0, dh), carried_grad(c0, dc)
        dgates = torch.empty_like(acts)
        launch = self._launch(members, batch, hidden, cs.dtype)
        last = steps - 1  # the kernel walks back from step T-1; the host computes that offset in 64 bits
        _persistent_backward_kernel[launch["grid"]](
            acts[:, last], cs[:, last], c0, w_hh, dh if dy is None else dy[:, last], dh, dc, dgates[:, last],
            steps, batch, hidden, HAS_DY=dy is not None, **launch["meta"],
        )  # fmt: skip
        weights = weight_grads(dgates, x, h0, y) if need_weights else (None, None, None)
        return Grads(input_grad(dgates, w_ih) if need_dx else None, dh, dc, *weights)


PERSISTENT_LOOPS = PersistentLoops()


def persistent_turned_off() -> bool:
    """Whether LSTMLAB_TRITON_PERSISTENT=0 asks for the per-step loops everywhere."""
    return os.environ.get("LSTMLAB_TRITON_PERSISTENT", "").strip() == "0"


def choose_loops(hidden: int, dtype: torch.dtype, persistent: bool | None = None) -> PythonLoops | PersistentLoops:
    """The persistent loops where they fit, else the per-step ones (`persistent=None`, the default; off with
    LSTMLAB_TRITON_PERSISTENT=0); `persistent=True` raises where they do not fit, `persistent=False` never
    takes them."""
    if persistent is False or (persistent is None and persistent_turned_off()):
        return LOOPS
    if PersistentLoops.fits(hidden, dtype):
        return PERSISTENT_LOOPS
    if persistent:
        raise ValueError(
            f"the persistent Triton LSTM kernel keeps W_hh on chip only up to {ON_CHIP_BYTES // 1024} KiB "
            f"(H ≤ 64); H={hidden} in {dtype} does not fit"
        )
    return LOOPS


def _loops_for(x: Tensor, w_hh: Tensor, persistent: bool | None) -> PythonLoops | PersistentLoops:
    """The loops for this call, after the device and dtype checks."""
    if x.device.type != "cuda" and not interpreting():
        raise BackendUnavailable(
            f"the triton LSTM backend runs CUDA tensors (got {x.device.type}); "
            "set TRITON_INTERPRET=1 before importing triton to run it on CPU through the interpreter"
        )
    if x.dtype not in DTYPES:
        raise ValueError(f"the triton LSTM backend takes {', '.join(map(str, DTYPES))}, got {x.dtype}")
    return choose_loops(w_hh.shape[-1], x.dtype, persistent)


def lstm_layer_stacked(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    *,
    persistent: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """K independent members at once: x (K, T, B, I) -> (y (K, T, B, H), h_T, c_T (K, B, H)), all members' cells
    in one persistent launch with the member as the grid's second axis where H fits (else one launch per step);
    `persistent` as in `choose_loops`."""
    check_arguments(x, h0, c0, w_ih, w_hh, b_ih, b_hh, stacked=True)
    return run_layer(_loops_for(x, w_hh, persistent), x, h0, c0, w_ih, w_hh, b_ih, b_hh)


def lstm_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    *,
    persistent: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run one layer over a time-major sequence x (T, B, I) -> (y (T, B, H), h_T, c_T) with Triton kernels: the
    stacked layer with K = 1.

    The persistent loops run where H fits on chip (`PersistentLoops.fits`), the per-step ones elsewhere;
    `persistent=True` insists, `persistent=False` (or LSTMLAB_TRITON_PERSISTENT=0) turns them off."""
    check_arguments(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    return run_layer(_loops_for(x, w_hh, persistent), x, h0, c0, w_ih, w_hh, b_ih, b_hh)
