"""The reference LSTM layer: one time step at a time, plain autograd, the equations as written.

This is the slow twin: every faster backend is tested against it. Gate order i, f, g, o (as torch.nn.LSTM).
"""

from __future__ import annotations

import torch
from torch import Tensor


def lstm_gates(
    x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four gates of one LSTM step. x (B, I), h (B, H) -> i, f, g, o, each (B, H)."""
    gates = x @ w_ih.T + h @ w_hh.T  # (B, 4H): W_i·x_t + W_h·h_{t-1}, all four gates at once
    if b_ih is not None:
        gates = gates + b_ih + b_hh  # + b_i + b_h
    i, f, g, o = gates.chunk(4, dim=-1)
    i = torch.sigmoid(i)  # i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)    input gate
    f = torch.sigmoid(f)  # f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)    forget gate
    g = torch.tanh(g)  # g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)      cell candidate
    o = torch.sigmoid(o)  # o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)    output gate
    return i, f, g, o


def lstm_cell(
    x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
) -> tuple[Tensor, Tensor]:
    """One LSTM step. x (B, I), h and c (B, H) -> (h', c')."""
    i, f, g, o = lstm_gates(x, h, w_ih, w_hh, b_ih, b_hh)
    c = f * c + i * g  # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h = o * torch.tanh(c)  # h_t = o_t ⊙ tanh(c_t)
    return h, c


def lstm_layer(
    x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Run one layer over a time-major sequence x (T, B, I) -> (y (T, B, H), h_T, c_T)."""
    h, c = h0, c0
    outputs = []
    for x_t in x.unbind(0):
        h, c = lstm_cell(x_t, h, c, w_ih, w_hh, b_ih, b_hh)
        outputs.append(h)
    return torch.stack(outputs), h, c
