"""Kernels for one LSTM layer over a whole sequence, chosen by name.

Every backend computes the same function (gate order i, f, g, o, as torch.nn.LSTM):

    lstm_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> (y, h_T, c_T)

    x      (T, B, I)        input sequence, time-major
    h0, c0 (B, H)           initial state
    w_ih   (4H, I)          input-to-hidden weights, rows [i | f | g | o]
    w_hh   (4H, H)          hidden-to-hidden weights
    b_ih, b_hh (4H,) | None biases (both None when bias=False)
    y      (T, B, H)        hidden state at every step; h_T, c_T (B, H) the final state

`reference` is the slow twin every faster backend is tested against.

A pack of K independent members (seeds, learning rates, ... of one architecture) runs through the stacked
form of the same function, every tensor with a leading member axis:

    lstm_layer_stacked(x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> (y, h_T, c_T)

    x      (K, T, B, I)     h0, c0 (K, B, H)     w_ih (K, 4H, I)     w_hh (K, 4H, H)
    b_ih, b_hh (K, 4H) | None                    y (K, T, B, H)      h_T, c_T (K, B, H)

Member k of the result is exactly `lstm_layer` on member k's slices: members never mix. A backend
module may define its own `lstm_layer_stacked` (fused and triton do: all members in one kernel per step or
per sequence, K = 1 being their plain layer); `get_stacked` falls back to a loop over members (reference).

`prepare(name, device, dtype)` builds, loads and warms up a backend before a timed run (the fused backend's
C++ loop is compiled once per machine, cached on disk).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable

# name -> "module:function"; modules are imported on first use so that importing lstmlab stays cheap
# and a backend whose dependency is missing (triton) only fails when it is asked for.
BACKENDS: dict[str, str] = {
    "reference": "lstmlab.kernels.reference:lstm_layer",
    "fused": "lstmlab.kernels.fused:lstm_layer",
    "triton": "lstmlab.kernels.triton_lstm:lstm_layer",
}
BACKEND_NAMES = ("auto", *BACKENDS)


class BackendUnavailable(RuntimeError):
    """The backend exists but cannot run here (missing dependency, wrong device)."""


def check_name(name: str) -> None:
    """Raise ValueError listing the valid names when `name` is not a backend name (or `auto`)."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown LSTM backend {name!r}; valid backends: {', '.join(BACKEND_NAMES)}")


def available(name: str, device_type: str) -> bool:
    """Whether backend `name` can run on a device of type `device_type` ("cpu", "cuda")."""
    if name == "reference":
        return True
    if name == "fused":
        return device_type in ("cpu", "cuda")
    if name == "triton":
        if device_type != "cuda":
            return False
        try:
            importlib.import_module("triton")
        except ImportError:
            return False
        return True
    raise ValueError(f"unknown LSTM backend {name!r}; valid backends: {', '.join(BACKEND_NAMES)}")


def resolve(name: str, device_type: str) -> str:
    """Turn a requested backend name into the one that will run.

    An explicit name that cannot run here raises; only `auto` falls back, and it says so.
    """
    check_name(name)
    if name != "auto":
        if not available(name, device_type):
            raise BackendUnavailable(f"LSTM backend {name!r} cannot run on device type {device_type!r}")
        return name
    preferred = ("triton", "fused") if device_type == "cuda" else ("fused",)
    for candidate in preferred:
        if candidate in BACKENDS and available(candidate, device_type) and _importable(candidate):
            return candidate
    warnings.warn(f"no fast LSTM backend for device type {device_type!r}; falling back to 'reference'", stacklevel=3)
    return "reference"


def _importable(name: str) -> bool:
    try:
        get(name)
    except (ImportError, AttributeError):
        return False
    return True


def get_stacked(name: str) -> Callable:
    """The stacked (member-axis) layer function of a concrete backend: its own, or a loop over members."""
    layer = get(name)
    stacked = getattr(importlib.import_module(BACKENDS[name].split(":")[0]), "lstm_layer_stacked", None)
    return stacked if stacked is not None else loop_over_members(layer)


def loop_over_members(layer: Callable) -> Callable:
    """A stacked layer function made of one `layer` call per member (the slow twin of a stacked kernel)."""

    def lstm_layer_stacked(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        import torch

        outs = [
            layer(x[k], h0[k], c0[k], w_ih[k], w_hh[k], None if b_ih is None else b_ih[k],
                  None if b_hh is None else b_hh[k])
            for k in range(x.shape[0])
        ]
        return tuple(torch.stack(parts) for parts in zip(*outs, strict=True))

    return lstm_layer_stacked


def prepare(name: str, device, dtype) -> None:
    """Get backend `name` (a concrete one, not `auto`) ready to run on (device, dtype), so that the first real
    call pays no one-time cost: import it, build or load its compiled parts (the fused backend's C++ loop, said
    in one line when it is built or cannot be), and run one tiny forward and backward of the stacked layer
    (Triton compiles its kernels on first launch)."""
    import torch

    layer = get_stacked(name)
    g = torch.Generator().manual_seed(0)

    def tensor(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype).requires_grad_()

    members, steps, batch, inputs, hidden = 1, 2, 2, 3, 4
    with torch.enable_grad():
        y, h, c = layer(tensor(members, steps, batch, inputs), tensor(members, batch, hidden),
                        tensor(members, batch, hidden), tensor(members, 4 * hidden, inputs),
                        tensor(members, 4 * hidden, hidden), tensor(members, 4 * hidden), tensor(members, 4 * hidden))
        (y.sum() + h.sum() + c.sum()).backward()


def get(name: str) -> Callable:
    """The layer function of a concrete backend (not `auto`)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown LSTM backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    module_name, function_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), function_name)
