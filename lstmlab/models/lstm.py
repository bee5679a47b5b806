"""The from-scratch LSTM: drop-ins for torch.nn.LSTMCell and torch.nn.LSTM.

Same constructor arguments, forward signatures, return values, parameter names and shapes, state_dict
keys and initialisation as torch, so an `nn.LSTM` state_dict loads here and gives the same outputs and
gradients (tests/test_lstm.py asserts it in float64 to 1e-10).

Where the arithmetic lives:

- The gate equations (gate order i, f, g, o) are written once, one line each, in
  `lstmlab.kernels.reference.lstm_cell`. `LSTMCell` calls that function.
- `LSTM` runs its layers through a kernel backend: a function `lstm_layer(x, h0, c0, w_ih, w_hh, b_ih,
  b_hh) -> (y, h_T, c_T)` that runs one layer over a whole time-major sequence. Which one is chosen by
  name (`backend="auto" | "reference" | "fused" | "triton"`) through `lstmlab.kernels.resolve` at
  forward time, per input device type, so a new backend plugs in without touching this file.

What `nn.LSTM` offers and this module does not: `bidirectional=True`, `proj_size > 0` and
`PackedSequence` input. Each raises with a message pointing at torch.nn.LSTM.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from lstmlab import kernels
from lstmlab.kernels.reference import lstm_cell

__all__ = ["LSTM", "LSTMCell"]

State = tuple[Tensor, Tensor]


def _check_sizes(input_size: int, hidden_size: int, bias: bool) -> None:
    """Argument checks shared by the cell and the layer stack, with torch's messages."""
    if not isinstance(bias, bool):
        raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be greater than zero")


def _reset_uniform(module: nn.Module, hidden_size: int) -> None:
    """torch's RNN initialisation: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)).

    Parameters are drawn in registration order, the same order torch uses, so under the same seed an
    lstmlab module starts from exactly the weights its torch twin would.
    """
    bound = 1.0 / math.sqrt(hidden_size)
    for parameter in module.parameters():
        nn.init.uniform_(parameter, -bound, bound)


def _checked_state(
    input: Tensor, hx: State | None, weight: Tensor, input_size: int, expected: tuple[int, ...], label: str
) -> State:
    """Check input dtype, feature size and the state's shape (torch's messages); zeros when hx is None.

    `expected` is the shape each of h and c must have; `label` names them in messages ("hx", "hidden").
    """
    if input.dtype != weight.dtype:
        raise ValueError(
            f"input dtype ({input.dtype}) does not match weight dtype ({weight.dtype}). "
            f"Convert input: input.to({weight.dtype}), or convert model: model.to({input.dtype})"
        )
    if input.size(-1) != input_size:
        raise RuntimeError(
            f"input.size(-1) must be equal to input_size. Expected {input_size}, got {input.size(-1)}"
        )
    if hx is None:
        zeros = torch.zeros(expected, dtype=input.dtype, device=input.device)
        return zeros, zeros
    for idx, value in enumerate(hx):
        if value.shape != expected:
            raise RuntimeError(f"Expected {label}[{idx}] size {expected}, got {list(value.shape)}")
    return hx


class LSTMCell(nn.Module):
    """One LSTM step, a drop-in for `torch.nn.LSTMCell`.

    forward(input, hx=None) -> (h', c')
        input  (B, I) or unbatched (I,)
        hx     optional (h, c), each (B, H) or unbatched (H,); zeros when omitted
        h', c' (B, H) or (H,)

    Parameters: weight_ih (4H, I), weight_hh (4H, H), bias_ih (4H,), bias_hh (4H,); rows in gate order
    [i | f | g | o]. With bias=False the two biases are None. The step itself is
    `lstmlab.kernels.reference.lstm_cell`, where each gate equation sits beside its line.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size, bias)
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_uniform(self, self.hidden_size)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        return s

    def forward(self, input: Tensor, hx: State | None = None) -> State:
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(
                        f"LSTMCell: Expected hx[{idx}] to be 1D or 2D, got {value.dim()}D instead"
                    )
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)  # (I,) -> (1, I)
            if hx is not None:
                hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        expected = (input.size(0), self.hidden_size)  # (B, H)
        hx = _checked_state(input, hx, self.weight_ih, self.input_size, expected, "hx")
        h, c = lstm_cell(input, hx[0], hx[1], self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if not batched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h, c


class LSTM(nn.Module):
    """A stack of LSTM layers over a sequence, a drop-in for `torch.nn.LSTM`.

    forward(input, hx=None) -> (output, (h_n, c_n))
        input   (T, B, I), or (B, T, I) with batch_first=True, or unbatched (T, I)
        hx      optional (h_0, c_0), each (L, B, H), or (L, H) for unbatched input; zeros when omitted
        output  (T, B, H) / (B, T, H) / (T, H): the last layer's hidden state at every step
        h_n,c_n (L, B, H) / (L, H): every layer's final state

    Parameters per layer k: weight_ih_l{k} (4H, I for k=0 else H), weight_hh_l{k} (4H, H), bias_ih_l{k}
    and bias_hh_l{k} (4H,) unless bias=False; rows in gate order [i | f | g | o].

    dropout: as nn.LSTM, applied to each layer's output before it feeds the next layer — never after
    the last layer, and only in training mode.

    backend (keyword only): which kernel runs each layer, one of `lstmlab.kernels.BACKEND_NAMES`.
    It is resolved at forward time for the input's device type (once per device type: `auto` warns at
    most once per module when it falls back) and the name that ran is kept in `self.last_backend`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if bidirectional:
            raise NotImplementedError(
                "lstmlab's LSTM does not support bidirectional=True; use torch.nn.LSTM for a bidirectional LSTM"
            )
        if proj_size != 0:
            raise NotImplementedError(
                f"lstmlab's LSTM does not support projections (proj_size={proj_size}); "
                "use torch.nn.LSTM for an LSTM with projections"
            )
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        _check_sizes(input_size, hidden_size, bias)
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first should be of type bool, got: {type(batch_first).__name__}")
        if not isinstance(num_layers, int) or isinstance(num_layers, bool):
            raise TypeError(f"num_layers should be of type int, got: {type(num_layers).__name__}")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        kernels.check_name(backend)

        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = False  # read by code written against nn.LSTM; always False here
        self.proj_size = 0
        self.backend = backend
        self.last_backend: str | None = None  # the backend the latest forward ran
        self._resolved_backends: dict[tuple[str, str], str] = {}  # (requested, device type) -> name

        factory = {"device": device, "dtype": dtype}
        self._all_weights: list[list[str]] = []  # per layer, parameter names in nn.LSTM's order
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else hidden_size
            shapes = {
                f"weight_ih_l{layer}": (4 * hidden_size, layer_input_size),
                f"weight_hh_l{layer}": (4 * hidden_size, hidden_size),
            }
            if bias:
                shapes[f"bias_ih_l{layer}"] = (4 * hidden_size,)
                shapes[f"bias_hh_l{layer}"] = (4 * hidden_size,)
            for name, shape in shapes.items():
                setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
            self._all_weights.append(list(shapes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_uniform(self, self.hidden_size)

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Per layer: [weight_ih, weight_hh] (+ [bias_ih, bias_hh]), as nn.LSTM.all_weights."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """No-op, for drop-in compatibility: there is no cuDNN weight buffer to compact here."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def _layer_function(self, device_type: str) -> Callable:
        """The kernel for this device type; resolved (and any fallback warned about) once per type."""
        key = (self.backend, device_type)
        if key not in self._resolved_backends:
            self._resolved_backends[key] = kernels.resolve(self.backend, device_type)
        self.last_backend = self._resolved_backends[key]
        return kernels.get(self.last_backend)

    def forward(self, input: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        if isinstance(input, PackedSequence):
            raise TypeError(
                "lstmlab's LSTM does not accept a PackedSequence; pad the batch, or use torch.nn.LSTM"
            )
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        if not batched:
            input = input.unsqueeze(0 if self.batch_first else 1)  # (T, I) -> (T, 1, I) / (1, T, I)
            if hx is not None:
                if hx[0].dim() != 2 or hx[1].dim() != 2:
                    raise RuntimeError(
                        "For unbatched 2-D input, hx and cx should also be 2-D but got "
                        f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                    )
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))  # (L, H) -> (L, 1, H)
        elif hx is not None and (hx[0].dim() != 3 or hx[1].dim() != 3):
            raise RuntimeError(
                "For batched 3-D input, hx and cx should also be 3-D but got "
                f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
            )

        x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I): kernels are time-major
        if x.size(0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        expected = (self.num_layers, x.size(1), self.hidden_size)  # (L, B, H)
        hx = _checked_state(x, hx, self.weight_ih_l0, self.input_size, expected, "hidden")

        layer_fn = self._layer_function(x.device.type)
        h_n, c_n = [], []
        for layer, weights in enumerate(self.all_weights):
            w_ih, w_hh, b_ih, b_hh = weights if self.bias else (*weights, None, None)
            x, h_T, c_T = layer_fn(x, hx[0][layer], hx[1][layer], w_ih, w_hh, b_ih, b_hh)  # x: (T, B, H)
            h_n.append(h_T)
            c_n.append(c_T)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)  # between layers only, as nn.LSTM

        output = x.transpose(0, 1) if self.batch_first else x
        h_n_t, c_n_t = torch.stack(h_n), torch.stack(c_n)  # (L, B, H)
        if not batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n_t, c_n_t = h_n_t.squeeze(1), c_n_t.squeeze(1)
        return output, (h_n_t, c_n_t)
