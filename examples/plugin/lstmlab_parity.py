"""An lstmlab plugin: one task (parity) and one recurrent core (the minimal gated unit).

The parity task: a sequence of random bits; the target, read at the last step, is their sum modulo 2.
One example, seq_len = 6:

    inputs   1 0 1 1 0 1
    target   0                 (four ones: even)

Baseline: the classes are balanced, so a guess scores accuracy 1/2, the "trivial" baseline.
Solved: the default rule, test accuracy above 0.95 (0.5 + 0.9 · 0.5).

The core, the minimal gated unit (Zhou et al. 2016), has one gate where the GRU has two:

    f_t = σ(W_f x_t + U_f h_{t-1} + b_f)
    h̃_t = tanh(W_h x_t + U_h (f_t ⊙ h_{t-1}) + b_h)
    h_t = (1 − f_t) ⊙ h_{t-1} + f_t ⊙ h̃_t
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from lstmlab.tasks.base import Splits, Task, TaskConfig, TaskSpec


class ParityConfig(TaskConfig):
    name: Literal["parity"] = "parity"
    seq_len: int = Field(8, ge=1, description="Bits per sequence (T).")


class ParityTask(Task):
    name = "parity"
    Config = ParityConfig
    metric = "accuracy"
    higher_is_better = True
    loss_kind = "cross_entropy"

    def generate(self) -> tuple[Splits, dict[str, Any]]:
        rng = np.random.default_rng(self.cfg.seed)
        splits = {}
        for split, n in self.cfg.sizes().items():
            bits = rng.integers(0, 2, size=(n, self.cfg.seq_len))
            splits[split] = {"inputs": bits.astype(np.int64), "targets": (bits.sum(axis=1) % 2).astype(np.int64)}
        return splits, {}

    def spec(self, info: dict[str, Any]) -> TaskSpec:
        return TaskSpec(input_kind="tokens", input_size=2, output_size=2, readout="last")

    def baselines(self, splits: Splits, info: dict[str, Any]) -> dict[str, float]:
        targets = splits["test"]["targets"]
        majority = int(np.bincount(splits["train"]["targets"]).argmax())
        return {"trivial": 0.5, "majority": float(np.mean(targets == majority))}


def make_mgu(input_size: int, cfg):
    """The lstmlab.cores factory: (input size, the run's model config) -> a batch-first core."""
    import torch
    from torch import nn

    class MGU(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            sizes = [input_size] + [cfg.hidden_size] * cfg.layers
            self.x_proj = nn.ModuleList(nn.Linear(i, 2 * cfg.hidden_size) for i in sizes[:-1])  # W_f; W_h
            self.h_proj = nn.ModuleList(nn.Linear(cfg.hidden_size, 2 * cfg.hidden_size, bias=False)
                                        for _ in range(cfg.layers))  # U_f; U_h

        def forward(self, x, state=None):  # x (B, T, D) -> (B, T, H), h_n (layers, B, H)
            H = cfg.hidden_size
            finals = []
            for layer, (x_proj, h_proj) in enumerate(zip(self.x_proj, self.h_proj)):
                wx_f, wx_h = x_proj(x).split(H, dim=-1)  # every step at once: (B, T, H) each
                u_f, u_h = h_proj.weight.split(H, dim=0)
                h = x.new_zeros(x.shape[0], H) if state is None else state[layer]
                outputs = []
                for t in range(x.shape[1]):
                    f = torch.sigmoid(wx_f[:, t] + h @ u_f.T)
                    candidate = torch.tanh(wx_h[:, t] + (f * h) @ u_h.T)
                    h = (1 - f) * h + f * candidate
                    outputs.append(h)
                x = torch.stack(outputs, dim=1)
                finals.append(h)
            return x, torch.stack(finals)

    return MGU()
