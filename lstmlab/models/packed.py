"""PackedModel: K member SequenceModels of one architecture, run as one model.

A pack trains K runs that differ only in keys that leave shapes alone (seed, learning rate, ...). Each
member is the SequenceModel its run would build alone, with its own parameters, optimizer and dropout
masks; only the arithmetic is shared. For scratch-lstm members every recurrent layer runs once for all
members through the stacked kernel, on weights stacked along a leading member axis:

    inputs   (K, B, T, D) values or (K, B, T) tokens       one batch per member (each its own batch order)
    encoder  per member: SequenceModel.encode (identity, or its own Embedding)   -> x (K, B, T, E)
    layer l  kernels.get_stacked(backend)(x (K, T, B, I), h0, c0 (K, B, H),
                                          stack(W_ih) (K, 4H, I), stack(W_hh) (K, 4H, H),
                                          stack(b_ih), stack(b_hh) (K, 4H))     -> y (K, T, B, H)
             then per member, between layers only: dropout under that member's own RNG state
    head     per member: SequenceModel.read_out (its own Linear) -> (K, B, C) last step, or (K, B, T, C)

torch.stack keeps the member parameters the leaves: autograd hands each member the gradient of its own
loss (members never mix: member k of the stacked kernel is the plain layer on member k's slices).

Dropout masks come from the global RNG, as in an unpacked run; each member's RNG state is swapped in
around its own draws and saved after them, so member k draws exactly the masks it would draw alone.
Other model types (torch.nn's LSTM, GRU, RNN) run member by member through their own forward, under
the same RNG swap; they are packed one to a pack in practice (see lstmlab.run.packing).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstmlab import kernels
from lstmlab.models.lstm import LSTM
from lstmlab.models.sequence import SequenceModel


class MemberRNG:
    """The global RNG state of one member (CPU, plus CUDA where the member's dropout runs there).

    `with rng.active():` makes it the global state for the block and keeps what the block drew.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.cpu_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state(device) if self.cuda else None

    @contextmanager
    def active(self):
        outer_cpu = torch.get_rng_state()
        outer_cuda = torch.cuda.get_rng_state(self.device) if self.cuda else None
        torch.set_rng_state(self.cpu_state)
        if self.cuda:
            torch.cuda.set_rng_state(self.cuda_state, self.device)
        try:
            yield
        finally:
            self.cpu_state = torch.get_rng_state()
            torch.set_rng_state(outer_cpu)
            if self.cuda:
                self.cuda_state = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(outer_cuda, self.device)

    def state_dict(self) -> dict[str, Tensor | None]:
        return {"torch": self.cpu_state, "cuda": self.cuda_state}

    def load_state_dict(self, state: dict[str, Tensor | None]) -> None:
        self.cpu_state = state["torch"]
        if self.cuda and state.get("cuda") is not None:
            self.cuda_state = state["cuda"]


def stackable(members: Sequence[SequenceModel]) -> bool:
    """Whether the members' recurrent cores can run through the stacked kernel: scratch LSTMs of one shape."""
    cores = [m.core for m in members]
    if not all(isinstance(core, LSTM) and core.bias for core in cores):
        return False
    shapes = {tuple((n, tuple(p.shape)) for n, p in core.named_parameters()) for core in cores}
    backends = {core.backend for core in cores}
    readouts = {m.readout for m in members}
    return len(shapes) == len(backends) == len(readouts) == 1


class PackedModel(nn.Module):
    """K member SequenceModels; `forward(inputs, active)` runs the members listed in `active` at once.

    members: the members, each built as its run builds it alone (its own seed).
    rngs:    each member's RNG for its dropout masks (by default: the global state now, for every member).
    """

    def __init__(self, members: Sequence[SequenceModel], rngs: Sequence[MemberRNG] | None = None):
        super().__init__()
        if not members:
            raise ValueError("a pack needs at least one member")
        self.members = nn.ModuleList(members)
        device = next(members[0].parameters()).device
        self.rngs = list(rngs) if rngs is not None else [MemberRNG(device) for _ in members]
        if len(self.rngs) != len(members):
            raise ValueError(f"{len(members)} members but {len(self.rngs)} RNG states")
        self.stacked = stackable(members)
        self.backend: str | None = None  # the kernel backend that ran (scratch-lstm members), once resolved

    def __len__(self) -> int:
        return len(self.members)

    def forward(self, inputs: Tensor, active: Sequence[int] | None = None) -> Tensor:
        """inputs (K', B, T[, D]) for the members `active` (default: all, K' = K) -> (K', B, C) or (K', B, T, C)."""
        active = list(range(len(self.members))) if active is None else list(active)
        if len(inputs) != len(active):
            raise ValueError(f"inputs hold {len(inputs)} members' batches for {len(active)} active members")
        if not self.stacked:
            outputs = []
            for j, k in enumerate(active):
                with self.rngs[k].active():
                    outputs.append(self.members[k](inputs[j]))
            return torch.stack(outputs)
        return self._stacked_forward(inputs, active)

    def _stacked_forward(self, inputs: Tensor, active: list[int]) -> Tensor:
        members = [self.members[k] for k in active]
        first = members[0]
        core: LSTM = first.core  # type: ignore[assignment]
        if isinstance(first.encoder, nn.Identity):
            x = inputs  # (K', B, T, D): values pass through SequenceModel.encode unchanged
        else:
            x = torch.stack([m.encode(inputs[j]) for j, m in enumerate(members)])  # (K', B, T, E)
        x = x.transpose(1, 2)  # (K', T, B, E): kernels are time-major
        layer_fn = self._layer_function(x.device.type)
        state = x.new_zeros(len(active), x.shape[2], core.hidden_size)  # h0 = c0 = 0: (K', B, H)
        for layer in range(core.num_layers):
            w_ih, w_hh, b_ih, b_hh = (
                torch.stack([getattr(m.core, f"{name}_l{layer}") for m in members])
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )  # (K', 4H, I), (K', 4H, H), (K', 4H), (K', 4H)
            x, _, _ = layer_fn(x, state, state, w_ih, w_hh, b_ih, b_hh)  # (K', T, B, H)
            if self.training and layer < core.num_layers - 1 and any(m.core.dropout > 0 for m in members):
                x = torch.stack([self._dropout(x[j], k) for j, k in enumerate(active)])
        y = x.transpose(1, 2)  # (K', B, T, H)
        return torch.stack([m.read_out(y[j]) for j, m in enumerate(members)])  # (K', B, C) or (K', B, T, C)

    def _dropout(self, x: Tensor, k: int) -> Tensor:
        """Member k's dropout between layers, as nn.LSTM applies it, with member k's own masks."""
        p = self.members[k].core.dropout
        if p == 0:
            return x
        with self.rngs[k].active():
            return F.dropout(x, p, training=True)

    def _layer_function(self, device_type: str):
        if self.backend is None:
            self.backend = kernels.resolve(self.members[0].core.backend, device_type)
        return kernels.get_stacked(self.backend)
