"""How much memory a run needs, checked against what the machine (or the CUDA device) has before anything
is allocated, so that an oversized config is refused with a message instead of ending in an OOM kill.

The estimate of one run (K members of a pack need K times everything but the dataset), in bytes, with
P parameters of b bytes each (train.dtype), B = train.batch_size, T the sequence length, L layers of H units:

    dataset       every split's arrays (what generation writes); once more on a CUDA device
    parameters    P·b, and as much again for the gradients
    optimizer     adam, adamw: 2·P·b (first and second moments); rmsprop: P·b (+ P·b with momentum);
                  sgd: P·b with momentum, else 0
    best weights  P·b: the best-by-validation copy kept beside the model
    checkpoint    (2·P + optimizer)·b: the serialised model, best weights and optimizer state
    activations   what backpropagation through time keeps for one batch: B·T·L·H·k·b with k values per
                  unit and step (LSTM: gates i, f, g, o, c, tanh c, h ≈ 8; GRU ≈ 6; RNN ≈ 2), plus the
                  embedded inputs B·T·E·b and the outputs B·T·C·b three times (logits, softmax, gradient);
                  evaluation batches (no gradients) when they need more

Generating a dataset needs about twice its arrays (a task builds them from temporaries): `check_dataset`
measures the arrays of a tiny sample of the task (two sequences per split) and scales them to the config's
split sizes before anything else is generated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lstmlab.errors import UserError

VALUES_PER_UNIT = {"scratch-lstm": 8, "lstm": 8, "gru": 6, "rnn": 2}  # k above; 8 for a plugin core
GENERATION_PEAK = 2  # generating a dataset holds about twice its arrays


class TooBig(UserError):
    """A config that needs more memory than there is; the message names the keys that set the size."""


@dataclass
class Estimate:
    parts: dict[str, int]  # name -> bytes

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        return ", ".join(f"{name} {human(size)}" for name, size in self.parts.items() if size)


def human(size: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def estimate_run(cfg, dataset, device_type: str = "cpu", members: int = 1) -> Estimate:
    """The memory one run (or a pack of `members` runs of this architecture) needs; see the module docstring.
    `cfg` is a resolved ExperimentConfig (hidden_size set), `dataset` its loaded tasks.datasets.Dataset."""
    from lstmlab.models.sequence import parameter_count

    t, m, spec = cfg.train, cfg.model, dataset.spec
    b = 8 if t.dtype == "float64" else 4
    P = parameter_count(m, spec)
    moments = {"adam": 2, "adamw": 2, "rmsprop": 1 + (t.momentum > 0), "sgd": int(t.momentum > 0)}[t.optimizer]
    inputs = dataset.splits["train"]["inputs"]
    T = inputs.shape[1] if inputs.ndim > 1 else 1
    H, L, C = m.hidden_size, m.layers, spec.output_size
    E = (m.embedding_dim or H) if spec.input_kind == "tokens" else spec.input_size
    k = VALUES_PER_UNIT.get(m.type, 8)
    steps_out = T if spec.readout == "every" else 1

    def batch(size: int, stored: int, outputs: int) -> int:  # activations of one batch
        return size * (T * L * H * stored + T * E + steps_out * C * outputs) * b

    activations = max(batch(t.batch_size, k, 3), batch(t.eval_batch_size, 2, 2))
    on_device = dataset.nbytes * (2 if t.dtype == "float64" else 1) if device_type == "cuda" else 0
    return Estimate({
        "dataset": dataset.nbytes + on_device,
        "parameters and gradients": members * 2 * P * b,
        "optimizer state": members * moments * P * b,
        "best weights": members * P * b,
        "checkpoint": members * (2 + moments) * P * b,
        f"activations for a batch of {t.batch_size}": members * activations,
    })


def check_run(cfg, dataset, device, members: int = 1) -> Estimate:
    """Refuse a run (or a pack of `members` runs) that needs more memory than `device` (a torch.device) has
    free, naming the keys that set the size; return the estimate."""
    estimate = estimate_run(cfg, dataset, device.type, members)
    free, where = available(device)
    if free is not None and estimate.total > free:
        m, t = cfg.model, cfg.train
        keys = [f"model.hidden_size={m.hidden_size}", f"model.layers={m.layers}", f"train.batch_size={t.batch_size}"]
        if m.param_budget is not None:
            keys[0] = f"model.param_budget={m.param_budget} (hidden_size {m.hidden_size})"
        if getattr(cfg.task, "seq_len", None) is not None:
            keys.append(f"task.seq_len={cfg.task.seq_len}")
        pack = f" ({members} runs packed together)" if members > 1 else ""
        raise TooBig(
            f"{', '.join(keys)}: the run{pack} needs about {human(estimate.total)} ({estimate.describe()}), "
            f"but {human(free)} is {where}; lower model.hidden_size (or model.param_budget), model.layers, "
            "train.batch_size or the sequence length"
        )
    return estimate


def check_dataset(task_cfg) -> int | None:
    """Refuse a dataset whose generation needs more memory than is available; return its estimated bytes
    (None for a task whose size cannot be sampled, e.g. one that reads a user's file)."""
    sizes = task_cfg.sizes()
    if not all(isinstance(n, int) for n in sizes.values()):
        return None
    from lstmlab.tasks import make_task

    small = {split: min(2, n) for split, n in sizes.items()}
    try:
        sample = make_task(task_cfg.model_copy(update={f"n_{s}": n for s, n in small.items()})).generate()[0]
    except Exception:  # a task that cannot make so small a sample: the real generation will say why
        return None
    per_sequence = {s: sum(a.nbytes for a in sample[s].values()) / max(1, small[s]) for s in sizes}
    total = int(sum(per_sequence[s] * sizes[s] for s in sizes))
    free, where = available(None)
    if free is not None and GENERATION_PEAK * total > free:
        keys = [f"task.n_{s}={n}" for s, n in sizes.items()]
        if getattr(task_cfg, "seq_len", None) is not None:
            keys.append(f"task.seq_len={task_cfg.seq_len}")
        raise TooBig(
            f"{', '.join(keys)}: the {task_cfg.name} dataset's arrays take about {human(total)} and generating "
            f"them about {human(GENERATION_PEAK * total)}, but {human(free)} is {where}; lower the split sizes "
            "or the sequence length"
        )
    return total


def available(device) -> tuple[int | None, str]:
    """(bytes free, where) on a CUDA device, or in this machine's (or container's) memory otherwise."""
    if device is not None and device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {torch.cuda.get_device_name(device)}"
    limits = [x for x in (_meminfo_available(), _cgroup_available()) if x is not None]
    return (min(limits), "available in memory here") if limits else (None, "")


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    """A container's memory limit minus its use (cgroup v2, then v1); None without a limit."""
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit = Path("/sys/fs/cgroup", limit_file).read_text().strip()
            usage = int(Path("/sys/fs/cgroup", usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            return max(0, int(limit) - usage)
    return None
