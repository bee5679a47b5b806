"""The copy memory problem (Arjovsky, Shah & Bengio 2016, after Hochreiter & Schmidhuber 1997).

Tokens: 0 is the blank, 1..A the alphabet (A = `alphabet`, 8), A+1 the delimiter. A sequence of
length T + 2K (K = `n_symbols`, 10; T = `seq_len`) holds K symbols drawn uniformly from the alphabet,
T - 1 blanks, the delimiter, and K more blanks. The target, read at every step, is blank for the first
T + K steps and then the K symbols, in order. One example, K = 3, A = 8, T = 4 (delimiter 9):

    inputs   5 2 7 0 0 0 9 0 0 0
    targets  0 0 0 0 0 0 0 5 2 7          recall window: the last K steps

Baseline: the memoryless predictor says blank with certainty for the first T + K steps and guesses
uniformly over the alphabet in the recall window. Its cross-entropy, averaged over all T + 2K steps, is
K · ln A / (T + 2K) = 10 · ln 8 / (T + 20) nats (0.173 at T = 100), the "trivial" baseline; only a
network that carries the K symbols across the T blanks beats it. Recall accuracy of that predictor: 1/A.
Solved: test cross-entropy below 1% of the baseline — at most 0.01 · ln 8 ≈ 0.021 nats per recalled
symbol, i.e. a geometric-mean probability of at least 0.98 on the right symbol, which in practice means
a recall accuracy of 0.99 or more.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lstmlab.tasks.base import Splits, Task, TaskConfig, TaskSpec, widen


class CopyConfig(TaskConfig):
    name: Literal["copy"] = "copy"
    seq_len: int = Field(
        100, ge=1, description="Blank stretch T between the symbols and the recall (sequences are T + 2K long)."
    )
    n_symbols: int = Field(10, ge=1, le=1000, description="Symbols to remember and recall (K).")
    alphabet: int = Field(8, ge=2, le=1000, description="Alphabet size A the symbols are drawn from.")


class CopyTask(Task):
    name = "copy"
    Config = CopyConfig
    metric = "cross_entropy"
    higher_is_better = False
    loss_kind = "cross_entropy"

    cfg: CopyConfig

    @property
    def delimiter(self) -> int:
        return self.cfg.alphabet + 1

    def generate(self) -> tuple[Splits, dict[str, Any]]:
        rng = np.random.default_rng(self.cfg.seed)
        splits = {split: self._split(rng, n) for split, n in self.cfg.sizes().items()}
        info = {"blank": 0, "delimiter": self.delimiter, "vocab_size": self.cfg.alphabet + 2}
        return splits, info

    def _split(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        T, K = self.cfg.seq_len, self.cfg.n_symbols
        symbols = rng.integers(1, self.cfg.alphabet + 1, size=(n, K))
        inputs = np.zeros((n, T + 2 * K), dtype=np.int64)
        inputs[:, :K] = symbols
        inputs[:, T + K - 1] = self.delimiter
        targets = np.zeros((n, T + 2 * K), dtype=np.int64)
        targets[:, T + K :] = symbols
        return {"inputs": inputs, "targets": targets}

    def spec(self, info: dict[str, Any]) -> TaskSpec:
        vocab = self.cfg.alphabet + 2
        return TaskSpec(input_kind="tokens", input_size=vocab, output_size=vocab, readout="every")

    def baselines(self, splits: Splits, info: dict[str, Any]) -> dict[str, float]:
        K, A, T = self.cfg.n_symbols, self.cfg.alphabet, self.cfg.seq_len
        return {"trivial": K * math.log(A) / (T + 2 * K)}

    def solve_threshold(self, baselines: dict[str, float]) -> float:
        return 0.01 * baselines["trivial"]

    def score(self, output, batch) -> dict[str, tuple[Any, Any]]:
        import torch.nn.functional as F

        K = self.cfg.n_symbols
        out = widen(output)  # (B, T + 2K, C)
        target = batch["targets"]  # (B, T + 2K)
        total = F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1), reduction="sum")
        n = target.numel()
        recalled = (out[:, -K:].argmax(-1) == target[:, -K:]).sum()
        return {
            "loss": (total, n),
            "cross_entropy": (total, n),
            "recall_accuracy": (recalled, target.shape[0] * K),
        }
