"""LSTM layer benchmarks: every implementation on the same weights, forward and forward+backward.

Implementations (one layer, time-major, the same nn.LSTM weights for all):
    classic    two nn.Linear, chunk(4), a Python loop over time, autograd through every step
    reference  the scratch slow twin, `kernels.get("reference")`
    fused      the scratch fused layer, `kernels.get("fused")` (C++ time loop on CPU)
    triton     the scratch Triton layer (CUDA only)
    nn.LSTM    torch.nn.LSTM (oneDNN on CPU, cuDNN on CUDA)

A pack of K members (`members=K`, `lstmlab bench --pack K`): K independent layers of one shape, each with its
own nn.LSTM weights, timed three ways for the same work:
    stacked    the scratch stacked layer of the backend packed training picks on the device (`auto`: fused on
               the CPU, triton on CUDA): one call for all K members, on weights stacked from each member's
               own parameters (torch.stack, as the packed trainer does)
    fused      K separate calls of the scratch fused layer
    nn.LSTM    K separate nn.LSTM calls

Each row is a median over `reps` timed calls after `warmup` untimed ones. The implementations of one
(device, dtype, threads, shape, K, mode) are timed in interleaved rounds — one call of each per round, each
round starting one implementation later — so that a machine that slows down or speeds up mid-run shifts them
all alike and none always runs after the same neighbour. GFLOP/s counts the GEMM flops
only: forward 2·T·B·4H·(I+H) per member, forward+backward 3× that.

The `lstmlab bench` command is a thin wrapper over this module:
    --shape T,B,I,H (repeatable)  -> run_bench(shapes=[parse_shape(s) for s in ...])
    --device / --dtype            -> devices=[...] / dtypes=[...]
    --threads N (repeatable)      -> threads=[...]: every thread count in turn, in the same process
    --pack K                      -> members=K
    --reps / --quick              -> reps= / quick=
    --json                        -> print(to_json(rows)) instead of rich's print(render_table(rows))
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lstmlab import kernels
from lstmlab.errors import BadValue
from lstmlab.run.env import device_name

Shape = tuple[int, int, int, int]  # (T, B, I, H)

STUDY_SHAPES: list[Shape] = [  # the layers of the depth studies in configs/ (quickstart: the first two)
    (30, 64, 2, 23),
    (30, 64, 23, 23),
    (100, 64, 2, 69),
    (100, 64, 69, 69),
    (100, 64, 10, 49),
    (200, 32, 2, 64),
    (100, 32, 100, 100),
]
DEFAULT_SHAPES: list[Shape] = STUDY_SHAPES + [
    (100, 1, 128, 128),
    (100, 32, 256, 256),
    (100, 64, 64, 256),
    (100, 64, 512, 512),
    (512, 16, 128, 128),
]
QUICK_SHAPES: list[Shape] = [(20, 1, 32, 32), (20, 16, 64, 64)]
IMPLS = ("classic", "reference", "fused", "triton", "nn.LSTM")
PACK_IMPLS = ("stacked", "fused", "nn.LSTM")  # with members=K: one stacked call, or K separate calls
MODES = ("fwd", "fwdbwd")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
BASELINE = "nn.LSTM"


def parse_shape(text: str) -> Shape:
    """'T,B,I,H' -> (T, B, I, H), four positive integers."""
    parts = text.replace(" ", "").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise BadValue(f"a shape is four positive integers T,B,I,H (e.g. 100,64,64,256), got {text!r}")
    return shape  # type: ignore[return-value]


def gemm_flops(shape: Shape, mode: str, members: int = 1) -> int:
    """The GEMM flops of `members` layers: forward 2·T·B·4H·(I+H) each; forward+backward 3× that."""
    steps, batch, inputs, hidden = shape
    forward = 2 * steps * batch * 4 * hidden * (inputs + hidden) * members
    return forward if mode == "fwd" else 3 * forward


def classic_lstm(x: Tensor, h0: Tensor, c0: Tensor, input_linear: nn.Linear, hidden_linear: nn.Linear) -> Tensor:
    """The textbook loop: two nn.Linear, chunk(4), autograd through every step. x (T, B, I) -> y (T, B, H)."""
    h, c, outputs = h0, c0, []
    for x_t in x:
        i, f, g, o = (input_linear(x_t) + hidden_linear(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h = torch.sigmoid(o) * torch.tanh(c)  # h_t = o_t ⊙ tanh(c_t)
        outputs.append(h)
    return torch.stack(outputs)


def skip_reason(impl: str, device: str, dtype: torch.dtype) -> str | None:
    """Why `impl` cannot run on this device and dtype, or None when it can."""
    device_type = torch.device(device).type
    if impl == "triton" and not kernels.available("triton", device_type):
        return "triton needs CUDA and the triton package"
    if impl == "nn.LSTM" and device_type == "cpu" and dtype in (torch.float16,):
        return "nn.LSTM has no float16 CPU kernel"
    return None


def _callables(impl: str, module: nn.LSTM, x: Tensor) -> tuple[Callable[[], Tensor], list[Tensor]]:
    """A no-argument call of `impl` on `x` with `module`'s weights returning y, and the weights it uses."""
    batch, hidden = x.shape[1], module.hidden_size
    h0 = x.new_zeros(batch, hidden)
    weights = (module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0)
    if impl == "nn.LSTM":
        return lambda: module(x)[0], list(weights)
    if impl == "classic":
        input_linear = nn.Linear(module.input_size, 4 * hidden).to(x)
        hidden_linear = nn.Linear(hidden, 4 * hidden).to(x)
        with torch.no_grad():  # the same numbers as the others
            input_linear.weight.copy_(module.weight_ih_l0)
            input_linear.bias.copy_(module.bias_ih_l0)
            hidden_linear.weight.copy_(module.weight_hh_l0)
            hidden_linear.bias.copy_(module.bias_hh_l0)
        classic_weights = [*input_linear.parameters(), *hidden_linear.parameters()]
        return lambda: classic_lstm(x, h0, h0, input_linear, hidden_linear), classic_weights
    layer = kernels.get(impl)
    return lambda: layer(x, h0, h0, *weights)[0], list(weights)


def _timed(fn: Callable[[], object], device: str) -> float:
    """Wall seconds of one call, synchronising CUDA around it."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _pack_callables(impl: str, modules: list[nn.LSTM], x: Tensor) -> tuple[Callable[[], Tensor], list[Tensor]]:
    """A no-argument call of `impl` on the K members' inputs x (K, T, B, I), each member with its module's
    weights, returning something to sum; and the weights it uses."""
    batch, hidden = x.shape[2], modules[0].hidden_size
    weights = [[m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0] for m in modules]
    every = [w for member in weights for w in member]
    if impl == "stacked":
        layer = kernels.get_stacked(kernels.resolve("auto", x.device.type))
        h0 = x.new_zeros(len(modules), batch, hidden)

        def stacked():
            stacked_weights = [torch.stack(parts) for parts in zip(*weights, strict=True)]  # (K, ...) each
            return layer(x, h0, h0, *stacked_weights)[0]

        return stacked, every
    if impl == "nn.LSTM":
        return lambda: sum(m(x[k])[0].sum() for k, m in enumerate(modules)), every
    layer = kernels.get(impl)
    h0 = x.new_zeros(batch, hidden)
    return lambda: sum(layer(x[k], h0, h0, *w)[0].sum() for k, w in enumerate(weights)), every


def _step(call: Callable[[], Tensor], inputs: list[Tensor], mode: str) -> Callable[[], object]:
    """One call to time: forward under no_grad, or forward and the gradients of every input (x, weights)."""
    if mode == "fwd":

        def forward():
            with torch.no_grad():
                return call()

        return forward

    def forward_backward():  # nothing accumulates into .grad between calls
        return torch.autograd.grad(call().sum(), inputs)

    return forward_backward


def _measure_group(device, dtype, shape, mode, impls, reps, warmup, members=1, seed=0) -> dict[str, list[float]]:
    """Times (seconds) per implementation for one (device, dtype, shape, members, mode), interleaved by round."""
    steps, batch, inputs, hidden = shape
    torch.manual_seed(seed)
    modules = [nn.LSTM(inputs, hidden).to(device=device, dtype=dtype) for _ in range(members)]
    needs_grad = mode == "fwdbwd"
    steps_by_impl = {}
    for impl in impls:
        if members == 1:
            x = torch.randn(steps, batch, inputs, device=device, dtype=dtype, requires_grad=needs_grad)
            call, weights = _callables(impl, modules[0], x)
        else:
            x = torch.randn(members, steps, batch, inputs, device=device, dtype=dtype, requires_grad=needs_grad)
            call, weights = _pack_callables(impl, modules, x)
        steps_by_impl[impl] = _step(call, [x, *weights], mode)
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    order = list(steps_by_impl)
    for round_ in range(warmup + reps):
        # each round starts one implementation later, so that none always runs after the same neighbour (whose
        # data may have pushed its own out of the caches)
        for impl in order[round_ % len(order) :] + order[: round_ % len(order)]:
            seconds = _timed(steps_by_impl[impl], device)
            if round_ >= warmup:
                times[impl].append(seconds)
    return times


def run_bench(
    shapes: Sequence[Shape] | None = None,
    devices: Sequence[str] | None = None,
    dtypes: Sequence[str] | None = None,
    modes: Sequence[str] = MODES,
    impls: Sequence[str] | None = None,
    reps: int = 7,
    warmup: int = 2,
    threads: int | Sequence[int] | None = None,
    quick: bool = False,
    members: int = 1,
) -> list[dict]:
    """Benchmark the LSTM layer implementations; one row per (device, dtype, threads, shape, mode, impl).

    shapes   (T, B, I, H) tuples; default DEFAULT_SHAPES (QUICK_SHAPES with quick=True)
    devices  "cpu", "cuda", "cuda:1", ...; default cpu, plus cuda when present
    dtypes   names in DTYPES; default float32 on CPU, float32 and bfloat16 on CUDA
    impls    names in IMPLS (PACK_IMPLS when members > 1); default all that can run on the device
    members  K > 1: time a pack of K members three ways (see the module docstring)
    quick    small shapes and at most 3 repetitions after 1 warm-up: a smoke run, not a measurement
    threads  torch CPU thread count(s) for the run, each in turn (restored afterwards); default: leave as is

    Row keys: device, device_name, dtype, T, B, I, H, members, mode, impl, status ("ok" | "skipped"), reason,
    ms (median), times_ms, us_per_step, gflops, vs_nn_lstm (ms / nn.LSTM's ms for the same device, dtype,
    threads, shape, members and mode), vs_fused, vs_classic, reps, threads, torch.
    """
    valid_impls = IMPLS if members == 1 else PACK_IMPLS
    choices = (("mode", modes, MODES), ("impl", impls or (), valid_impls), ("dtype", dtypes or (), DTYPES))
    for name, values, valid in choices:
        for value in values:
            if value not in valid:
                raise BadValue(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    if reps < 1 or warmup < 0 or members < 1:
        raise BadValue("reps and members must be at least 1 and warmup at least 0")
    if quick:
        reps, warmup = min(reps, 3), min(warmup, 1)
    shapes = list(shapes) if shapes else list(QUICK_SHAPES if quick else DEFAULT_SHAPES)
    devices = list(devices) if devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    thread_counts = [None] if threads is None else [threads] if isinstance(threads, int) else list(threads)

    previous_threads = torch.get_num_threads()
    try:
        rows = []
        for count in thread_counts:
            if count is not None:
                torch.set_num_threads(count)
            for device in devices:
                rows += _device_rows(device, dtypes, shapes, modes, impls, valid_impls, reps, warmup, members)
        return add_ratios(rows)
    finally:
        torch.set_num_threads(previous_threads)


def _device_rows(device, dtypes, shapes, modes, impls, valid_impls, reps, warmup, members) -> list[dict]:
    """The rows of one device at the current thread count."""
    rows = []
    device_dtypes = dtypes or (["float32", "bfloat16"] if device.startswith("cuda") else ["float32"])
    names = device_name(torch.device(device))
    for dtype_name in device_dtypes:
        dtype = DTYPES[dtype_name]
        wanted = list(impls) if impls else [i for i in valid_impls if skip_reason(i, device, dtype) is None]
        runnable = [i for i in wanted if skip_reason(i, device, dtype) is None]
        for shape in shapes:
            for mode in modes:
                times = _measure_group(device, dtype, shape, mode, runnable, reps, warmup, members)
                for impl in wanted:
                    row = _row(device, names, dtype_name, shape, mode, impl, times.get(impl), reps, members)
                    row["reason"] = skip_reason(impl, device, dtype)
                    rows.append(row)
    return rows


def _row(device, name, dtype, shape, mode, impl, seconds: list[float] | None, reps, members=1) -> dict:
    steps, batch, inputs, hidden = shape
    row = {
        "device": device, "device_name": name, "dtype": dtype,
        "T": steps, "B": batch, "I": inputs, "H": hidden, "members": members, "mode": mode, "impl": impl,
        "status": "skipped", "reason": None, "ms": None, "times_ms": [], "us_per_step": None, "gflops": None,
        "vs_nn_lstm": None, "vs_fused": None, "vs_classic": None,
        "reps": reps, "threads": torch.get_num_threads(), "torch": torch.__version__,
    }  # fmt: skip
    if seconds:
        median = statistics.median(seconds)
        row.update(
            status="ok",
            ms=median * 1e3,
            times_ms=[s * 1e3 for s in seconds],
            us_per_step=median * 1e6 / steps,
            gflops=gemm_flops(shape, mode, members) / median / 1e9,
        )
    return row


def _group(row: dict) -> tuple:
    """The rows timed against each other: one device, dtype, thread count, shape, pack size and mode."""
    return tuple(row[k] for k in ("device", "dtype", "threads", "T", "B", "I", "H", "members", "mode"))


def add_ratios(rows: list[dict]) -> list[dict]:
    """Fill vs_nn_lstm, vs_fused and vs_classic: a row's ms over nn.LSTM's (fused's, classic's) of its group."""
    by_impl = {(_group(r), r["impl"]): r["ms"] for r in rows if r["ms"] is not None}
    for row in rows:
        group = _group(row)
        for key, impl in (("vs_nn_lstm", BASELINE), ("vs_fused", "fused"), ("vs_classic", "classic")):
            base = by_impl.get((group, impl))
            row[key] = row["ms"] / base if row["ms"] is not None and base else None
    return rows


def to_json(rows: list[dict]) -> str:
    """The rows as a JSON array (json.loads gives them back)."""
    return json.dumps(rows, indent=2)


def render_table(rows: list[dict]):
    """The rows as a rich Table: one line per implementation, grouped by thread count, shape, K and mode."""
    from rich.table import Table

    table = Table(title="LSTM layer benchmark (median ms; ratios: this row's time / the other's)")
    columns = ("device", "dtype", "threads", "T,B,I,H", "K", "mode", "impl", "ms", "µs/step", "GFLOP/s",
               "× nn.LSTM", "× fused", "× classic")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("device", "dtype", "mode", "impl") else "right")
    previous = None
    for row in rows:
        group = _group(row)
        if previous is not None and group != previous:
            table.add_section()
        previous = group
        lead = (row["device"], row["dtype"], str(row["threads"]), f"{row['T']},{row['B']},{row['I']},{row['H']}",
                str(row["members"]), row["mode"], row["impl"])  # fmt: skip
        if row["status"] != "ok":
            table.add_row(*lead, f"skipped: {row['reason']}")
            continue
        table.add_row(
            *lead, _fmt(row["ms"], 2), _fmt(row["us_per_step"], 1), _fmt(row["gflops"], 1),
            _fmt(row["vs_nn_lstm"], 2), _fmt(row["vs_fused"], 2), _fmt(row["vs_classic"], 2),
        )  # fmt: skip
    return table


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"
