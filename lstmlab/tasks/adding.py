"""The adding problem, two-channel form (Le, Jaitly & Hinton 2015; Arjovsky et al. 2016).

Each step carries two numbers: a value drawn from U[0, 1] and a marker, 1 at exactly two steps and 0
elsewhere. The target, read at the last step, is the sum of the two marked values. One example, T = 6,
placement "halves" (one marker in each half):

    values  0.31  0.87  0.05  0.62  0.44  0.19
    markers 0     1     0     0     1     0         target = 0.87 + 0.44 = 1.31

Baseline: predicting 1 for every sequence gives MSE = Var(u1 + u2) = 2 · 1/12 = 1/6 ≈ 0.167, the
"trivial" baseline; a network must carry both values across up to T steps to beat it.
Solved: test MSE below 0.01 · 1/6 — about 1/100 of the baseline error.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from lstmlab.tasks.base import Splits, Task, TaskConfig, TaskSpec


class AddingConfig(TaskConfig):
    name: Literal["adding"] = "adding"
    seq_len: int = Field(100, ge=2, description="Steps per sequence (T).")
    placement: Literal["halves", "anywhere"] = Field(
        "halves",
        description="Where the two markers go: one in each half (as in the uRNN code) or anywhere.",
    )


class AddingTask(Task):
    name = "adding"
    Config = AddingConfig
    metric = "mse"
    higher_is_better = False
    loss_kind = "mse"

    cfg: AddingConfig

    def generate(self) -> tuple[Splits, dict[str, Any]]:
        rng = np.random.default_rng(self.cfg.seed)
        return {split: self._split(rng, n) for split, n in self.cfg.sizes().items()}, {}

    def _split(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        T = self.cfg.seq_len
        values = rng.uniform(0.0, 1.0, size=(n, T))
        if self.cfg.placement == "halves":
            half = T // 2
            first = rng.integers(0, half, size=n)
            second = rng.integers(half, T, size=n)
        else:  # two distinct positions anywhere
            first = rng.integers(0, T, size=n)
            second = (first + rng.integers(1, T, size=n)) % T
        markers = np.zeros((n, T))
        rows = np.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        inputs = np.stack([values, markers], axis=-1).astype(np.float32)  # (N, T, 2)
        targets = (values[rows, first] + values[rows, second]).astype(np.float32)[:, None]  # (N, 1)
        return {"inputs": inputs, "targets": targets}

    def spec(self, info: dict[str, Any]) -> TaskSpec:
        return TaskSpec(input_kind="real", input_size=2, output_size=1, readout="last")

    def baselines(self, splits: Splits, info: dict[str, Any]) -> dict[str, float]:
        targets = splits["test"]["targets"].astype(np.float64)
        return {
            "trivial": float(np.mean((targets - 1.0) ** 2)),  # predict 1: E = 1/6
            "analytic": 1.0 / 6.0,
        }

    def solve_threshold(self, baselines: dict[str, float]) -> float:
        return 0.01 * baselines["analytic"]
