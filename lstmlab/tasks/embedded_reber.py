"""Next-symbol prediction on embedded Reber strings (Cleeremans et al. 1989; Hochreiter & Schmidhuber 1997, exp. 1).

The Reber grammar, as a graph: from each node two edges, each taken with probability 1/2.

    start --B--> 0      0 --T--> 1   0 --P--> 2      1 --S--> 1   1 --X--> 3      2 --T--> 2   2 --V--> 4
    3 --X--> 2   3 --S--> 5      4 --P--> 3   4 --V--> 5      5 --E--> end

An embedded Reber string is B, then T or P, then a whole Reber string, then the same T or P again, then E.
The model reads the string one symbol at a time and predicts the next one (readout at every step). One
example (tokens: 0 pad, 1..7 B T P S X V E):

    string   B T B P V V E T E
    inputs   B T B P V V E T          (the string without its last symbol)
    targets  T B P V V E T E          (the string without its first symbol)
    legal   {T,P} {B} {T,P} {T,V} {P,V} {E} {T} {E}

Every step but one has a successor set fixed by the grammar; the exception is the second T/P (here the
target after the inner E), which must repeat the first T/P, read ~5–30 steps earlier. The headline
metric `tp_accuracy` is the accuracy on that symbol alone. Baseline: T and P are equally likely, so a
predictor without memory — even one that knows the grammar — scores 1/2, the "trivial" baseline.
Also scored: `strings_correct`, the fraction of strings on which, at every step, the model's k most likely
symbols are exactly the k legal successors (k = 1 or 2); a memoryless grammar-perfect predictor gets 1/2.

Strings vary in length; they are right-padded with the pad token to `seq_len` - 1 steps, and a `mask`
array (1 on real steps) travels in each batch: masked steps count in neither the loss nor any metric.
Strings longer than `seq_len` are redrawn (rejection sampling; at the default 40 this redraws about 1
in 15,000 strings — lengths run from 9, mean 12, 99th percentile 23 — so the distribution barely moves).
Solved: `tp_accuracy` above 0.99.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from lstmlab.tasks.base import Splits, Task, TaskConfig, TaskSpec, widen

SYMBOLS = ("<pad>", "B", "T", "P", "S", "X", "V", "E")
PAD = 0
ID = {s: i for i, s in enumerate(SYMBOLS)}
# node -> ((symbol, next node), (symbol, next node)); node 5 ends the string with E
REBER = {
    0: (("T", 1), ("P", 2)),
    1: (("S", 1), ("X", 3)),
    2: (("T", 2), ("V", 4)),
    3: (("X", 2), ("S", 5)),
    4: (("P", 3), ("V", 5)),
    5: (("E", None),),
}


def reber_string(rng: np.random.Generator) -> str:
    """One Reber string, B ... E, taking each edge with probability 1/2."""
    out, node = ["B"], 0
    while node is not None:
        edges = REBER[node]
        symbol, node = edges[rng.integers(len(edges))] if len(edges) > 1 else edges[0]
        out.append(symbol)
    return "".join(out)


def embedded_reber_string(rng: np.random.Generator) -> str:
    outer = "TP"[rng.integers(2)]
    return "B" + outer + reber_string(rng) + outer + "E"


def _reber_successors(inner: str) -> list[set[str]] | None:
    """For a prefix walk of one Reber string: the legal next symbols after each of its symbols.

    Returns None if `inner` is not a whole Reber string.
    """
    if not inner.startswith("B"):
        return None
    node: int | None = 0
    legal = [{s for s, _ in REBER[0]}]
    for symbol in inner[1:]:
        if node is None:
            return None
        moves = dict(REBER[node])
        if symbol not in moves:
            return None
        node = moves[symbol]
        legal.append({s for s, _ in REBER[node]} if node is not None else set())
    return legal if node is None else None


def legal_successors(string: str) -> list[set[str]] | None:
    """The legal next symbols after each symbol of an embedded Reber string (empty after the final E).

    This is the grammar recogniser: it returns None when `string` is not an embedded Reber string.
    """
    if len(string) < 4 or string[0] != "B" or string[1] not in "TP" or string[-2:] != string[1] + "E":
        return None
    inner = _reber_successors(string[2:-2])
    if inner is None:
        return None
    return [{"T", "P"}, {"B"}] + inner[:-1] + [{string[1]}, {"E"}, set()]


def accepts(string: str) -> bool:
    return legal_successors(string) is not None


class EmbeddedReberConfig(TaskConfig):
    name: Literal["embedded-reber"] = "embedded-reber"
    seq_len: int = Field(
        40,
        ge=12,
        le=1000,
        description="Longest string kept (symbols B..E); longer draws are redrawn. Arrays hold seq_len - 1 steps.",
    )


class EmbeddedReberTask(Task):
    name = "embedded-reber"
    Config = EmbeddedReberConfig
    metric = "tp_accuracy"
    higher_is_better = True
    loss_kind = "cross_entropy"

    cfg: EmbeddedReberConfig

    def generate(self) -> tuple[Splits, dict[str, Any]]:
        rng = np.random.default_rng(self.cfg.seed)
        splits = {split: self._split(rng, n) for split, n in self.cfg.sizes().items()}
        return splits, {"symbols": list(SYMBOLS)}

    def _split(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        T, C = self.cfg.seq_len - 1, len(SYMBOLS)
        inputs = np.full((n, T), PAD, dtype=np.int64)
        targets = np.full((n, T), PAD, dtype=np.int64)
        mask = np.zeros((n, T), dtype=np.bool_)
        legal = np.zeros((n, T, C), dtype=np.bool_)  # legal[i, t, c]: symbol c may follow inputs[i, :t+1]
        tp_pos = np.zeros(n, dtype=np.int64)  # step whose target is the second T/P
        for i in range(n):
            string = embedded_reber_string(rng)
            while len(string) > self.cfg.seq_len:
                string = embedded_reber_string(rng)
            ids = [ID[s] for s in string]
            steps = len(ids) - 1
            inputs[i, :steps] = ids[:-1]
            targets[i, :steps] = ids[1:]
            mask[i, :steps] = True
            for t, successors in enumerate(legal_successors(string)[:-1]):
                legal[i, t, [ID[s] for s in successors]] = True
            tp_pos[i] = steps - 2
        return {"inputs": inputs, "targets": targets, "mask": mask, "legal": legal, "tp_pos": tp_pos}

    def spec(self, info: dict[str, Any]) -> TaskSpec:
        return TaskSpec(input_kind="tokens", input_size=len(SYMBOLS), output_size=len(SYMBOLS), readout="every")

    def baselines(self, splits: Splits, info: dict[str, Any]) -> dict[str, float]:
        test = splits["test"]
        second = test["targets"][np.arange(len(test["targets"])), test["tp_pos"]]
        share_t = float(np.mean(second == ID["T"]))
        return {"trivial": 0.5, "majority": max(share_t, 1.0 - share_t)}

    def solve_threshold(self, baselines: dict[str, float]) -> float:
        return 0.99

    # -- scoring: masked steps count nowhere --------------------------------------------------------
    def loss(self, output, batch):
        import torch.nn.functional as F

        mask = batch["mask"].bool()
        return F.cross_entropy(widen(output)[mask], batch["targets"][mask])

    def score(self, output, batch) -> dict[str, tuple[Any, Any]]:
        import torch
        import torch.nn.functional as F

        out = widen(output)  # (B, T, C)
        target, mask, legal = batch["targets"], batch["mask"].bool(), batch["legal"].bool()
        rows = torch.arange(out.shape[0], device=out.device)
        total = F.cross_entropy(out[mask], target[mask], reduction="sum")
        tp_pos = batch["tp_pos"].long()
        tp_right = (out[rows, tp_pos].argmax(-1) == target[rows, tp_pos]).sum()
        # the k most likely symbols are the k legal ones  <=>  every legal logit beats every illegal one
        lowest_legal = out.masked_fill(~legal, float("inf")).amin(-1)  # (B, T)
        highest_illegal = out.masked_fill(legal, float("-inf")).amax(-1)  # (B, T)
        step_right = (lowest_legal > highest_illegal) | ~mask
        strings_right = step_right.all(-1).sum()
        n = out.shape[0]
        return {
            "loss": (total, mask.sum()),
            "tp_accuracy": (tp_right, n),
            "strings_correct": (strings_right, n),
        }
