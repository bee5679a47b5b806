"""The fused LSTM layer: GEMM-shaped forward and a hand-written backward through time, for one member or a
pack of K independent members at once.

Same contract as `reference.lstm_layer` (see `lstmlab.kernels`), and the same numbers to rounding.
`lstm_layer_stacked` takes every tensor with a leading member axis; `lstm_layer` is its K = 1 case (the same
code: a 3-D x is one member). Where the reference runs two matmuls and ten pointwise ops per step under
autograd, this layer runs, per member k:

forward
    for t in 0..T-1:
        a_t = b + x_t · W_ihᵀ + h_{t-1} · W_hhᵀ        (B, 4H)
        i, f, g, o, c_t, h_t = cell(a_t)              a_t becomes the activations the backward needs
backward (no per-step autograd graph: the saved activations and c are all it needs)
    for t in T-1..0:
        da_t, dc_{t-1} = cell'(…)
        dh_{t-1} = da_t · W_hh,   dx_t = da_t · W_ih
    dW_ih = Σ_t da_tᵀ · x_t,  dW_hh = Σ_t da_tᵀ · h_{t-1},  db = Σ_{t,b} da_t

The time loops are pluggable (`Loops`): on CPU they run in a small C++ extension built once and cached
(`_cpu_loop.cpp`, see `cpp_loops` and `lstmlab.kernels.prepare`), otherwise — on CUDA, or where no compiler
is found — in Python over the torch-op cells below, all members per step in one batched GEMM.
`triton_lstm.py` plugs its Triton cells into the same `PythonLoops`.

The C++ loops have two schedules (`choose_schedule`). "sequences": members and batch rows never mix through
time, so each thread runs the whole time loops of its share of (member, batch slice) units, with the step
GEMMs (input projection and dx included) in a register-blocked kernel, the cell fused into the same pass and
the weight gradients summed as the loop goes — no per-step synchronisation or library call, and dL/da never
stored whole. "steps": the input projection as one batched GEMM, then per step and member one ATen GEMM
(MKL, threaded) and the cells threaded over rows, and the weight gradients as batched GEMMs over the stored
dL/da (`weight_grads`); for W_hh too large for the small kernel's cache blocking.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from lstmlab.kernels.machine import cpu_model

LOOP_CHOICES = ("auto", "cpp", "python")
SCHEDULES = ("auto", "sequences", "steps")


# ---------------------------------------------------------------------------------------------------------------------
# Pointwise cells on plain torch ops (any device; leading dimensions (K, B) or (B,)). The C++ and Triton cells
# compute the same lines.


def torch_cell_forward(gates: Tensor, c_prev: Tensor, c: Tensor, h: Tensor) -> None:
    """gates (..., 4H) pre-activations, overwritten in place with the activations; writes c_t and h_t (..., H)."""
    hidden = c.shape[-1]
    gates[..., : 2 * hidden].sigmoid_()  # i_t = σ(a_i), f_t = σ(a_f)
    gates[..., 2 * hidden : 3 * hidden].tanh_()  # g_t = tanh(a_g)
    gates[..., 3 * hidden :].sigmoid_()  # o_t = σ(a_o)
    i, f, g, o = gates.chunk(4, dim=-1)
    torch.mul(f, c_prev, out=c)  # c_t = f_t ⊙ c_{t-1}
    c.addcmul_(i, g)  #              + i_t ⊙ g_t
    torch.tanh(c, out=h)
    h.mul_(o)  # h_t = o_t ⊙ tanh(c_t)


def torch_cell_backward(acts: Tensor, c_prev: Tensor, c: Tensor, dh: Tensor, dc: Tensor, dgates: Tensor) -> None:
    """acts (..., 4H) saved activations; dh = dL/dh_t (all paths); dc = dL/dc_t through step t+1, overwritten
    with dL/dc_{t-1}. Writes dgates (..., 4H) = dL/da_t."""
    i, f, g, o = acts.chunk(4, dim=-1)
    di, df, dg, do = dgates.chunk(4, dim=-1)
    tanh_c = torch.tanh(c)
    dc.addcmul_(dh * o, 1 - tanh_c * tanh_c)  # dc_t += dh_t ⊙ o_t ⊙ (1 - tanh²(c_t))
    torch.mul(dh, tanh_c, out=do).mul_(o * (1 - o))  # da_o = dh_t ⊙ tanh(c_t) ⊙ o_t(1 - o_t)
    torch.mul(dc, g, out=di).mul_(i * (1 - i))  # da_i = dc_t ⊙ g_t ⊙ i_t(1 - i_t)
    torch.mul(dc, c_prev, out=df).mul_(f * (1 - f))  # da_f = dc_t ⊙ c_{t-1} ⊙ f_t(1 - f_t)
    torch.mul(dc, i, out=dg).mul_(1 - g * g)  # da_g = dc_t ⊙ i_t ⊙ (1 - g_t²)
    dc.mul_(f)  # dc_{t-1} = dc_t ⊙ f_t


# ---------------------------------------------------------------------------------------------------------------------
# The time loops. Every tensor has the member axis first: x (K, T, B, I), h0, c0 (K, B, H), w_ih (K, 4H, I),
# w_hh (K, 4H, H), bias = b_ih + b_hh (K, 4H) or None, y (K, T, B, H); all contiguous.


class Grads(NamedTuple):
    """The gradients of one layer call, member axis first; None where not asked for."""

    x: Tensor | None
    h0: Tensor
    c0: Tensor
    w_ih: Tensor | None
    w_hh: Tensor | None
    bias: Tensor | None  # db_ih = db_hh


class Loops(Protocol):
    """The sequential part of the layer (and whatever a backend fuses into it)."""

    def forward(self, x, h0, c0, w_ih, w_hh, bias, y, save: bool) -> tuple[Tensor | None, Tensor]:
        """Writes y = h_t for every t. Returns (acts, cs): the activations (K, T, B, 4H) the backward needs
        (None when not `save`) and the cell states (K, S, B, H), c_t at [:, t % S] (S = T when `save`)."""

    def backward(
        self, acts, cs, y, x, h0, c0, w_ih, w_hh, dy: Tensor | None, dh: Tensor | None, dc: Tensor | None,
        need_dx: bool, need_weights: bool,
    ) -> Grads:  # fmt: skip
        """dy (K, T, B, H), dh, dc (K, B, H): the gradients reaching y, h_T, c_T (None: zero). `need_dx` and
        `need_weights` say which of Grads' optional members are wanted."""


def project_inputs(x: Tensor, w_ih: Tensor, bias: Tensor | None) -> Tensor:
    """A = X · W_ihᵀ + b for all T·B rows of every member, one batched GEMM: (K, T, B, I) -> (K, T, B, 4H)."""
    members, steps, batch, inputs = x.shape
    x3 = x.reshape(members, steps * batch, inputs)
    gates = torch.bmm(x3, w_ih.transpose(1, 2)) if bias is None else torch.baddbmm(bias.unsqueeze(1), x3, w_ih.mT)
    return gates.view(members, steps, batch, -1)


def carried_grad(c0: Tensor, grad: Tensor | None) -> Tensor:
    """A fresh (K, B, H) buffer for the gradient carried back through time: dL/dh_T (or dL/dc_T), zeros if None."""
    return torch.zeros_like(c0) if grad is None else grad.clone()


def input_grad(dgates: Tensor, w_ih: Tensor) -> Tensor:
    """dX = dA · W_ih for all T·B rows of every member, one batched GEMM: (K, T, B, 4H) -> (K, T, B, I)."""
    members, steps, batch, _ = dgates.shape
    return torch.bmm(dgates.view(members, steps * batch, -1), w_ih).view(members, steps, batch, -1)


def weight_grads(dgates: Tensor, x: Tensor, h0: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(dW_ih, dW_hh, db) from dL/da (K, T, B, 4H) over all T·B rows of every member: batched GEMMs and a sum."""
    members, steps, batch, inputs = x.shape
    da = dgates.view(members, steps * batch, -1)
    dw_ih = torch.bmm(da.mT, x.reshape(members, steps * batch, inputs))  # dW_ih = dAᵀ · X
    dw_hh = torch.bmm(dgates[:, 0].mT, h0)  # dW_hh = da_0ᵀ · h_0
    if steps > 1:  #                             + Σ_{t≥1} da_tᵀ · h_{t-1}, one GEMM over (T-1)·B rows
        dw_hh.baddbmm_(da[:, batch:].mT, y[:, :-1].reshape(members, (steps - 1) * batch, -1))
    return dw_ih, dw_hh, da.sum(1)  # db = Σ_{t,b} da


CellForward = Callable[[Tensor, Tensor, Tensor, Tensor], None]
CellBackward = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], None]


class PythonLoops:
    """The time loops in Python: per step one batched GEMM over all members and one `cell_forward` (or
    `cell_backward`) call over all K·B rows."""

    def __init__(
        self, cell_forward: CellForward = torch_cell_forward, cell_backward: CellBackward = torch_cell_backward
    ):
        self.cell_forward = cell_forward
        self.cell_backward = cell_backward

    def forward(self, x, h0, c0, w_ih, w_hh, bias, y, save=True):  # see Loops; always saves
        gates = project_inputs(x, w_ih, bias)  # (K, T, B, 4H)
        cs = torch.empty_like(y)
        w_hh_t = w_hh.transpose(1, 2)  # (K, H, 4H)
        h_prev, c_prev = h0, c0
        for t in range(x.shape[1]):
            a_t, h_t, c_t = gates[:, t], y[:, t], cs[:, t]
            a_t.baddbmm_(h_prev, w_hh_t)  # a_t = (W_ih x_t + b) + h_{t-1} · W_hhᵀ
            self.cell_forward(a_t, c_prev, c_t, h_t)
            h_prev, c_prev = h_t, c_t
        return gates, cs

    def backward(self, acts, cs, y, x, h0, c0, w_ih, w_hh, dy, dh, dc, need_dx, need_weights):  # see Loops
        dh, dc = carried_grad(c0, dh), carried_grad(c0, dc)
        dgates = torch.empty_like(acts)
        for t in range(acts.shape[1] - 1, -1, -1):
            if dy is not None:
                dh.add_(dy[:, t])  # dh_t = dy_t + da_{t+1} · W_hh
            c_prev = cs[:, t - 1] if t > 0 else c0
            self.cell_backward(acts[:, t], c_prev, cs[:, t], dh, dc, dgates[:, t])
            torch.bmm(dgates[:, t], w_hh, out=dh)  # dh_{t-1} = da_t · W_hh   (K, B, 4H)·(K, 4H, H)
        weights = weight_grads(dgates, x, h0, y) if need_weights else (None, None, None)
        return Grads(input_grad(dgates, w_ih) if need_dx else None, dh, dc, *weights)


class CppLoops:
    """The time loops in C++ (`_cpu_loop.cpp`): CPU, float32 and float64."""

    def __init__(self, schedule: str = "auto"):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
        self.schedule = schedule

    def _schedule(self, w_ih: Tensor, backward: bool) -> str:
        if self.schedule != "auto":
            return self.schedule
        return choose_schedule(w_ih.shape[-1], w_ih.shape[-2] // 4, w_ih.element_size(), backward)

    def forward(self, x, h0, c0, w_ih, w_hh, bias, y, save=True):  # see Loops
        schedule = self._schedule(w_ih, backward=False)
        acts, cs = torch.ops.lstmlab_cpu.forward(x, h0, c0, w_ih, w_hh, bias, y, schedule, save)
        return (acts if save else None), cs

    def backward(self, acts, cs, y, x, h0, c0, w_ih, w_hh, dy, dh, dc, need_dx, need_weights):  # see Loops
        schedule = self._schedule(w_ih, backward=True)
        dgates, dx, dh0, dc0, *weights = torch.ops.lstmlab_cpu.backward(
            acts, cs, y, x, h0, c0, w_ih, w_hh, dy, dh, dc, need_dx, need_weights, schedule
        )
        if dgates is not None and need_weights:  # left to batched GEMMs (the steps schedule, or a small batch)
            weights = weight_grads(dgates, x, h0, y)
        return Grads(dx, dh0, dc0, *weights)


# What one core's L2 holds of the sequences schedule's per-member working set (measured, docs/benchmarks.md):
# W_ih and W_hh packed, and in the backward also their gradients' running sums.
SEQUENCES_MAX_BYTES = 3 << 20


def choose_schedule(inputs: int, hidden: int, itemsize: int, backward: bool) -> str:
    """The C++ loops' schedule for one direction of a layer: "sequences" (whole time loops per thread, the built-in
    register-blocked GEMM) while a member's working set fits SEQUENCES_MAX_BYTES, else "steps" (library GEMMs,
    which block for cache themselves). The forward's working set is W_ih and W_hh, 4H·(I+H) values; the backward's
    twice that."""
    weights = 4 * hidden * (inputs + hidden) * itemsize
    return "sequences" if weights * (2 if backward else 1) <= SEQUENCES_MAX_BYTES else "steps"


# ---------------------------------------------------------------------------------------------------------------------
# Building the C++ loops, once per machine (cached on disk), loading them once per process.

_CPP_SOURCE = Path(__file__).with_name("_cpu_loop.cpp")
_CPP_FLAGS = ["-O3", "-fopenmp", "-ffast-math", "-mprefer-vector-width=512"]
_cpp_state: dict[str, object] = {}  # "loops": CppLoops | None, "error": str


def _cache_dir() -> Path:
    root = os.environ.get("LSTMLAB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lstmlab"
    )
    return Path(root)


def _cpu_flags() -> list[str]:
    """-march=native only where the build folder is keyed by this CPU's model (below)."""
    return ["-march=native"] if platform.machine() in ("x86_64", "AMD64", "aarch64") else []


def _say(message: str) -> None:
    """One plain line on stderr: a notice for the person running lstmlab, not a warning with a file:line."""
    print(f"lstmlab: {message}", file=sys.stderr, flush=True)


def _compiler() -> str | None:
    """The C++ compiler torch.utils.cpp_extension would call (CXX, else c++), if it is on PATH."""
    return shutil.which(os.environ.get("CXX", "c++"))


def _build_dir() -> Path:
    """The cache folder of this source, flags, torch and CPU: a change to any of them builds anew."""
    flags = _CPP_FLAGS + _cpu_flags()
    key = hashlib.sha256(
        b"\0".join([_CPP_SOURCE.read_bytes(), " ".join(flags).encode(), torch.__version__.encode(),
                    cpu_model().encode()])
    ).hexdigest()[:16]  # fmt: skip
    return _cache_dir() / f"cpu_loop-{key}"


def _build_or_load(build_dir: Path) -> None:
    """Load the cached library, building it first if needed. A file lock makes a second process that starts
    at the same time wait for the first one's build and then load it, instead of building over it."""
    from filelock import FileLock

    library = build_dir / "lstmlab_cpu_loop.so"
    build_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(build_dir / "build.lock")):
        if not library.exists():
            from torch.utils.cpp_extension import load

            _say(f"building the C++ LSTM time loop (once per machine, about 30 s); cached in {build_dir}")
            load(
                name="lstmlab_cpu_loop",
                sources=[str(_CPP_SOURCE)],
                extra_cflags=_CPP_FLAGS + _cpu_flags(),
                extra_ldflags=["-fopenmp"],
                build_directory=str(build_dir),
                is_python_module=False,
            )
            return
    torch.ops.load_library(str(library))


def cpp_loops() -> CppLoops | None:
    """The C++ loops, built on first use; None (said once, in one line) when they cannot be built here."""
    if "loops" in _cpp_state:
        return _cpp_state["loops"]  # type: ignore[return-value]
    if os.environ.get("LSTMLAB_NO_CPP"):
        _cpp_state.update(loops=None, error="disabled by LSTMLAB_NO_CPP")
        return None
    build_dir = _build_dir()
    if not (build_dir / "lstmlab_cpu_loop.so").exists() and _compiler() is None:
        _cpp_state.update(loops=None, error=f"no C++ compiler ({os.environ.get('CXX', 'c++')}) on PATH")
        _say(
            "no C++ compiler found, so the fused LSTM runs its Python time loop (several times slower at small "
            "sizes); install one (e.g. `apt install g++`) and the fast C++ loop is built on the next run"
        )
        return None
    try:
        _build_or_load(build_dir)
        _cpp_state.update(loops=CPP_LOOPS["auto"], error="")
    except Exception as error:  # no headers, a failed build: the Python loops still work
        first_line = (str(error).strip().splitlines() or [""])[0]
        _cpp_state.update(loops=None, error=f"{type(error).__name__}: {str(error).strip()}")
        _say(
            f"the C++ LSTM time loop did not build ({type(error).__name__}: {first_line}); the fused LSTM runs "
            "its Python time loop instead (slower at small sizes)"
        )
    return _cpp_state["loops"]  # type: ignore[return-value]


def choose_loops(device: torch.device, dtype: torch.dtype, loop: str = "auto", schedule: str = "auto") -> Loops:
    """`cpp` (CPU only), `python`, or `auto`: C++ on CPU for float32/float64 when it builds, else Python.
    `schedule` picks the C++ loops' schedule ("auto", "sequences", "steps"; see `choose_schedule`)."""
    if loop not in LOOP_CHOICES:
        raise ValueError(f"unknown loop {loop!r}; valid loops: {', '.join(LOOP_CHOICES)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
    cpp_possible = device.type == "cpu" and dtype in (torch.float32, torch.float64)
    if loop == "cpp":
        if not cpp_possible:
            raise ValueError(f"the C++ loop runs float32/float64 CPU tensors, not {dtype} on {device}")
        if cpp_loops() is None:
            raise RuntimeError(f"the C++ LSTM time loop is unavailable: {_cpp_state['error']}")
        return CPP_LOOPS[schedule]
    if loop == "auto" and cpp_possible and cpp_loops() is not None:
        return CPP_LOOPS[schedule]
    return PYTHON_LOOPS


PYTHON_LOOPS = PythonLoops()
CPP_LOOPS = {schedule: CppLoops(schedule) for schedule in SCHEDULES}  # usable once `cpp_loops()` has loaded them


def prepare(device: torch.device, dtype: torch.dtype) -> str:
    """Build or load what the fused layer will run on (device, dtype) now, so that a first call does not pay
    for it; returns which time loop that is ("cpp" or "python")."""
    return "cpp" if isinstance(choose_loops(device, dtype), CppLoops) else "python"


# ---------------------------------------------------------------------------------------------------------------------
# The layer: forward and backward through time around pluggable loops.


def _as_members(*tensors: Tensor | None) -> list[Tensor | None]:
    """One member's tensors with a member axis of 1 (views); None stays None."""
    return [None if t is None else t.unsqueeze(0) for t in tensors]


def _last_state(states: Tensor, steps: int, stacked: bool) -> Tensor:
    """The state at step T-1 of (K, S, B, H) states kept at [:, t % S], as a fresh (K, B, H) or (B, H) tensor."""
    last = (steps - 1) % states.shape[1]
    return (states[:, last] if stacked else states[0, last]).clone()


def _forward(loops: Loops, x, h0, c0, w_ih, w_hh, b_ih, b_hh, save: bool):
    """y (the caller's rank), h_T, c_T, and for the backward: the member-axis tensors and (acts, cs)."""
    stacked = x.dim() == 4
    steps, hidden = x.shape[-3], w_hh.shape[-1]
    y = x.new_empty(*x.shape[:-1], hidden)  # (K, T, B, H) or (T, B, H): allocated in the caller's shape
    members = (x, h0, c0, w_ih, w_hh) if stacked else _as_members(x, h0, c0, w_ih, w_hh)
    bias = None if b_ih is None else b_ih + b_hh  # b = b_ih + b_hh
    if bias is not None and not stacked:
        bias = bias.unsqueeze(0)
    acts, cs = loops.forward(*members, bias, y if stacked else y.unsqueeze(0), save)
    h_last = (y[:, -1] if stacked else y[-1]).clone()
    return y, h_last, _last_state(cs, steps, stacked), members, acts, cs


class LSTMSequence(torch.autograd.Function):
    """One LSTM layer over a whole sequence, for one member (3-D x) or K members (4-D x); `loops` supplies the
    sequential part."""

    @staticmethod
    def forward(ctx, loops: Loops, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        y, h_last, c_last, members, acts, cs = _forward(loops, x, h0, c0, w_ih, w_hh, b_ih, b_hh, save=True)
        ctx.loops, ctx.stacked, ctx.has_bias = loops, x.dim() == 4, b_ih is not None
        ctx.set_materialize_grads(False)
        x4, h04, c04, w_ih3, w_hh3 = members
        ctx.save_for_backward(x4, h04, c04, w_ih3, w_hh3, acts, cs, y)
        return y, h_last, c_last

    @staticmethod
    def backward(ctx, dy, dh_last, dc_last):
        if torch.is_grad_enabled():  # create_graph=True: this backward is not itself differentiable
            raise RuntimeError(
                "the fused LSTM layer has a first-order backward only: double backward "
                "(create_graph=True) is not supported; use the 'reference' backend for it"
            )
        x, h0, c0, w_ih, w_hh, acts, cs, y = ctx.saved_tensors  # member-axis tensors; y in the caller's shape
        if not ctx.stacked:
            dy, dh_last, dc_last = _as_members(dy, dh_last, dc_last)
            y = y.unsqueeze(0)
        dy, dh_last, dc_last = (None if t is None else t.contiguous() for t in (dy, dh_last, dc_last))
        need = ctx.needs_input_grad[1:]  # (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        need_weights = any(need[3:])
        grads = ctx.loops.backward(acts, cs, y, x, h0, c0, w_ih, w_hh, dy, dh_last, dc_last, need[0], need_weights)
        db = grads.bias if ctx.has_bias else None
        # two tensors, not one: gradients that share memory would be stored as .grad of both biases, and an
        # in-place update of one (an optimizer's, a clip's) would then change the other
        result = [grads.x, grads.h0, grads.c0, grads.w_ih, grads.w_hh, db, None if db is None else db.clone()]
        if not ctx.stacked:
            result = [None if g is None else g[0] for g in result]
        return (None, *(g if wanted else None for g, wanted in zip(result, need, strict=True)))


def check_arguments(x, h0, c0, w_ih, w_hh, b_ih, b_hh, stacked: bool = False) -> None:
    """Shapes, dtypes and devices of one layer call (with a leading member axis K when `stacked`); raises
    ValueError naming the mismatch."""
    lead = "(K, T, B, I)" if stacked else "(T, B, I)"
    if x.dim() != (4 if stacked else 3):
        raise ValueError(f"x must be {lead}, got shape {tuple(x.shape)}")
    *members, steps, batch, inputs = x.shape
    if w_hh.dim() != len(members) + 2:
        raise ValueError(f"w_hh must be {'(K, 4H, H)' if stacked else '(4H, H)'}, got shape {tuple(w_hh.shape)}")
    hidden = w_hh.shape[-1]
    if steps == 0:
        raise ValueError("x must have at least one time step")
    k = tuple(members)
    expected = {
        "h0": (*k, batch, hidden),
        "c0": (*k, batch, hidden),
        "w_ih": (*k, 4 * hidden, inputs),
        "w_hh": (*k, 4 * hidden, hidden),
    }
    for name, tensor in (("h0", h0), ("c0", c0), ("w_ih", w_ih), ("w_hh", w_hh)):
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]}, got {tuple(tensor.shape)}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be tensors or both be None")
    for bias in (b_ih, b_hh):
        if bias is not None and tuple(bias.shape) != (*k, 4 * hidden):
            raise ValueError(f"biases must have shape {(*k, 4 * hidden)}, got {tuple(bias.shape)}")
    tensors = [t for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh) if t is not None]
    if len({t.dtype for t in tensors}) != 1 or len({t.device for t in tensors}) != 1:
        raise ValueError("all tensors of an LSTM layer call must share one dtype and one device")


def run_layer(loops: Loops, x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> tuple[Tensor, Tensor, Tensor]:
    """The layer around given loops (x 3-D: one member; 4-D: K members): through `LSTMSequence` when a gradient
    is needed, else without saving anything for a backward."""
    x, h0, c0, w_ih, w_hh = (t.contiguous() for t in (x, h0, c0, w_ih, w_hh))
    tensors = [t for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return LSTMSequence.apply(loops, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    y, h_last, c_last, *_ = _forward(loops, x, h0, c0, w_ih, w_hh, b_ih, b_hh, save=False)
    return y, h_last, c_last


def lstm_layer_stacked(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    *,
    loop: str = "auto",
    schedule: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """K independent members at once: x (K, T, B, I) -> (y (K, T, B, H), h_T, c_T (K, B, H)); member k is exactly
    `lstm_layer` on member k's slices. `loop` and `schedule` as in `lstm_layer`."""
    check_arguments(x, h0, c0, w_ih, w_hh, b_ih, b_hh, stacked=True)
    return run_layer(choose_loops(x.device, x.dtype, loop, schedule), x, h0, c0, w_ih, w_hh, b_ih, b_hh)


def lstm_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    *,
    loop: str = "auto",
    schedule: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Run one layer over a time-major sequence x (T, B, I) -> (y (T, B, H), h_T, c_T): the stacked layer with
    K = 1. `loop` picks the time loops: "auto" (C++ on CPU when it builds, else Python), "cpp" or "python";
    `schedule` the C++ loops' schedule: "auto", "sequences" or "steps" (`choose_schedule`)."""
    check_arguments(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    return run_layer(choose_loops(x.device, x.dtype, loop, schedule), x, h0, c0, w_ih, w_hh, b_ih, b_hh)
