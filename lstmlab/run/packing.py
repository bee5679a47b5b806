"""Which runs train together: the pack key, and the plan that turns a sweep's runs into units of work.

A pack is a group of runs that share an architecture and a data stream shape, trained in one process
through one stacked kernel (see lstmlab.models.packed). Packing is an execution choice, not part of a
run's identity: every member writes the run folder, and the numbers, it would write alone.

Runs pack together when their resolved configs are equal outside MEMBER_KEYS: the keys that change
neither a tensor shape nor the pack's shared loop. Those may differ member by member because every
member keeps its own copy of what they drive: its seed (initial weights, batch order, dropout masks),
its torch.optim optimizer of its own type and hyperparameters, its learning-rate schedule, its gradient
clipping, its early stopping, its initial forget-gate bias and its dropout probability. Everything else
must be equal: the task (the dataset), model type, layers, resolved hidden size, embedding size, weight
tying, backend, device, dtype, precision, threads, batch size, steps, evaluation cadence and batch size.
A key added to the schema later is shared by default, so a new key never packs runs it should not.

Only scratch-lstm runs pack: torch.nn's LSTM, GRU and RNN run through torch's own kernels, which have no
member axis, so each such run is a unit of its own (the same as `--pack 1`).

A resumed sweep regroups members by the step their checkpoints hold: members stopped at different steps
by an unlucky kill form different packs, and each still continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from lstmlab.config import ExperimentConfig

MEMBER_KEYS = (
    "train.seed",
    "train.optimizer",
    "train.lr",
    "train.weight_decay",
    "train.momentum",
    "train.grad_clip",
    "train.schedule",
    "train.warmup_steps",
    "train.min_lr_ratio",
    "train.plateau_factor",
    "train.plateau_patience",
    "train.early_stop_patience",
    "model.forget_bias",
    "model.dropout",
    "model.param_budget",  # once the hidden size is resolved, the budget that led to it changes nothing
)
PACKABLE_TYPES = ("scratch-lstm",)

# `--pack auto`, on each device type: the most members a pack may hold, and what a pack costs, in member
# steps: a pack of K costs about K + PACK_OVERHEAD. With a = a member's own share of a step and b = the pack's
# fixed share, a run alone costs a + b and a pack of K costs K·a + b, so PACK_OVERHEAD = b / a, solved from the
# two per-member-step CPU times in docs/benchmarks.md, "Packed training: a whole study" (which also shows that
# past AUTO_PACK["cpu"] members a bigger pack buys nothing there). On CUDA a pack's step is bound by launching
# small operations, not by arithmetic (docs/benchmarks.md, "A whole study on CUDA"), so bigger packs are cheaper
# per member; the CUDA cap is a cap, not a measured optimum, and PACK_OVERHEAD is the CPU's (`lstmlab bench
# --study ... --pack K` measures a device, and `--pack K` sets a size).
AUTO_PACK = {"cpu": 16, "cuda": 64}
PACK_OVERHEAD = 0.6


@dataclass(frozen=True)
class Point:
    """One run of a sweep: its resolved config (hidden size written out), its run name, its checkpoint step."""

    cfg: ExperimentConfig
    name: str
    step: int = 0  # the step its checkpoint holds; 0 for a fresh run


@dataclass(frozen=True)
class Unit:
    """A piece of work for one process: the runs of one pack (or one run alone), all at the same step."""

    points: tuple[Point, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.points]

    def __len__(self) -> int:
        return len(self.points)


def pack_key(cfg: ExperimentConfig) -> str | None:
    """What must be equal for two resolved runs to share a pack (canonical JSON); None when the run never packs."""
    if cfg.model.type not in PACKABLE_TYPES:
        return None
    raw = cfg.model_dump(mode="json")
    for key in MEMBER_KEYS:
        section, name = key.split(".")
        raw[section].pop(name)
    return json.dumps(raw, sort_keys=True, separators=(",", ":"))


def parse_pack(text: str) -> int | str:
    """`--pack` as given: "auto", or a positive integer. UserError otherwise."""
    from lstmlab.errors import UserError

    if text == "auto":
        return text
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < 1:
        raise UserError(f"--pack: expected a positive integer or auto, got {text!r}")
    return size


def auto_pack_size(device_type: str, group_sizes: Sequence[int], jobs: int = 1) -> int:
    """The pack size of `--pack auto`: of the sizes up to AUTO_PACK, the one whose packs finish soonest on
    `jobs` workers (a pack of K costs K + PACK_OVERHEAD; packs go largest first to the least busy worker);
    on a tie the smaller (the largest pack the split makes). With one worker that means the fewest packs; with
    more, packs that keep every worker busy (3 groups of 10 runs on 2 workers: packs of 5, three per worker,
    not packs of 10, two on one worker and one on the other)."""
    most = AUTO_PACK.get(device_type, AUTO_PACK["cpu"])
    return min(range(1, most + 1), key=lambda k: (makespan(group_sizes, k, jobs), k))


def makespan(group_sizes: Sequence[int], pack: int, jobs: int) -> float:
    """When the last of `jobs` workers ends, in runs' work, with the groups split into balanced packs."""
    costs = sorted((size + PACK_OVERHEAD for n in group_sizes for size in balanced_sizes(n, pack)), reverse=True)
    loads = [0.0] * max(1, jobs)
    for cost in costs:
        loads[loads.index(min(loads))] += cost
    return max(loads)


def balanced_sizes(n: int, most: int) -> list[int]:
    """Split n members into the fewest packs of at most `most`, sizes differing by at most one: 10, 4 -> 4, 3, 3."""
    count = math.ceil(n / most)
    return [n // count + (1 if i < n % count else 0) for i in range(count)]


def groups(points: Sequence[Point]) -> list[list[Point]]:
    """Points that may share a pack: same pack key and checkpoint step, in order of first appearance
    (a point that never packs is a group of its own)."""
    found: dict[tuple, list[Point]] = {}
    for i, point in enumerate(points):
        key = pack_key(point.cfg)
        found.setdefault((key, point.step) if key is not None else (None, i), []).append(point)
    return list(found.values())


def plan(points: Sequence[Point], pack: int) -> list[Unit]:
    """Group points into units: packs of at most `pack` members sharing a pack key and a checkpoint step.

    Groups keep the order in which their first point appears, and members keep the sweep's order, so
    the same sweep always gives the same plan. `pack=1` gives one unit per point.
    """
    if pack < 1:
        raise ValueError(f"pack size must be at least 1, got {pack}")
    units = []
    for members in groups(points):
        start = 0
        for size in balanced_sizes(len(members), pack):
            units.append(Unit(tuple(members[start : start + size])))
            start += size
    return units
