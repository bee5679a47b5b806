"""What every sequence task provides.

A task is a class with a pydantic `Config` (its own keys, plus the split sizes and data seed shared by
all), and methods to generate the splits, state the trivial baselines, and score a model's output.
Datasets on disk are written and verified by `lstmlab.tasks.datasets`; a task never touches files.

Shapes: `inputs` are (N, T) int64 tokens or (N, T, D) float32 values. The model reads every step;
its head answers at the last step (`readout="last"`: output (B, C)) or at every step
(`readout="every"`: output (B, T, C)).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_serializer

from lstmlab.schema import SEED_MAX, Section

SPLITS = ("train", "val", "test")


class TaskConfig(Section):
    """Keys every task has. A task's own Config subclasses this and adds its keys."""

    name: str = Field(description="Task registry name.")
    n_train: int = Field(10_000, ge=1, description="Sequences (or windows) in the training split.")
    n_val: int = Field(1_000, ge=1, description="Sequences in the validation split.")
    n_test: int = Field(1_000, ge=1, description="Sequences in the test split.")
    seed: int = Field(1234, ge=0, le=SEED_MAX, description="Seed of the data generator (independent of train.seed).")
    solve_threshold: float | None = Field(
        None, description="A run whose test metric beats this (≤ for a loss, ≥ for an accuracy) counts as solved; "
                          "null keeps the task's own threshold (arrays tasks have none unless it is set). A scoring "
                          "choice, not part of the data: it does not change the dataset.")

    def sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}

    @model_serializer(mode="wrap")
    def _threshold_only_when_set(self, handler):
        """A null solve_threshold is left out of dumps (config.yaml, the checkpoint's config sha256): a run folder
        written before the key existed still holds "the same config", so train resumes or skips it as before."""
        data = handler(self)
        if isinstance(data, dict) and "solve_threshold" in data and data["solve_threshold"] is None:
            del data["solve_threshold"]
        return data


@dataclass(frozen=True)
class TaskSpec:
    """What a model needs to know to fit a task's data."""

    input_kind: Literal["real", "tokens"]
    input_size: int  # features per step (real) or vocabulary size (tokens)
    output_size: int  # regression outputs or number of classes
    readout: Literal["last", "every"]


Splits = dict[str, dict[str, np.ndarray]]  # split -> array name -> array; every split has "inputs", "targets"


class Task(ABC):
    """A sequence task, bound to one config."""

    name: ClassVar[str]
    Config: ClassVar[type[TaskConfig]]
    metric: ClassVar[str]  # headline test metric, a column of metrics.csv
    higher_is_better: ClassVar[bool]
    loss_kind: ClassVar[Literal["mse", "cross_entropy"]]

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg

    @abstractmethod
    def generate(self) -> tuple[Splits, dict[str, Any]]:
        """Make every split from `cfg.seed` alone; also return task info (JSON-able, e.g. a vocabulary)."""

    @abstractmethod
    def spec(self, info: dict[str, Any]) -> TaskSpec:
        """Input/output sizes and readout, given the info `generate` returned."""

    @abstractmethod
    def baselines(self, splits: Splits, info: dict[str, Any]) -> dict[str, float]:
        """The headline metric of trivial predictors on the test split. Must contain "trivial"."""

    def sources(self, info: dict[str, Any]) -> list[Path]:
        """Files outside lstmlab that `generate` read (a user's arrays, a text corpus), right after it ran.

        Their sha256 goes into meta.json and is checked on every load: a dataset whose source changed is
        refused, as a changed dataset file is. Synthetic tasks read none.
        """
        return []

    def solve_threshold(self, baselines: dict[str, float]) -> float | None:
        """The task's own threshold: a run whose test metric beats it counts as having solved the task.
        Default: 10% of the trivial baseline for a loss; 90% of the way from the baseline to 1 for an accuracy."""
        trivial = baselines["trivial"]
        return 0.1 * trivial if not self.higher_is_better else trivial + 0.9 * (1.0 - trivial)

    def threshold(self, baselines: dict[str, float]) -> float | None:
        """The threshold that decides `solved`: the user's `task.solve_threshold` when set, else the task's own."""
        if self.cfg.solve_threshold is not None:
            return float(self.cfg.solve_threshold)
        return self.solve_threshold(baselines)

    # -- scoring (tensors) --------------------------------------------------------------------------
    def loss(self, output, batch):
        """Mean training loss of one batch (a scalar tensor)."""
        import torch.nn.functional as F

        target = batch["targets"]
        out = widen(output)
        if self.loss_kind == "mse":
            return F.mse_loss(out, target.to(out.dtype))
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))

    def score(self, output, batch) -> dict[str, tuple[Any, Any]]:
        """Sums and counts of each metric over one batch, so that evaluation over many batches is exact.

        Always includes "loss"; includes `self.metric`. A sum or count may be a device scalar (a tensor):
        training adds them up on the device and reads them once per evaluation.
        """
        import torch.nn.functional as F

        target = batch["targets"]
        out = widen(output)
        if self.loss_kind == "mse":
            total = F.mse_loss(out, target.to(out.dtype), reduction="sum")
            n = target.numel()
            scores = {"loss": (total, n)}
            if self.metric == "mse":
                scores["mse"] = (total, n)
            return scores
        logits = out.reshape(-1, out.shape[-1])
        flat = target.reshape(-1)
        total = F.cross_entropy(logits, flat, reduction="sum")
        correct = (logits.argmax(-1) == flat).sum()
        n = flat.numel()
        return {"loss": (total, n), "accuracy": (correct, n)}


def data_config(cfg: TaskConfig) -> dict[str, Any]:
    """The task config as the dataset sees it (JSON-able): every key but the scoring choice `solve_threshold`,
    so that setting a threshold neither regenerates nor renames a dataset."""
    return cfg.model_dump(mode="json", exclude={"solve_threshold"})


def widen(tensor):
    """Losses and scores in float32 at least: a bfloat16 or float16 output is widened, a float64 one kept."""
    import torch

    return tensor if tensor.dtype == torch.float64 else tensor.float()
