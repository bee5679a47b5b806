"""The gradient that reaches every time step: per-step forward, and backpropagation through time by hand.

For a recurrent core (LSTM, GRU or RNN, one or more layers) on one batch, `trace` runs the core one step
at a time keeping every state and gate, then runs backpropagation through time with the adjoint equations
written beside the lines that compute them. For every layer l and step t it gives

    δh_t = dL/dh_t   the total derivative of the loss with respect to h_t, every path included:
                     the head reading h_t (top layer), the layer above reading h_t at step t, and
                     step t+1 reading h_t through its gates
    δc_t = dL/dc_t   (LSTM) likewise: through h_t = o_t ⊙ tanh(c_t) and through c_{t+1} = f_{t+1} ⊙ c_t + ...
    δx_t = dL/dx_t   at the input of the first layer (for token tasks, the embedding vector of token t)

Why by hand: a fused `nn.LSTM` (or any kernel that runs the whole sequence in one op) keeps the
recurrence inside the op, so `output.retain_grad()` on its output shows only ∂L/∂y_t through the head
(zero at every t < T for a last-step readout), never what flows back into h_t from step t+1. Here every
h_t is a tensor of its own; tests/test_gradflow.py checks δh_t, δc_t and δx_t against autograd on
retained per-step tensors of torch's own cells in float64.

`summarize(trace)` turns one trace into the numbers `lstmlab inspect` reports and diagnostics.csv rows are
made of (lstmlab.analysis.inspect documents each of them).

Tensors are time-major: x (T, B, I), states and gates (T, B, H). Initial states are zero, as
`SequenceModel` runs its core. Dropout is not applied (the model as evaluated).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lstmlab.kernels.reference import lstm_gates

KINDS = ("lstm", "gru", "rnn")
GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "rnn": ()}


@dataclass
class Weights:
    """One layer's parameters, as torch.nn.LSTM/GRU/RNN lay them out (biases are zeros when bias=False)."""

    w_ih: Tensor  # (G·H, I), gate blocks stacked along the rows
    w_hh: Tensor  # (G·H, H)
    b_ih: Tensor  # (G·H,)
    b_hh: Tensor  # (G·H,)


@dataclass
class LayerTrace:
    """One layer over the sequence: its states and gates, and (after the backward) the gradients reaching them."""

    h: Tensor  # (T, B, H) h_1 .. h_T
    c: Tensor | None  # (T, B, H) c_1 .. c_T (LSTM only)
    gates: dict[str, Tensor]  # gate name -> (T, B, H), after its nonlinearity
    dh: Tensor | None = None  # (T, B, H) dL/dh_t
    dc: Tensor | None = None  # (T, B, H) dL/dc_t (LSTM only)


@dataclass
class Trace:
    kind: str  # lstm | gru | rnn
    x: Tensor  # (T, B, I) the first layer's input
    layers: list[LayerTrace]
    output: Tensor  # the head's output, (B, C) or (B, T, C)
    loss: float
    dx: Tensor | None = None  # (T, B, I) dL/dx_t
    nonlinearity: str = "tanh"  # rnn only
    weights: list[Weights] = field(default_factory=list, repr=False)


# -- reading a core -----------------------------------------------------------------------------------


def core_kind(core: nn.Module) -> str:
    """lstm for torch.nn.LSTM and lstmlab's LSTM; gru; rnn."""
    from lstmlab.models.lstm import LSTM

    if isinstance(core, (nn.LSTM, LSTM)):
        return "lstm"
    if isinstance(core, nn.GRU):
        return "gru"
    if isinstance(core, nn.RNN):
        return "rnn"
    raise ValueError(f"cannot trace a {type(core).__name__}: valid cores are LSTM, GRU and RNN (torch.nn or lstmlab)")


def core_weights(core: nn.Module, dtype: torch.dtype = torch.float64) -> list[Weights]:
    """Every layer's weights, detached copies in `dtype` (the model itself is left as it is)."""
    if getattr(core, "bidirectional", False) or getattr(core, "proj_size", 0):
        raise ValueError("cannot trace a bidirectional core or one with projections")
    layers = []
    for weights in core.all_weights:
        w_ih, w_hh = (w.detach().to(dtype) for w in weights[:2])
        if len(weights) == 4:
            b_ih, b_hh = (b.detach().to(dtype) for b in weights[2:])
        else:
            b_ih = b_hh = w_ih.new_zeros(w_ih.shape[0])
        layers.append(Weights(w_ih, w_hh, b_ih, b_hh))
    return layers


# -- LSTM ---------------------------------------------------------------------------------------------


def lstm_forward(x: Tensor, w: Weights) -> LayerTrace:
    T, B, _ = x.shape
    h = c = x.new_zeros(B, w.w_hh.shape[1])
    hs, cs, gates = [], [], {name: [] for name in GATES["lstm"]}
    for x_t in x.unbind(0):
        i, f, g, o = lstm_gates(x_t, h, w.w_ih, w.w_hh, w.b_ih, w.b_hh)  # the reference kernel's gate lines
        c = f * c + i * g  # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h = o * torch.tanh(c)  # h_t = o_t ⊙ tanh(c_t)
        hs.append(h)
        cs.append(c)
        for name, value in zip(GATES["lstm"], (i, f, g, o), strict=True):
            gates[name].append(value)
    return LayerTrace(torch.stack(hs), torch.stack(cs), {k: torch.stack(v) for k, v in gates.items()})


def lstm_backward(layer: LayerTrace, w: Weights, dh_in: Tensor) -> Tensor:
    """Fill layer.dh and layer.dc from dh_in (T, B, H), the gradient reaching h_t from outside this layer
    (the head, the layer above); return dL/dx_t (T, B, I)."""
    T, B, H = layer.h.shape
    i_, f_, g_, o_ = (layer.gates[name] for name in GATES["lstm"])
    dh_all, dc_all, dx = torch.empty_like(layer.h), torch.empty_like(layer.h), []
    dh_next = dc_next = layer.h.new_zeros(B, H)  # what step t+1 sends back to h_t and to c_t
    for t in reversed(range(T)):
        i, f, g, o = i_[t], f_[t], g_[t], o_[t]
        c_prev = layer.c[t - 1] if t > 0 else torch.zeros_like(layer.c[0])
        tanh_c = torch.tanh(layer.c[t])
        dh = dh_in[t] + dh_next  # δh_t = (head, layer above) + W_hhᵀ δa_{t+1}
        dc = dh * o * (1 - tanh_c**2) + dc_next  # δc_t = δh_t ⊙ o_t ⊙ (1 − tanh² c_t) + δc_{t+1} ⊙ f_{t+1}
        da = torch.cat([  # (B, 4H): the gradient at the gates' pre-activations, σ' = σ(1 − σ), tanh' = 1 − tanh²
            dc * g * i * (1 - i),  # δa_i = δc_t ⊙ g_t ⊙ σ'(a_i)
            dc * c_prev * f * (1 - f),  # δa_f = δc_t ⊙ c_{t-1} ⊙ σ'(a_f)
            dc * i * (1 - g**2),  # δa_g = δc_t ⊙ i_t ⊙ tanh'(a_g)
            dh * tanh_c * o * (1 - o),  # δa_o = δh_t ⊙ tanh(c_t) ⊙ σ'(a_o)
        ], dim=-1)
        dx.append(da @ w.w_ih)  # δx_t = W_ihᵀ δa_t
        dh_next = da @ w.w_hh  # to h_{t-1}: W_hhᵀ δa_t
        dc_next = dc * f  # to c_{t-1}: δc_t ⊙ f_t — the forget gate is the path that carries it
        dh_all[t], dc_all[t] = dh, dc
    layer.dh, layer.dc = dh_all, dc_all
    return torch.stack(dx[::-1])


# -- GRU (torch.nn.GRU's equations; weight rows [r | z | n]) -------------------------------------------


def gru_forward(x: Tensor, w: Weights) -> LayerTrace:
    T, B, _ = x.shape
    h = x.new_zeros(B, w.w_hh.shape[1])
    hs, gates = [], {name: [] for name in GATES["gru"]}
    for x_t in x.unbind(0):
        x_r, x_z, x_n = (x_t @ w.w_ih.T + w.b_ih).chunk(3, dim=-1)  # W_i· x_t + b_i·
        h_r, h_z, h_n = (h @ w.w_hh.T + w.b_hh).chunk(3, dim=-1)  # W_h· h_{t-1} + b_h·
        r = torch.sigmoid(x_r + h_r)  # r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)          reset gate
        z = torch.sigmoid(x_z + h_z)  # z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)          update gate
        n = torch.tanh(x_n + r * h_n)  # n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn)) candidate
        h = (1 - z) * n + z * h  # h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}
        hs.append(h)
        for name, value in zip(GATES["gru"], (r, z, n), strict=True):
            gates[name].append(value)
    return LayerTrace(torch.stack(hs), None, {k: torch.stack(v) for k, v in gates.items()})


def gru_backward(layer: LayerTrace, w: Weights, dh_in: Tensor) -> Tensor:
    T, B, H = layer.h.shape
    r_, z_, n_ = (layer.gates[name] for name in GATES["gru"])
    w_hn, b_hn = w.w_hh[2 * H :], w.b_hh[2 * H :]
    dh_all, dx = torch.empty_like(layer.h), []
    dh_next = layer.h.new_zeros(B, H)
    for t in reversed(range(T)):
        r, z, n = r_[t], z_[t], n_[t]
        h_prev = layer.h[t - 1] if t > 0 else torch.zeros_like(layer.h[0])
        h_n = h_prev @ w_hn.T + b_hn  # W_hn h_{t-1} + b_hn, as the forward step saw it
        dh = dh_in[t] + dh_next  # δh_t = (head, layer above) + what step t+1 sends back
        da_n = dh * (1 - z) * (1 - n**2)  # δa_n = δh_t ⊙ (1 − z_t) ⊙ tanh'(a_n)
        da_r = da_n * h_n * r * (1 - r)  # δa_r = δa_n ⊙ (W_hn h_{t-1} + b_hn) ⊙ σ'(a_r)
        da_z = dh * (h_prev - n) * z * (1 - z)  # δa_z = δh_t ⊙ (h_{t-1} − n_t) ⊙ σ'(a_z)
        dx.append(torch.cat([da_r, da_z, da_n], dim=-1) @ w.w_ih)  # δx_t = W_ihᵀ [δa_r, δa_z, δa_n]
        # to h_{t-1}: directly through z_t ⊙ h_{t-1}, and through W_hh into r, z and (scaled by r_t) n
        dh_next = dh * z + torch.cat([da_r, da_z, da_n * r], dim=-1) @ w.w_hh
        dh_all[t] = dh
    layer.dh = dh_all
    return torch.stack(dx[::-1])


# -- RNN (torch.nn.RNN: tanh or relu) ------------------------------------------------------------------


def rnn_forward(x: Tensor, w: Weights, nonlinearity: str = "tanh") -> LayerTrace:
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    h = x.new_zeros(x.shape[1], w.w_hh.shape[1])
    hs = []
    for x_t in x.unbind(0):
        h = act(x_t @ w.w_ih.T + w.b_ih + h @ w.w_hh.T + w.b_hh)  # h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
        hs.append(h)
    return LayerTrace(torch.stack(hs), None, {})


def rnn_backward(layer: LayerTrace, w: Weights, dh_in: Tensor, nonlinearity: str = "tanh") -> Tensor:
    T, B, H = layer.h.shape
    dh_all, dx = torch.empty_like(layer.h), []
    dh_next = layer.h.new_zeros(B, H)
    for t in reversed(range(T)):
        h = layer.h[t]
        dh = dh_in[t] + dh_next  # δh_t = (head, layer above) + W_hhᵀ δa_{t+1}
        slope = 1 - h**2 if nonlinearity == "tanh" else (h > 0).to(h.dtype)  # tanh' = 1 − h_t²; relu' = [a > 0]
        da = dh * slope  # δa_t = δh_t ⊙ act'(a_t)
        dx.append(da @ w.w_ih)  # δx_t = W_ihᵀ δa_t
        dh_next = da @ w.w_hh  # to h_{t-1}: W_hhᵀ δa_t
        dh_all[t] = dh
    layer.dh = dh_all
    return torch.stack(dx[::-1])


# -- a whole model --------------------------------------------------------------------------------------


def trace_core(kind: str, x: Tensor, weights: list[Weights], nonlinearity: str = "tanh") -> list[LayerTrace]:
    """Forward every layer over x (T, B, I), bottom to top."""
    layers = []
    for w in weights:
        if kind == "lstm":
            layer = lstm_forward(x, w)
        elif kind == "gru":
            layer = gru_forward(x, w)
        else:
            layer = rnn_forward(x, w, nonlinearity)
        layers.append(layer)
        x = layer.h
    return layers


def backward_core(kind: str, layers: list[LayerTrace], weights: list[Weights], dy: Tensor,
                  nonlinearity: str = "tanh") -> Tensor:
    """From dy = ∂L/∂y_t (T, B, H), the head's gradient on the top layer's output, fill every layer's
    dh (and dc), top layer first; return dL/dx_t of the first layer's input."""
    d_from_above = dy
    for layer, w in zip(reversed(layers), reversed(weights), strict=True):
        if kind == "lstm":
            d_from_above = lstm_backward(layer, w, d_from_above)
        elif kind == "gru":
            d_from_above = gru_backward(layer, w, d_from_above)
        else:
            d_from_above = rnn_backward(layer, w, d_from_above, nonlinearity)
    return d_from_above


@torch.no_grad()
def trace(model: nn.Module, inputs: Tensor, batch: dict[str, Tensor],
          loss_fn: Callable[[Tensor, dict[str, Tensor]], Tensor], dtype: torch.dtype = torch.float64) -> Trace:
    """The gradient reaching every step of a `SequenceModel` (encoder -> core -> head) on one batch.

    inputs: the batch's inputs as the model takes them, (B, T) tokens or (B, T, D) values; `batch` is what
    `loss_fn(output, batch)` reads (the task's loss). Everything runs in `dtype` on copies of the weights:
    the model, its gradients and the random state are left untouched.
    """
    kind = core_kind(model.core)
    nonlinearity = getattr(model.core, "nonlinearity", "tanh")
    weights = core_weights(model.core, dtype)
    encoder, head = _float_copy(model.encoder, dtype), _float_copy(model.head, dtype)
    batch = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}
    if inputs.is_floating_point():
        inputs = inputs.to(dtype)
    x = encoder(inputs).transpose(0, 1).contiguous()  # (T, B, I)
    layers = trace_core(kind, x, weights, nonlinearity)

    with torch.enable_grad():  # ∂L/∂y_t through the head and the task's loss: the only autograd used
        y = layers[-1].h.detach().requires_grad_()  # (T, B, H)
        output = head(y[-1] if model.readout == "last" else y.transpose(0, 1))  # (B, C) or (B, T, C)
        loss = loss_fn(output, batch)
        (dy,) = torch.autograd.grad(loss, y)
    dx = backward_core(kind, layers, weights, dy, nonlinearity)
    return Trace(kind, x, layers, output.detach(), float(loss), dx, nonlinearity, weights)


def _float_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of an encoder or head in `dtype`, in eval mode, its parameters not requiring gradients."""
    import copy

    clone = copy.deepcopy(module).to(dtype).eval()
    clone.requires_grad_(False)
    return clone


SIGMOID_SATURATED = 0.05  # σ < 0.05 or σ > 0.95
TANH_SATURATED = 0.95  # |tanh| > 0.95
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
HISTOGRAM_BINS = 20
TANH_GATES = {"g", "n"}  # LSTM's cell candidate and GRU's candidate; every other gate is a sigmoid


# -- the numbers of one batch --------------------------------------------------------------------------


def summarize(trace) -> dict[str, Any]:
    """One batch's gradient flow and gate statistics (the JSON contract's `layers` and `grad_x`)."""
    layers = []
    for index, layer in enumerate(trace.layers):
        grad_h = step_norms(layer.dh)
        grad_c = step_norms(layer.dc) if layer.dc is not None else None
        entry: dict[str, Any] = {
            "layer": index,
            "grad_h": grad_h,
            "grad_c": grad_c,
            "grad_h_first_to_last": first_to_last(grad_h),
            "grad_c_first_to_last": first_to_last(grad_c) if grad_c is not None else None,
            "gates": {name: gate_stats(name, values) for name, values in layer.gates.items()},
            "c_abs_mean": layer.c.abs().mean(dim=(1, 2)).tolist() if layer.c is not None else None,
            "h_abs_mean": layer.h.abs().mean(dim=(1, 2)).tolist(),
        }
        if trace.kind == "rnn":
            entry["activation"] = activation_stats(layer.h, trace.nonlinearity)
        layers.append(entry)
    grad_x = step_norms(trace.dx)
    return {"loss": trace.loss, "layers": layers, "grad_x": grad_x, "grad_x_first_to_last": first_to_last(grad_x)}


def step_norms(grad) -> list[float]:
    """(T, B, N) gradients of the batch-mean loss -> per step, the mean over b of ‖B · grad[t, b]‖₂."""
    batch = grad.shape[1]
    return (grad * batch).norm(dim=-1).mean(dim=1).tolist()


def first_to_last(values: list[float]) -> float | None:
    return values[0] / values[-1] if values[-1] != 0 else None


def gate_stats(name: str, values) -> dict[str, Any]:
    """Mean, saturated fraction, quantiles and a histogram of one gate over every step, sequence and unit."""
    import numpy as np
    import torch

    flat = values.detach().reshape(-1)
    if name in TANH_GATES:
        saturated, low, high = flat.abs() > TANH_SATURATED, -1.0, 1.0
    else:
        saturated, low, high = (flat < SIGMOID_SATURATED) | (flat > 1 - SIGMOID_SATURATED), 0.0, 1.0
    counts = torch.histc(flat, bins=HISTOGRAM_BINS, min=low, max=high)
    quantiles = np.quantile(flat.cpu().numpy(), QUANTILES)  # numpy: torch.quantile caps its input size
    return {
        "mean": flat.mean().item(),
        "saturated": saturated.to(flat.dtype).mean().item(),
        "quantiles": {f"{q:g}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
        "histogram": {"edges": torch.linspace(low, high, HISTOGRAM_BINS + 1).tolist(),
                      "fraction": (counts / flat.numel()).tolist()},
    }


def activation_stats(h, nonlinearity: str) -> dict[str, Any]:
    """An RNN layer's h_t: saturated means |h| > 0.95 (tanh, where tanh' < 0.1) or h = 0 (relu, where relu' = 0)."""
    saturated = h.abs() > TANH_SATURATED if nonlinearity == "tanh" else h == 0
    return {"nonlinearity": nonlinearity, "mean": h.mean().item(),
            "saturated": saturated.to(h.dtype).mean().item()}
