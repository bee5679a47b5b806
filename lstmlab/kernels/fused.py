"""The fused LSTM layer: GEMM-shaped forward and a hand-written backward through time.

Same contract as `reference.lstm_layer` (see `lstmlab.kernels`), and the same numbers to rounding.
Where the reference runs two matmuls and ten pointwise ops per step under autograd, this layer:

forward
    A = X · W_ihᵀ + (b_ih + b_hh)         one GEMM over all T·B rows        (T, B, 4H)
    for t in 0..T-1:
        A_t += h_{t-1} · W_hhᵀ             one GEMM per step                 (B, 4H)
        i, f, g, o, c_t, h_t = cell(A_t)   one fused pass: A_t becomes the activations
backward (no per-step autograd graph: the saved activations and c are all it needs)
    for t in T-1..0:
        dA_t, dc_{t-1} = cell'(…)          one fused pass
        dh_{t-1} = dA_t · W_hh             one GEMM per step
    dW_ih = dAᵀ · X,  dW_hh = dAᵀ · H_prev,  dX = dA · W_ih,  db = Σ dA     one GEMM (or sum) each

The two time loops are pluggable (`Loops`): on CPU they run in a small C++ extension built on first
use (`_cpu_loop.cpp`), otherwise — on CUDA, or where no compiler is found — in Python over the
torch-op cells below. `triton_lstm.py` plugs its Triton cells into the same `PythonLoops`.

The GEMMs (`gemm`): "aten" runs them through torch.mm/addmm (MKL on CPU); "onednn" runs the float32 CPU
ones that oneDNN does at least as fast on this kind of CPU — the input projection, the forward step GEMM
(W_hh prepacked once per call, run from the C++ loop) and dX — through `torch.ops.mkldnn._linear_pointwise`
(the op torch.compile's CPU backend lowers linear layers to); "auto" picks oneDNN where a probe finds it
working (float32 CPU), else ATen. The weight gradients and the backward step GEMM stay ATen's everywhere
(faster there).
"""

from __future__ import annotations

import hashlib
import os
import platform
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

LOOP_CHOICES = ("auto", "cpp", "python")
GEMM_CHOICES = ("auto", "onednn", "aten")


# ---------------------------------------------------------------------------------------------------------------------
# Pointwise cells on plain torch ops (any device). The C++ and Triton cells compute the same lines.


def torch_cell_forward(gates: Tensor, c_prev: Tensor, c: Tensor, h: Tensor) -> None:
    """gates (B, 4H) pre-activations, overwritten in place with the activations; writes c_t and h_t (B, H)."""
    hidden = c.shape[-1]
    gates[:, : 2 * hidden].sigmoid_()  # i_t = σ(a_i), f_t = σ(a_f)
    gates[:, 2 * hidden : 3 * hidden].tanh_()  # g_t = tanh(a_g)
    gates[:, 3 * hidden :].sigmoid_()  # o_t = σ(a_o)
    i, f, g, o = gates.chunk(4, dim=1)
    torch.mul(f, c_prev, out=c)  # c_t = f_t ⊙ c_{t-1}
    c.addcmul_(i, g)  #              + i_t ⊙ g_t
    torch.tanh(c, out=h)
    h.mul_(o)  # h_t = o_t ⊙ tanh(c_t)


def torch_cell_backward(acts: Tensor, c_prev: Tensor, c: Tensor, dh: Tensor, dc: Tensor, dgates: Tensor) -> None:
    """acts (B, 4H) saved activations; dh = dL/dh_t (all paths); dc = dL/dc_t through step t+1, overwritten
    with dL/dc_{t-1}. Writes dgates (B, 4H) = dL/da_t."""
    i, f, g, o = acts.chunk(4, dim=1)
    di, df, dg, do = dgates.chunk(4, dim=1)
    tanh_c = torch.tanh(c)
    dc.addcmul_(dh * o, 1 - tanh_c * tanh_c)  # dc_t += dh_t ⊙ o_t ⊙ (1 - tanh²(c_t))
    torch.mul(dh, tanh_c, out=do).mul_(o * (1 - o))  # da_o = dh_t ⊙ tanh(c_t) ⊙ o_t(1 - o_t)
    torch.mul(dc, g, out=di).mul_(i * (1 - i))  # da_i = dc_t ⊙ g_t ⊙ i_t(1 - i_t)
    torch.mul(dc, c_prev, out=df).mul_(f * (1 - f))  # da_f = dc_t ⊙ c_{t-1} ⊙ f_t(1 - f_t)
    torch.mul(dc, i, out=dg).mul_(1 - g * g)  # da_g = dc_t ⊙ i_t ⊙ (1 - g_t²)
    dc.mul_(f)  # dc_{t-1} = dc_t ⊙ f_t


# ---------------------------------------------------------------------------------------------------------------------
# The two time loops.


class Loops(Protocol):
    """The sequential part of the layer. Every tensor is contiguous and time-major."""

    def forward(
        self, gates: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, y: Tensor, cs: Tensor, gemm: Gemm | None = None
    ) -> None:
        """gates (T, B, 4H) = W_ih x_t + b on entry, the activations on exit; writes y = h_t, cs = c_t (T, B, H).
        `gemm` (default: ATen) runs the step GEMM where the loop can hand it over."""

    def backward(
        self,
        acts: Tensor,
        cs: Tensor,
        c0: Tensor,
        w_hh: Tensor,
        dy: Tensor | None,
        dh: Tensor,
        dc: Tensor,
        dgates: Tensor,
    ) -> None:
        """dh, dc (B, H): dL/dh_T, dL/dc_T on entry, dL/dh_0, dL/dc_0 on exit; writes dgates (T, B, 4H)."""


CellForward = Callable[[Tensor, Tensor, Tensor, Tensor], None]
CellBackward = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], None]


class PythonLoops:
    """The time loops in Python: one GEMM and one `cell_forward` (or `cell_backward`) call per step."""

    def __init__(
        self, cell_forward: CellForward = torch_cell_forward, cell_backward: CellBackward = torch_cell_backward
    ):
        self.cell_forward = cell_forward
        self.cell_backward = cell_backward

    def forward(self, gates, h0, c0, w_hh, y, cs, gemm=None) -> None:  # see Loops; the step GEMM stays ATen's
        w_hh_t = w_hh.t()
        h_prev, c_prev = h0, c0
        for a_t, h_t, c_t in zip(gates.unbind(0), y.unbind(0), cs.unbind(0), strict=True):
            a_t.addmm_(h_prev, w_hh_t)  # a_t = (W_ih x_t + b) + h_{t-1} · W_hhᵀ
            self.cell_forward(a_t, c_prev, c_t, h_t)
            h_prev, c_prev = h_t, c_t

    def backward(self, acts, cs, c0, w_hh, dy, dh, dc, dgates) -> None:  # see Loops
        steps = acts.shape[0]
        for t in range(steps - 1, -1, -1):
            if dy is not None:
                dh.add_(dy[t])  # dh_t = dy_t + da_{t+1} · W_hh
            c_prev = cs[t - 1] if t > 0 else c0
            self.cell_backward(acts[t], c_prev, cs[t], dh, dc, dgates[t])
            torch.mm(dgates[t], w_hh, out=dh)  # dh_{t-1} = da_t · W_hh   (B, 4H)·(4H, H)


class CppLoops:
    """The time loops in C++ (`_cpu_loop.cpp`): CPU, float32 and float64."""

    def forward(self, gates, h0, c0, w_hh, y, cs, gemm=None) -> None:  # see Loops
        w_onednn = gemm.step_weight(w_hh, gates.shape[1]) if gemm is not None else None
        torch.ops.lstmlab_cpu.forward_loop(gates, h0, c0, w_hh, y, cs, w_onednn)

    def backward(self, acts, cs, c0, w_hh, dy, dh, dc, dgates) -> None:  # see Loops
        no_dy = acts.new_empty(0)
        torch.ops.lstmlab_cpu.backward_loop(acts, cs, c0, w_hh, no_dy if dy is None else dy, dh, dc, dgates)


# ---------------------------------------------------------------------------------------------------------------------
# The GEMMs outside the time loops, and the step GEMM's weight: ATen (MKL) or oneDNN.


class Gemm:
    """ATen's GEMMs: torch.mm / addmm (MKL on CPU)."""

    name = "aten"

    def linear(self, x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
        """x · wᵀ (+ bias): x (M, K), w (N, K) -> (M, N)."""
        return torch.mm(x, w.t()) if bias is None else torch.addmm(bias, x, w.t())

    def step_weight(self, w_hh: Tensor, batch: int) -> Tensor | None:
        """The weight the C++ loop hands to oneDNN for h_{t-1} · W_hhᵀ; None: the loop uses ATen's addmm."""
        return None


class OneDnnGemm(Gemm):
    """oneDNN's linear (`mkldnn::_linear_pointwise`) for float32 CPU tensors. Used where it measured faster than
    MKL on this project's AVX-512 Xeon (docs/benchmarks.md): the input projection X · W_ihᵀ (0.6-0.8× MKL's
    time), dX = dA · W_ih (0.8-0.9×) and the forward step GEMM (prepacked W_hh; on par at 1 thread). The weight
    gradients (oneDNN 1.5-1.9× slower) and the backward step GEMM stay ATen's."""

    name = "onednn"

    def linear(self, x, w, bias=None):
        return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")

    def step_weight(self, w_hh, batch):
        if batch <= CPP_SMALL_BATCH:  # the C++ loop streams W_hh itself at such batches
            return None
        # prepacked once per call into oneDNN's blocked layout for a (batch, H) left operand
        return torch.ops.mkldnn._reorder_linear_weight(w_hh, batch)


_onednn_state: dict[str, object] = {}  # "ok": bool, "error": str


def onednn_available() -> bool:
    """Whether oneDNN's linear runs here and agrees with torch.mm on a probe (once per process)."""
    if "ok" not in _onednn_state:
        try:
            if os.environ.get("LSTMLAB_NO_ONEDNN"):
                raise RuntimeError("disabled by LSTMLAB_NO_ONEDNN")
            if not torch.backends.mkldnn.is_available():
                raise RuntimeError("torch was built without oneDNN (mkldnn)")
            g = torch.Generator().manual_seed(0)
            x, w = torch.randn(8, 16, generator=g), torch.randn(12, 16, generator=g)
            gemm = OneDnnGemm()
            packed = gemm.step_weight(w, 8)
            for out in (gemm.linear(x, w), gemm.linear(x, packed)):
                torch.testing.assert_close(out, x @ w.t(), rtol=1e-5, atol=1e-5)
            _onednn_state.update(ok=True, error="")
        except Exception as error:  # an op missing or renamed in this torch: ATen's GEMMs still work
            _onednn_state.update(ok=False, error=f"{type(error).__name__}: {error}")
    return bool(_onednn_state["ok"])


def choose_gemm(device: torch.device, dtype: torch.dtype, gemm: str = "auto") -> Gemm:
    """`aten`, `onednn` (float32 CPU only), or `auto`: oneDNN for float32 on CPU where it works, else ATen."""
    if gemm not in GEMM_CHOICES:
        raise ValueError(f"unknown gemm {gemm!r}; valid gemms: {', '.join(GEMM_CHOICES)}")
    onednn_possible = device.type == "cpu" and dtype == torch.float32
    if gemm == "onednn":
        if not onednn_possible:
            raise ValueError(f"the oneDNN GEMMs run float32 CPU tensors, not {dtype} on {device}")
        if not onednn_available():
            raise RuntimeError(f"oneDNN's linear is unavailable: {_onednn_state['error']}")
        return OneDnnGemm()
    if gemm == "auto" and onednn_possible and onednn_available():
        return OneDnnGemm()
    return Gemm()


# ---------------------------------------------------------------------------------------------------------------------
# Building the C++ loops, once per process, cached on disk.

_CPP_SOURCE = Path(__file__).with_name("_cpu_loop.cpp")
CPP_SMALL_BATCH = 4  # `kSmallBatch` in _cpu_loop.cpp: up to this batch the C++ loop runs its own step GEMMs
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


def _cpu_model() -> str:
    """The CPU's model name and feature flags (virtual machines often share one generic model name)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    model = next((line for line in lines if line.startswith("model name")), "")
    flags = next((line for line in lines if line.startswith("flags")), "")
    return f"{model}\n{flags}" if model or flags else platform.processor()


def cpp_loops() -> CppLoops | None:
    """The C++ loops, building them on first use; None (with a one-time warning) when they cannot be built."""
    if "loops" in _cpp_state:
        return _cpp_state["loops"]  # type: ignore[return-value]
    if os.environ.get("LSTMLAB_NO_CPP"):
        _cpp_state.update(loops=None, error="disabled by LSTMLAB_NO_CPP")
        return None
    flags = _CPP_FLAGS + _cpu_flags()
    source = _CPP_SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, " ".join(flags).encode(), torch.__version__.encode(), _cpu_model().encode()])
    ).hexdigest()[:16]
    build_dir = _cache_dir() / f"cpu_loop-{key}"
    library = build_dir / "lstmlab_cpu_loop.so"
    try:
        if not library.exists():
            from torch.utils.cpp_extension import load

            warnings.warn(
                f"lstmlab: compiling the C++ LSTM time loop once (about 10 s); cached in {build_dir}", stacklevel=3
            )
            build_dir.mkdir(parents=True, exist_ok=True)
            load(
                name="lstmlab_cpu_loop",
                sources=[str(_CPP_SOURCE)],
                extra_cflags=flags,
                extra_ldflags=["-fopenmp"],
                build_directory=str(build_dir),
                is_python_module=False,
            )
        else:
            torch.ops.load_library(str(library))
        _cpp_state.update(loops=CppLoops(), error="")
    except Exception as error:  # no compiler, no headers, a failed build: the Python loops still work
        _cpp_state.update(loops=None, error=f"{type(error).__name__}: {error}")
        warnings.warn(
            f"lstmlab: the C++ LSTM time loop is unavailable ({_cpp_state['error']}); "
            "using the Python loop of the fused backend (slower at small batch)",
            stacklevel=3,
        )
    return _cpp_state["loops"]  # type: ignore[return-value]


def choose_loops(device: torch.device, dtype: torch.dtype, loop: str = "auto") -> Loops:
    """`cpp` (CPU only), `python`, or `auto`: C++ on CPU for float32/float64 when it builds, else Python."""
    if loop not in LOOP_CHOICES:
        raise ValueError(f"unknown loop {loop!r}; valid loops: {', '.join(LOOP_CHOICES)}")
    cpp_possible = device.type == "cpu" and dtype in (torch.float32, torch.float64)
    if loop == "cpp":
        if not cpp_possible:
            raise ValueError(f"the C++ loop runs float32/float64 CPU tensors, not {dtype} on {device}")
        loops = cpp_loops()
        if loops is None:
            raise RuntimeError(f"the C++ LSTM time loop is unavailable: {_cpp_state['error']}")
        return loops
    if loop == "auto" and cpp_possible:
        loops = cpp_loops()
        if loops is not None:
            return loops
    return PythonLoops()


# ---------------------------------------------------------------------------------------------------------------------
# The layer: forward and backward through time around pluggable loops.


def _project_inputs(gemm: Gemm, x: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """A = X · W_ihᵀ + (b_ih + b_hh) for all T·B rows at once: (T, B, I) -> (T, B, 4H), a fresh buffer."""
    steps, batch, inputs = x.shape
    x2d = x.reshape(steps * batch, inputs)
    gates = gemm.linear(x2d, w_ih, None if b_ih is None else b_ih + b_hh)
    return gates.view(steps, batch, -1)


def _run_forward(loops: Loops, gemm: Gemm, x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> tuple[Tensor, Tensor, Tensor]:
    """Activations (T, B, 4H), y (T, B, H), cs (T, B, H)."""
    steps, batch, _ = x.shape
    hidden = w_hh.shape[1]
    gates = _project_inputs(gemm, x, w_ih, b_ih, b_hh)  # (T, B, 4H)
    y = x.new_empty(steps, batch, hidden)
    cs = x.new_empty(steps, batch, hidden)
    loops.forward(gates, h0, c0, w_hh, y, cs, gemm)
    return gates, y, cs


class LSTMSequence(torch.autograd.Function):
    """One LSTM layer over a whole sequence; `loops` supplies the two sequential loops."""

    @staticmethod
    def forward(ctx, loops: Loops, gemm: Gemm, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        acts, y, cs = _run_forward(loops, gemm, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        ctx.loops, ctx.gemm = loops, gemm
        ctx.has_bias = b_ih is not None
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, acts, cs, y)
        return y, y[-1].clone(), cs[-1].clone()

    @staticmethod
    def backward(ctx, dy, dh_last, dc_last):
        if torch.is_grad_enabled():  # create_graph=True: this backward is not itself differentiable
            raise RuntimeError(
                "the fused LSTM layer has a first-order backward only: double backward "
                "(create_graph=True) is not supported; use the 'reference' backend for it"
            )
        x, h0, c0, w_ih, w_hh, acts, cs, y = ctx.saved_tensors
        steps, batch, inputs = x.shape
        hidden = w_hh.shape[1]
        dh = torch.zeros_like(h0) if dh_last is None else dh_last.clone(memory_format=torch.contiguous_format)
        dc = torch.zeros_like(c0) if dc_last is None else dc_last.clone(memory_format=torch.contiguous_format)
        dgates = torch.empty_like(acts)  # (T, B, 4H)
        ctx.loops.backward(acts, cs, c0, w_hh, None if dy is None else dy.contiguous(), dh, dc, dgates)

        need = ctx.needs_input_grad[1:]  # (gemm, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        da = dgates.view(steps * batch, 4 * hidden)  # dA over all T·B rows
        dx = ctx.gemm.linear(da, w_ih.t().contiguous()).view(steps, batch, inputs) if need[1] else None  # dX = dA·W_ih
        dw_ih = torch.mm(da.t(), x.reshape(steps * batch, inputs)) if need[4] else None  # dW_ih = dAᵀ · X
        dw_hh = None
        if need[5]:
            dw_hh = torch.mm(dgates[0].t(), h0)  # dW_hh = da_0ᵀ · h_0
            if steps > 1:  #                             + Σ_{t≥1} da_tᵀ · h_{t-1}, one GEMM over (T-1)·B rows
                dw_hh.addmm_(da[batch:].t(), y[:-1].reshape((steps - 1) * batch, hidden))
        db = da.sum(0) if ctx.has_bias and (need[6] or need[7]) else None  # db_ih = db_hh = Σ_{t,b} da
        return None, None, dx, dh if need[2] else None, dc if need[3] else None, dw_ih, dw_hh, db, db


def check_arguments(x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> None:
    """Shapes, dtypes and devices of one layer call; raises ValueError naming the mismatch."""
    if x.dim() != 3:
        raise ValueError(f"x must be (T, B, I), got shape {tuple(x.shape)}")
    steps, batch, inputs = x.shape
    hidden = w_hh.shape[1]
    if steps == 0:
        raise ValueError("x must have at least one time step")
    expected = {
        "h0": (batch, hidden),
        "c0": (batch, hidden),
        "w_ih": (4 * hidden, inputs),
        "w_hh": (4 * hidden, hidden),
    }
    for name, tensor in (("h0", h0), ("c0", c0), ("w_ih", w_ih), ("w_hh", w_hh)):
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]}, got {tuple(tensor.shape)}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be tensors or both be None")
    tensors = [t for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh) if t is not None]
    for bias in (b_ih, b_hh):
        if bias is not None and tuple(bias.shape) != (4 * hidden,):
            raise ValueError(f"biases must have shape ({4 * hidden},), got {tuple(bias.shape)}")
    if len({t.dtype for t in tensors}) != 1 or len({t.device for t in tensors}) != 1:
        raise ValueError("all tensors of an LSTM layer call must share one dtype and one device")


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
    gemm: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Run one layer over a time-major sequence x (T, B, I) -> (y (T, B, H), h_T, c_T).

    `loop` picks the time loops: "auto" (C++ on CPU when it builds, else Python), "cpp" or "python".
    `gemm` picks the GEMM library: "auto" (oneDNN for float32 on CPU where it works, else ATen), "onednn", "aten".
    """
    check_arguments(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    loops = choose_loops(x.device, x.dtype, loop)
    return run_layer(loops, x, h0, c0, w_ih, w_hh, b_ih, b_hh, gemm=choose_gemm(x.device, x.dtype, gemm))


def run_layer(
    loops: Loops, x, h0, c0, w_ih, w_hh, b_ih, b_hh, *, gemm: Gemm | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The layer around given loops: through `LSTMSequence` when a gradient is needed, else without saving."""
    gemm = gemm or Gemm()
    x, h0, c0, w_hh = x.contiguous(), h0.contiguous(), c0.contiguous(), w_hh.contiguous()
    tensors = [t for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return LSTMSequence.apply(loops, gemm, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    _, y, cs = _run_forward(loops, gemm, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    return y, y[-1], cs[-1]
