"""Check every LSTM kernel backend against torch.nn.LSTM: outputs, final state and every gradient.

For each device, dtype and backend, an lstmlab `LSTM` and a `torch.nn.LSTM` share weights
(`load_state_dict`) and run the same small problem (T=12, B=3, I=5, H=7, 2 layers, random initial
state). The backward pass is driven by random cotangents on output, h_n and c_n together, so every
path of a hand-written backward is exercised (a plain `output.sum()` would leave the final-state paths
untested). Each `Row` holds the largest absolute difference of every quantity and whether it passed.

`lstmlab verify` is this, in two lines:

    rows = verify()
    console.print(render(rows)); raise typer.Exit(0 if all_passed(rows) else 1)

Tolerances: a quantity passes when  max|ours - torch| <= tol · max(1, max|torch|)  — absolute for
quantities of order one, relative for larger ones (weight gradients sum T·B terms and reach ~10).

- float64, tol 1e-10: two correct implementations differ only by rounding, about 1e-15 here; 1e-10
  leaves room for other summation orders and catches any real mistake.
- float32, tol 1e-5: on CPU the reference and torch's MKL path differ by about 2e-7 relative (2e-6
  absolute on bias gradients of size ~9), 40x inside the limit: float32 rounds at 6e-8 and errors add
  up over 12 steps and two layers. TF32 matmuls are switched off for the check, on both sides: at a
  10-bit mantissa they differ by ~1e-3, which is not a float32 result. A backend that uses TF32 on
  its own fails the float32 row, and should.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from rich.table import Table
from torch import Tensor, nn

from lstmlab import kernels
from lstmlab.errors import BadValue
from lstmlab.models.lstm import LSTM

TOLERANCES: dict[str, float] = {"float64": 1e-10, "float32": 1e-5}
T, B, I, H, LAYERS = 12, 3, 5, 7, 2  # small, but several layers, steps and a batch


@dataclass
class Row:
    """One backend on one device in one dtype, compared with torch.nn.LSTM.

    `diffs` maps each quantity to the largest |ours - torch|: "output", "h_n", "c_n", "grad input",
    "grad h0", "grad c0" and "grad <parameter name>" for every parameter. `limits` holds the allowed
    difference of each, tolerance · max(1, max|torch|). `error` is set when the backend raised or
    returned something of the wrong shape; such a row fails.
    """

    backend: str
    device: str
    dtype: str
    tolerance: float
    diffs: dict[str, float] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def over(self, key: str) -> bool:
        """Whether quantity `key` is over its limit; written so that a NaN difference counts as over."""
        return not self.diffs[key] <= self.limits[key]

    @property
    def passed(self) -> bool:
        return self.error is None and not any(self.over(k) for k in self.limits)

    def largest(self, prefix: str) -> float:
        """The largest difference among quantities whose name starts with `prefix`."""
        values = [d for k, d in self.diffs.items() if k.startswith(prefix)]
        return max(values) if values else math.nan

    @property
    def failures(self) -> list[str]:
        """Quantities over their limit, worst first relative to the limit."""
        over = [k for k in self.limits if self.over(k)]
        return sorted(over, key=lambda k: -math.inf if math.isnan(self.diffs[k]) else -self.diffs[k] / self.limits[k])


def verify(
    devices: Sequence[str] | None = None,
    dtypes: Sequence[str] = ("float64", "float32"),
    backends: Sequence[str] | None = None,
) -> list[Row]:
    """Compare backends with torch.nn.LSTM on every device and dtype asked for; one Row each.

    devices: default cpu, and cuda when torch sees a GPU.
    backends: default every registered backend that `kernels.available` allows on the device and
        whose module imports. Named backends are checked wherever they are available; a combination
        that cannot run on a device is left out (not counted as a failure).
    """
    if devices is None:
        devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    for dtype in dtypes:
        if dtype not in TOLERANCES:
            raise BadValue(f"--dtype: unsupported dtype {dtype!r} for verify; valid dtypes: {', '.join(TOLERANCES)}")
    for name in backends or ():
        if name not in kernels.BACKENDS:
            raise BadValue(f"unknown LSTM backend {name!r}; valid backends: {', '.join(kernels.BACKENDS)}")

    rows = []
    for device in devices:
        device_type = torch.device(device).type
        names = _runnable_backends(device_type) if backends is None else list(backends)
        for dtype in dtypes:
            for name in names:
                if kernels.available(name, device_type):
                    rows.append(_check(name, device, dtype))
    return rows


def all_passed(rows: Sequence[Row]) -> bool:
    """True when something was checked and every check passed."""
    return bool(rows) and all(row.passed for row in rows)


def render(rows: Sequence[Row]) -> Table:
    """A rich table: one line per check, the largest difference per quantity, and a final verdict."""
    table = Table(
        title=f"LSTM backends vs torch.nn.LSTM  (T={T}, B={B}, I={I}, H={H}, {LAYERS} layers, initial state)",
        caption=_verdict(rows),
        caption_justify="left",
    )
    for column in ("backend", "device", "dtype"):
        table.add_column(column)
    for column in ("output", "h_n, c_n", "∂input", "∂(h0, c0)", "∂params"):
        table.add_column(column, justify="right")
    table.add_column("tolerance", justify="right")
    table.add_column("result")
    for row in rows:
        cells = [
            _number(row, ("output",)),
            _number(row, ("h_n", "c_n")),
            _number(row, ("grad input",)),
            _number(row, ("grad h0", "grad c0")),
            _number(row, tuple(k for k in row.diffs if k.startswith(("grad weight", "grad bias")))),
        ]
        if row.error is not None:
            result = f"[red]FAIL[/red] {row.error}"
        elif row.passed:
            result = "[green]pass[/green]"
        else:
            worst = row.failures[0]
            result = f"[red]FAIL[/red] {worst}: {row.diffs[worst]:.1e} > {row.limits[worst]:.1e}"
        table.add_row(row.backend, row.device, row.dtype, *cells, f"{row.tolerance:.0e}", result)
    return table


def _verdict(rows: Sequence[Row]) -> str:
    if not rows:
        return "[red]FAIL: nothing was checked (no backend can run on the devices asked for)[/red]"
    failed = sum(not row.passed for row in rows)
    if failed:
        return f"[bold red]FAIL: {failed} of {len(rows)} checks failed[/bold red]"
    return f"[bold green]PASS: all {len(rows)} checks agree with torch.nn.LSTM[/bold green]"


def _number(row: Row, keys: tuple[str, ...]) -> str:
    """The largest difference among `keys`, red when any of them is over its limit."""
    keys = tuple(k for k in keys if k in row.diffs)
    if not keys:
        return "-"
    text = f"{max(row.diffs[k] for k in keys):.1e}"
    return f"[red]{text}[/red]" if any(row.over(k) for k in keys) else text


def _runnable_backends(device_type: str) -> list[str]:
    """Registered backends allowed on this device type whose module imports.

    Only an ImportError (module not written yet, dependency missing) leaves a backend out; any other
    failure while loading it is kept, so that its row reports the error instead of hiding it.
    """
    names = []
    for name in kernels.BACKENDS:
        if not kernels.available(name, device_type):
            continue
        try:
            kernels.get(name)
        except ImportError:
            continue
        except Exception:  # noqa: BLE001 - reported by the row, see docstring
            pass
        names.append(name)
    return names


@contextmanager
def _strict_float32() -> Iterator[None]:
    """Switch TF32 off for cuBLAS and cuDNN (torch's nn.LSTM on GPU uses TF32 by default)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _run(model: nn.Module, inputs: Sequence[Tensor], cotangents: Sequence[Tensor]) -> dict[str, Tensor]:
    """Forward and backward on fresh leaves; every output and gradient by name."""
    x, h0, c0 = (t.clone().requires_grad_() for t in inputs)
    output, (h_n, c_n) = model(x, (h0, c0))
    results = {"output": output, "h_n": h_n, "c_n": c_n}
    for name, value in results.items():
        if tuple(value.shape) != _expected_shape(name):
            raise RuntimeError(f"{name} has shape {list(value.shape)}, expected {list(_expected_shape(name))}")
    loss = sum((value * cotangent).sum() for value, cotangent in zip(results.values(), cotangents, strict=True))
    names, parameters = zip(*model.named_parameters(), strict=True)
    grads = torch.autograd.grad(loss, [x, h0, c0, *parameters], allow_unused=True)
    for name, grad in zip(("input", "h0", "c0", *names), grads, strict=True):
        if grad is None:
            raise RuntimeError(f"no gradient reached {name}")
        results[f"grad {name}"] = grad
    return {name: value.detach() for name, value in results.items()}


def _expected_shape(name: str) -> tuple[int, ...]:
    return (T, B, H) if name == "output" else (LAYERS, B, H)


def _check(backend: str, device: str, dtype_name: str) -> Row:
    dtype = getattr(torch, dtype_name)
    tolerance = TOLERANCES[dtype_name]
    row = Row(backend, device, dtype_name, tolerance)
    gen = torch.Generator().manual_seed(0)  # own generator: verify leaves the global RNG alone

    def randn(*shape: int) -> Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)

    theirs = nn.LSTM(I, H, LAYERS, device=device, dtype=dtype)
    bound = 1 / math.sqrt(H)
    with torch.no_grad():  # torch's init, U(-1/sqrt(H), 1/sqrt(H)), drawn on the CPU from our generator
        for parameter in theirs.parameters():
            parameter.copy_(torch.empty(parameter.shape, dtype=torch.float64).uniform_(-bound, bound, generator=gen))
    ours = LSTM(I, H, LAYERS, device=device, dtype=dtype, backend=backend)
    ours.load_state_dict(theirs.state_dict())
    inputs = (randn(T, B, I), randn(LAYERS, B, H), randn(LAYERS, B, H))
    cotangents = (randn(T, B, H), randn(LAYERS, B, H), randn(LAYERS, B, H))

    with _strict_float32():
        expected = _run(theirs, inputs, cotangents)
        try:
            actual = _run(ours, inputs, cotangents)
        except Exception as error:  # noqa: BLE001 - a backend that raises is a failed row, with its message
            row.error = f"{type(error).__name__}: {error}"
            return row
    if ours.last_backend != backend:
        row.error = f"asked for {backend!r} but {ours.last_backend!r} ran"
    for name, reference in expected.items():
        row.diffs[name] = (actual[name].double() - reference.double()).abs().max().item()
        row.limits[name] = tolerance * max(1.0, reference.double().abs().max().item())
    return row
