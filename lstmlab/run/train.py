"""train(a pack of runs) -> their run folders. Read it top to bottom: claim, restore, step, evaluate, finish.

A pack is one run, or several runs of one architecture that differ only in keys that leave shapes alone
(lstmlab.run.packing says which), trained together in this process: their recurrent layers run through one
stacked kernel (lstmlab.models.packed). Everything else is each member's own, exactly as when it trains
alone: initial weights (built under its own seed), batch order, dropout masks, optimizer, learning rate,
gradient clipping, early stopping, best-by-validation weights, test evaluation and run folder. So a run's
folder and numbers do not depend on the pack it trained in; an unpacked run is a pack of one.

Each member's folder is locked while the pack trains (lstmlab.run.folder says what that guarantees). A member
resumes from its checkpoint, is skipped when it already completed, and is frozen (no further updates)
when it stops early or fails — a loss or an evaluated metric that is not finite (NaN or ±inf) fails that
member alone; the others go on.

The loop keeps host synchronisation to the evaluations: per-step sums (loss, metrics, gradient norm) stay
on the device, and a non-finite loss is found when the evaluation reads them.

What watches the loop — progress bars, live TensorBoard logging, diagnostics.csv, the test hooks — is handed in
as observers (lstmlab.run.observers): the loop calls on_step, on_rows and on_finish and knows nothing else of
them. For one run alone, top to bottom with no pack, read lstmlab.run.single first: it trains to the same numbers.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lstmlab import files, kernels, memory, plugins
from lstmlab.config import ExperimentConfig, check_threads
from lstmlab.errors import UserError
from lstmlab.models.packed import MemberRNG, PackedModel
from lstmlab.models.sequence import CORES, build_model, count_parameters, resolve_hidden_size
from lstmlab.run.convergence import run_converged
from lstmlab.run.diagnostics import check_traceable
from lstmlab.run.env import data_source, environment, pick_device
from lstmlab.run.folder import DIAGNOSTICS, RunBusy, RunFolder, RunInterrupted, run_name
from lstmlab.run.observers import Observer, Observers, observers_for
from lstmlab.run.options import UnitOptions, unit_options
from lstmlab.run.packing import pack_key
from lstmlab.tasks import make_task
from lstmlab.tasks.datasets import load as load_dataset

# metrics.csv columns around the task's own metrics
LEAD_COLUMNS = ["step", "epoch", "split", "loss"]
TAIL_COLUMNS = ["lr", "grad_norm", "elapsed_s", "seq_per_s"]


class RunFailed(Exception):
    """A run stopped with an error (NaN loss, an exception); its summary says `failed` and why."""

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


@dataclass
class RunResult:
    """What became of one run of a pack."""

    name: str
    path: Path | None
    status: str  # completed | skipped (already completed) | busy | refused | failed
    summary: dict[str, Any] = field(default_factory=dict)
    error: Exception | None = field(default=None, repr=False)  # why, for busy | refused | failed


# -- the running state --------------------------------------------------------------------------------


@dataclass
class Interval:
    """What happened between two evaluations, summed on the device and read once, at the evaluation."""

    steps: int = 0
    seqs: int = 0
    seconds: float = 0.0  # training wall time (evaluations not counted)
    grad_norm: Any = 0.0  # Σ ‖g‖ over the steps (a device scalar once a step has run)
    scores: dict[str, list] = field(default_factory=dict)  # metric -> [Σ, count]; "loss" included
    losses: list = field(default_factory=list)  # each step's training loss, to name the first non-finite one

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor, scores: dict, seqs: int) -> None:
        self.steps += 1
        self.seqs += seqs
        self.grad_norm = self.grad_norm + grad_norm.double()
        self.losses.append(loss)
        accumulate(self.scores, scores)

    def first_nonfinite(self) -> tuple[int, float] | None:
        """(steps into the interval, value) of the first training loss that is not finite, or None."""
        if not self.losses:
            return None
        losses = torch.stack(self.losses)
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad) == 0:
            return None
        first = int(bad[0, 0])
        return first + 1, float(losses[first])

    def means(self) -> tuple[dict[str, float], float]:
        """Training metrics and mean gradient norm over the interval."""
        return averages(self.scores), scalar(self.grad_norm) / max(self.steps, 1)

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.steps, "seqs": self.seqs, "time": self.seconds, "grad_norm": self.grad_norm,
                "scores": self.scores, "losses": self.losses}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Interval:
        return cls(steps=state["n"], seqs=state["seqs"], seconds=state["time"], grad_norm=state["grad_norm"],
                   scores=state["scores"], losses=list(state.get("losses", [])))


@dataclass
class Best:
    """The best evaluation so far by the task's metric on the validation split, and the weights that made it."""

    step: int | None = None
    val: dict[str, float] | None = None
    weights: dict[str, torch.Tensor] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "val": self.val, "model": self.weights}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Best:
        return cls(step=state["step"], val=state["val"], weights=state["model"])


@dataclass
class Member:
    """One run of the pack and everything that is its own (its model and dropout RNG live in the PackedModel)."""

    index: int  # its place in the PackedModel
    cfg: ExperimentConfig
    run: RunFolder
    optimizer: torch.optim.Optimizer
    scheduler: Any
    batches: torch.Generator  # its batch order
    summary: dict[str, Any]
    columns: list[str] | None = None  # metrics.csv columns, once known
    step: int = 0
    elapsed: float = 0.0  # wall seconds trained, this process and earlier ones
    bad_evals: int = 0  # evaluations since the best one
    best: Best = field(default_factory=Best)
    interval: Interval = field(default_factory=Interval)
    result: RunResult | None = None  # set when it completes or fails: frozen from then on
    pack: Pack | None = field(default=None, repr=False)  # the pack it trains in, once restored

    @property
    def name(self) -> str:
        return self.run.path.name

    # what observers read (lstmlab.run.observers): its model, the task, the data, its wall time
    @property
    def model(self) -> torch.nn.Module:
        return self.pack.model.members[self.index]

    @property
    def task(self):
        return self.pack.task

    @property
    def splits(self) -> dict[str, dict[str, torch.Tensor]]:
        return self.pack.splits

    def elapsed_s(self) -> float:
        return self.pack.elapsed(self)

    def done_training(self) -> bool:
        t = self.cfg.train
        return self.step >= t.steps or bool(t.early_stop_patience and self.bad_evals >= t.early_stop_patience)


@dataclass
class Pack:
    """What the members share: the task, its data on the device, the packed model, the clock."""

    members: list[Member]
    model: PackedModel
    task: Any
    meta: dict[str, Any]  # the dataset's meta.json: baselines, solve threshold
    splits: dict[str, dict[str, torch.Tensor]]
    device: torch.device
    autocast: Any
    started: float = 0.0  # perf_counter() when this process started training
    observers: Observer = field(default_factory=Observer)  # progress, TensorBoard, diagnostics, test hooks

    @property
    def n_train(self) -> int:
        return len(self.splits["train"]["inputs"])

    @property
    def active(self) -> list[Member]:
        return [m for m in self.members if m.result is None]

    def elapsed(self, member: Member) -> float:
        return member.elapsed + time.perf_counter() - self.started


# -- train ---------------------------------------------------------------------------------------------


def train(cfg: ExperimentConfig, options: UnitOptions | None = None, **more) -> RunResult:
    """Train one run in its folder (a pack of one; options as `train_pack`). Raises RunBusy when another
    process is training it, RunRefused when the folder holds another run, RunFailed when the run fails and
    RunInterrupted on SIGINT or SIGTERM."""
    result = train_pack([cfg], options, **more)[0]
    if result.status == "failed":
        raise RunFailed(result.summary["error"], result.path) from result.error
    if result.error is not None:
        raise result.error
    return result


def train_pack(
    cfgs: Sequence[ExperimentConfig],
    options: UnitOptions | None = None,
    *,
    observers: Sequence[Observer] | None = None,
    log: Callable[[str], None] = print,
    **fields,
) -> list[RunResult]:
    """Train the runs `cfgs` together, each in its own folder; one RunResult per run, in order.

    `options` (lstmlab.run.options.UnitOptions: runs dir, data dir, swept keys, restart, ...), or its fields as
    keywords (`runs_dir=..., quiet=True`). `observers` watch the loop (lstmlab.run.observers); by default the
    ones `options` asks for (observers_for). Raises RunInterrupted on SIGINT or SIGTERM, after every member
    saved its checkpoint.
    """
    options = unit_options(options, fields, "train_pack")
    watch = Observers(observers_for(options).observers if observers is None else observers)
    try:
        return _train_pack(cfgs, options, watch, log)
    finally:
        watch.close()


def _train_pack(cfgs: Sequence[ExperimentConfig], options: UnitOptions, observers: Observers,
                log: Callable[[str], None]) -> list[RunResult]:
    task = make_task(cfgs[0].task)
    dataset = load_dataset(cfgs[0].task, options.data_dir, log=log)
    cfgs = [resolve_point(cfg, dataset.spec) for cfg in cfgs]
    if len(cfgs) > 1 and (len({pack_key(cfg) for cfg in cfgs}) != 1 or pack_key(cfgs[0]) is None):
        raise ValueError("these runs cannot share a pack (see lstmlab.run.packing.pack_key)")
    runs = [RunFolder(options.runs_dir / cfg.experiment / run_name(cfg, options.swept_keys)) for cfg in cfgs]
    device = pick_device(cfgs[0].train.device)
    backend = pick_backend(cfgs[0], device)
    if cfgs[0].train.precision == "bf16" and device.type != "cuda":
        raise UserError("train.precision: bf16 autocast needs a CUDA device; use fp32 on CPU")
    check_threads(cfgs[0].train.threads)  # this machine's CPUs: a job may run where the config was not read
    results: dict[int, RunResult] = {}

    with contextlib.ExitStack() as locks, StopAtStepBoundary() as stop:
        # -- claim: lock every member's folder, load its checkpoint; the done, busy or refused drop out ------
        claimed: dict[int, dict | None] = {}  # member -> its checkpoint (None: a new run)
        for i, (cfg, run) in enumerate(zip(cfgs, runs, strict=True)):
            config = cfg.model_dump(mode="json")
            try:
                locks.enter_context(run.lock())
                state = run.prepare(config, restart=options.restart)  # new | resume | completed
                if state == "completed":
                    results[i] = RunResult(run.path.name, run.path, "skipped", run.summary() or {})
                    continue
                claimed[i] = run.load_checkpoint(map_location=device, config=config) if state == "resume" else None
            except RunBusy as e:
                results[i] = RunResult(run.path.name, run.path, "busy", error=e)
            except UserError as e:  # the folder or checkpoint holds another run, or cannot be read
                results[i] = RunResult(run.path.name, None, "refused", error=e)
        if not claimed:
            return [results[i] for i in range(len(cfgs))]

        pack = restore([(cfgs[i], runs[i], ckpt) for i, ckpt in claimed.items()], task, dataset, device, backend,
                       options, log)
        pack.started = time.perf_counter()
        pack.observers = observers
        try:
            for member in pack.members:  # observers start from what the folder holds (TensorBoard's copy too)
                observers.on_rows(member, member.run.metrics())
            finish(pack, [m for m in pack.members if m.done_training()], log)  # resumed at its last step
            for member in pack.active:
                observers.on_step(member, member.step)
            while active := pack.active:
                stop.check()
                train_step(pack, active)
                reached = [(m, m.step) for m in active]
                due = [m for m in active if m.step % m.cfg.train.eval_every == 0 or m.step == m.cfg.train.steps]
                if due:
                    evaluate_and_record(pack, due, log)
                for member, step in reached:
                    observers.on_step(member, step)
                finish(pack, [m for m in active if m.result is None and m.done_training()], log)
        except KeyboardInterrupt:
            interrupt(pack, stop)
            raise
        except Exception as e:  # the pack cannot go on: every member still training fails with it
            for member in pack.active:
                fail(pack, member, e)
        for i, member in zip(claimed, pack.members, strict=True):
            results[i] = member.result
    return [results[i] for i in range(len(cfgs))]


def resolve_point(cfg: ExperimentConfig, spec) -> ExperimentConfig:
    """A sweep point as it trains: its hidden size derived from model.param_budget and the task's data (spec,
    a TaskSpec). The one place a point is resolved: the sweep's plan, --print-config and train all ask here."""
    return cfg.model_copy(update={"model": resolve_hidden_size(cfg.model, spec)})


# -- restore: build each member as it builds alone, then load its checkpoint --------------------------


def restore(claimed: list[tuple[ExperimentConfig, RunFolder, dict | None]], task, dataset, device: torch.device,
            backend: str, options: UnitOptions, log) -> Pack:
    first = claimed[0][0]
    memory.check_run(first, dataset, device, members=len(claimed))  # before allocating: TooBig names the keys
    if first.train.threads or options.threads:
        torch.set_num_threads(first.train.threads or options.threads)
    dtype = getattr(torch, first.train.dtype)
    if first.model.type == "scratch-lstm":
        kernels.prepare(backend, device, dtype)  # build the C++ loop (once) before any run's clock starts

    members, models, rngs = [], [], []
    for index, (cfg, run, ckpt) in enumerate(claimed):
        torch.manual_seed(cfg.train.seed)  # initial weights, then dropout masks, from the run's seed
        model = build_model(cfg.model, dataset.spec).to(device=device, dtype=dtype)
        rng = MemberRNG(device)
        optimizer = make_optimizer(model, cfg)
        member = Member(
            index=index, cfg=cfg, run=run, optimizer=optimizer,
            scheduler=make_scheduler(optimizer, cfg, task.higher_is_better),
            batches=torch.Generator().manual_seed(cfg.train.seed),
            summary=summary_head(cfg, run, task, dataset, count_parameters(model), device, backend),
        )  # fmt: skip
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            member.optimizer.load_state_dict(ckpt["optimizer"])
            member.scheduler.load_state_dict(ckpt["scheduler"])
            # generator states are CPU byte tensors whatever the device: map_location moved them with the rest
            states = {k: None if v is None else v.cpu() for k, v in ckpt["rng"].items()}
            rng.load_state_dict(states)
            member.batches.set_state(states["batches"])
            member.step, member.elapsed, member.bad_evals = ckpt["step"], ckpt["elapsed"], ckpt["bad_evals"]
            member.best, member.interval = Best.from_state(ckpt["best"]), Interval.from_state(ckpt["interval"])
            log(f"{run.path}: resuming at step {member.step}")
        run.truncate_metrics(member.step)  # rows past the checkpoint are redone; an uncommitted test row goes
        run.truncate_metrics(member.step if ckpt is not None else -1, DIAGNOSTICS)  # a new run redoes step 0 too
        members.append(member)
        models.append(model)
        rngs.append(rng)

    if first.train.diagnostics_every:
        check_traceable(models[0])  # bad input, said before training starts
    names = [m.name for m in members]
    for member in members:
        member.run.write_config(member.cfg.dump_yaml())
        member.run.write_env({**environment(device, backend, options.argv),
                              "pack": {"size": len(members), "members": names},
                              "data": data_source(dataset.folder, dataset.meta)})
        member.run.write_summary(member.summary)
        member.columns = member.run.metrics_columns()
    splits = {split: {k: to_tensor(v, device, dtype) for k, v in arrays.items()}
              for split, arrays in dataset.splits.items()}  # fmt: skip
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=first.train.precision == "bf16")
    pack = Pack(members, PackedModel(models, rngs), task, dataset.meta, splits, device, autocast)
    for member in members:
        member.pack = pack
    return pack


def summary_head(cfg, run, task, dataset, params, device, backend) -> dict[str, Any]:
    """summary.json while the run trains; finish() adds the results."""
    baselines = dataset.meta["baselines"]
    return {
        "status": "running", "experiment": cfg.experiment, "run": run.path.name, "task": cfg.task.name,
        "model_type": cfg.model.type, "layers": cfg.model.layers, "hidden_size": cfg.model.hidden_size,
        "params": params, "metric": task.metric, "higher_is_better": task.higher_is_better,
        "baseline": baselines["trivial"], "baselines": baselines,
        "solve_threshold": dataset.meta["solve_threshold"], "dataset": dataset.folder.name,
        "device": str(device), "backend": backend, "steps": cfg.train.steps,
    }  # fmt: skip


# -- step: one optimizer step for every active member ---------------------------------------------------


def train_step(pack: Pack, active: list[Member]) -> None:
    """Each member: its own batch, learning rate, loss, gradient clipping and optimizer update."""
    tic = time.perf_counter()
    model, task = pack.model.train(), pack.task
    index = torch.stack([torch.randint(pack.n_train, (m.cfg.train.batch_size,), generator=m.batches)
                         for m in active]).to(pack.device)  # (K', B): each member's own batch order
    batch = {k: v[index] for k, v in pack.splits["train"].items()}  # (K', B, ...)
    for member in active:
        set_lr(member.optimizer, member.cfg, member.step)
    with pack.autocast:
        output = model(batch["inputs"], [m.index for m in active])  # (K', B, C) or (K', B, T, C)
        losses = [task.loss(output[j], member_batch(batch, j)) for j in range(len(active))]
    for member in active:
        member.optimizer.zero_grad(set_to_none=True)
    torch.stack(losses).sum().backward()  # ∂(Σ_k loss_k)/∂θ_k = ∂loss_k/∂θ_k: members never mix
    grad_norms = clip_grad_norms([list(model.members[m.index].parameters()) for m in active],
                                 [m.cfg.train.grad_clip or math.inf for m in active])
    for j, member in enumerate(active):
        member.optimizer.step()
        member.step += 1
        scores = task.score(output[j].detach(), member_batch(batch, j))
        member.interval.add(losses[j].detach(), grad_norms[j], scores, member.cfg.train.batch_size)
    seconds = time.perf_counter() - tic
    for member in active:
        member.interval.seconds += seconds  # the pack's step is every member's step


def clip_grad_norms(members: list[list[torch.Tensor]], max_norms: list[float]) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ for every member at once, with the same numbers: member k's norm is
    ‖g_k‖ = ‖(‖g_k1‖, …, ‖g_kn‖)‖₂ over its own gradients, and g_k ← g_k · min(1, max_norm_k / (‖g_k‖ + 1e-6)).
    Returns the K norms before clipping, on the device. Members share an architecture: n tensors each."""
    grads = [p.grad for params in members for p in params]
    norms = torch.stack(torch._foreach_norm(grads, 2.0)).view(len(members), -1)  # (K, n)
    totals = torch.linalg.vector_norm(norms, 2.0, dim=1)  # (K,)
    coefs = (torch.tensor(max_norms, dtype=totals.dtype, device=totals.device) / (totals + 1e-6)).clamp(max=1.0)
    for k, params in enumerate(members):
        if max_norms[k] != math.inf:
            torch._foreach_mul_([p.grad for p in params], coefs[k])
    return totals


def member_batch(batch: dict[str, torch.Tensor], j: int) -> dict[str, torch.Tensor]:
    return {k: v[j] for k, v in batch.items()}


# -- evaluate: metrics rows, best weights, schedule, checkpoint, early stop ---------------------------


def evaluate_and_record(pack: Pack, due: list[Member], log: Callable[[str], None]) -> None:
    healthy = []
    for member in due:
        bad = member.interval.first_nonfinite()
        if bad is None:
            healthy.append(member)
            continue
        steps_in, value = bad
        member.step += steps_in - member.interval.steps - 1  # the steps before the bad one completed
        fail(pack, member, FloatingPointError(f"loss became {value} at step {member.step + 1}"))
    vals = evaluate(pack, healthy, "val")
    for member, val in zip(healthy, vals, strict=True):
        cfg, interval = member.cfg, member.interval
        train_scores, grad_norm = interval.means()
        if bad := nonfinite({"train": train_scores, "val": val}):  # e.g. a sum of squares that overflowed
            fail(pack, member, FloatingPointError(f"{bad} at step {member.step}"))
            continue
        common = {
            "step": member.step, "epoch": member.step * cfg.train.batch_size / pack.n_train,
            "lr": member.optimizer.param_groups[0]["lr"], "elapsed_s": pack.elapsed(member),
            "grad_norm": grad_norm, "seq_per_s": interval.seqs / max(interval.seconds, 1e-9),
        }  # fmt: skip
        member.columns = member.columns or LEAD_COLUMNS + [k for k in val if k != "loss"] + TAIL_COLUMNS
        rows = [{**common, "split": "train", **train_scores}, {**common, "split": "val", **val}]
        member.run.append_metrics(rows, member.columns)
        member.interval = Interval()

        metric = pack.task.metric
        better = max if pack.task.higher_is_better else min
        if member.best.val is None or better(val[metric], member.best.val[metric]) != member.best.val[metric]:
            weights = {k: v.detach().clone() for k, v in pack.model.members[member.index].state_dict().items()}
            member.best, member.bad_evals = Best(member.step, val, weights), 0
        else:
            member.bad_evals += 1
        pack.observers.on_rows(member, rows)
        if cfg.train.schedule == "plateau":
            member.scheduler.step(val[metric])
        checkpoint(pack, member)
        if member.step < cfg.train.steps and member.done_training():
            log(f"{member.name}: early stop at step {member.step} "
                f"({member.bad_evals} evaluations without improvement)")


def nonfinite(metrics: dict[str, dict[str, float]]) -> str | None:
    """'val mse became inf' for the first metric of {split: {name: value}} that is not finite; None if all are."""
    for split, values in metrics.items():
        for name, value in values.items():
            if not math.isfinite(value):
                return f"{split} {name} became {value}"
    return None


EVAL_SEQUENCES = 4096  # sequences through the model per evaluation call, at most: members × eval batch


@torch.no_grad()
def evaluate(pack: Pack, members: list[Member], split_name: str) -> list[dict[str, float]]:
    """Every metric of the task over a whole split, for each member (sums over batches, then one division).

    Members read the same batches, as many members at a time as keep a call within EVAL_SEQUENCES."""
    if not members:
        return []
    model, task = pack.model.eval(), pack.task
    split = pack.splits[split_name]
    batch_size = members[0].cfg.train.eval_batch_size
    group = max(1, EVAL_SEQUENCES // batch_size)
    results = []
    for first in range(0, len(members), group):
        active = [m.index for m in members[first : first + group]]
        sums: list[dict[str, list]] = [{} for _ in active]
        for start in range(0, len(split["inputs"]), batch_size):
            batch = {k: v[start : start + batch_size] for k, v in split.items()}
            inputs = batch["inputs"].expand(len(active), *batch["inputs"].shape)  # one batch, every member
            with pack.autocast:
                output = model(inputs, active)
            for j in range(len(active)):
                accumulate(sums[j], task.score(output[j], batch))
        results += [averages(s) for s in sums]
    return results


def checkpoint(pack: Pack, member: Member) -> None:
    """Everything the member needs to go on exactly from here, in its own folder."""
    rng = {**pack.model.rngs[member.index].state_dict(), "batches": member.batches.get_state()}
    member.run.save_checkpoint({
        "step": member.step, "elapsed": pack.elapsed(member), "bad_evals": member.bad_evals,
        "best": member.best.state_dict(), "interval": member.interval.state_dict(),
        "model": pack.model.members[member.index].state_dict(), "optimizer": member.optimizer.state_dict(),
        "scheduler": member.scheduler.state_dict(), "rng": rng,
    }, config=member.cfg.model_dump(mode="json"))  # fmt: skip


# -- finish: the best-by-validation weights on the test split; the run completes -----------------------


def finish(pack: Pack, members: list[Member], log: Callable[[str], None]) -> None:
    if not members:
        return
    stale = [m for m in members if m.best.step != m.step]  # the last evaluation was not the best one
    final_vals = dict(zip((m.name for m in stale), evaluate(pack, stale, "val"), strict=True))
    for member in members:
        pack.model.members[member.index].load_state_dict(member.best.weights)
    tests = evaluate(pack, members, "test")
    task, threshold = pack.task, pack.meta["solve_threshold"]
    for member, test in zip(members, tests, strict=True):
        if bad := nonfinite({"test": test}):
            fail(pack, member, FloatingPointError(f"{bad} at step {member.step}"))
            continue
        metric = test[task.metric]
        solved = None if threshold is None else metric >= threshold if task.higher_is_better else metric <= threshold
        test_row = {"step": member.step, "epoch": member.step * member.cfg.train.batch_size / pack.n_train,
                    "split": "test", **test, "lr": member.optimizer.param_groups[0]["lr"],
                    "elapsed_s": pack.elapsed(member)}  # fmt: skip
        member.summary.update({
            "status": "completed", "step": member.step, "best_step": member.best.step, "best_val": member.best.val,
            "final_val": final_vals.get(member.name, member.best.val), "test": test, "test_metric": metric,
            "solved": None if solved is None else bool(solved), "wall_s": pack.elapsed(member),
            "converged": run_converged(member.run.metrics(), task.metric, task.higher_is_better),
        })  # fmt: skip
        pack.observers.on_rows(member, [test_row])  # before the run completes: a rerun would not log it again
        member.run.complete(test_row, member.columns, member.summary)
        member.result = RunResult(member.name, member.run.path, "completed", member.summary)
        pack.observers.on_finish(member, member.summary)


def fail(pack: Pack, member: Member, error: Exception) -> None:
    """The member stops here with `error`; its summary says failed and why. Its last checkpoint stays."""
    message = f"{type(error).__name__}: {error}{files.disk_full_hint(error)}"
    member.summary.update({"status": "failed", "step": member.step, "error": message, "wall_s": pack.elapsed(member)})
    with contextlib.suppress(OSError) if files.disk_full_hint(error) else contextlib.nullcontext():
        member.run.write_summary(member.summary)  # on a full disk it may not fit: the folder resumes as it is
    member.result = RunResult(member.name, member.run.path, "failed", member.summary, error=error)
    pack.observers.on_finish(member, member.summary)


def interrupt(pack: Pack, stop: StopAtStepBoundary) -> None:
    """SIGINT or SIGTERM: at a step boundary every member still training saves a checkpoint (a second
    Ctrl-C mid-step keeps the last evaluation's instead); their summaries say interrupted."""
    for member in pack.active:
        if stop.at_boundary:
            checkpoint(pack, member)
        member.summary.update({"status": "interrupted", "step": member.step, "wall_s": pack.elapsed(member),
                               "signal": stop.signal})
        member.run.write_summary(member.summary)
        pack.observers.on_finish(member, member.summary)


# -- helpers ------------------------------------------------------------------------------------------


class StopAtStepBoundary:
    """SIGINT (Ctrl-C) and SIGTERM (what schedulers send before they kill) let the current optimizer step
    finish, so the checkpoint saved on the way out is a state the run passes through anyway (and resuming
    gives the same numbers); a second Ctrl-C stops at once. A context manager: the handlers are this
    run's only while it lasts (and only in the main thread, where Python delivers signals)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: str | None = None  # the name of the first signal received
        self.at_boundary = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopAtStepBoundary:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        if self.signal is not None and not (exc_type and issubclass(exc_type, KeyboardInterrupt)):
            signal.raise_signal(signal.Signals[self.signal])  # it came too late to stop this run: pass it on

    def _handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise RunInterrupted(self.signal)
        self.signal = self.signal or signal.Signals(signum).name

    def check(self) -> None:
        """At a step boundary: stop here if a signal asked for it."""
        if self.signal is not None:
            self.at_boundary = True
            raise RunInterrupted(self.signal)


def scalar(value) -> float:
    """A Python number from a device scalar or a number (reading a device scalar waits for the device)."""
    return value.item() if isinstance(value, torch.Tensor) else value


def accumulate(sums: dict[str, list], scores: dict[str, tuple]) -> None:
    """Add one batch's (sum, count) per metric to running sums, on the device; metric = sum / count at the end.
    Sums are kept in float64, as Python floats would be."""
    for name, (total, count) in scores.items():
        acc = sums.setdefault(name, [0.0, 0])
        acc[0] = acc[0] + (total.double() if isinstance(total, torch.Tensor) else total)
        acc[1] = acc[1] + count


def averages(sums: dict[str, list]) -> dict[str, float]:
    return {name: scalar(total) / max(scalar(count), 1) for name, (total, count) in sums.items()}


def pick_backend(cfg: ExperimentConfig, device: torch.device) -> str:
    """The LSTM kernel that will run (scratch-lstm); "torch.nn" for the torch.nn cores; for a plugin core
    "plugin:<model.type> (<package> <version> (<module:attr>))", where its code comes from."""
    if cfg.model.type not in CORES:
        return plugins.core_backend(cfg.model.type)
    if cfg.model.type != "scratch-lstm":
        return "torch.nn"
    try:
        return kernels.resolve(cfg.model.backend, device.type)
    except kernels.BackendUnavailable as e:
        here = ", ".join(n for n in kernels.BACKEND_NAMES if n == "auto" or kernels.available(n, device.type))
        raise UserError(f"model.backend: {e}; valid on this machine: {here}") from None


def to_tensor(array, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    if tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.to(device)


def make_optimizer(model: torch.nn.Module, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    """The run's own torch.optim optimizer over its own parameters. Adam, AdamW and SGD run fused (one kernel
    per step for all of a run's tensors), RMSprop with its foreach kernels: the same update as torch's default
    per-tensor loop to rounding, at a fraction of its per-step cost when a pack holds many runs."""
    t = cfg.train
    params = model.parameters()
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay, fused=True)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, fused=True)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, fused=True)
    return torch.optim.RMSprop(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, foreach=True)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: ExperimentConfig, higher_is_better: bool):
    """plateau: torch's ReduceLROnPlateau on the validation metric. constant and cosine are set per step
    by `set_lr`; for them this is a scheduler that holds no state of its own."""
    if cfg.train.schedule == "plateau":
        mode = "max" if higher_is_better else "min"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=cfg.train.plateau_factor, patience=cfg.train.plateau_patience
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def get_lr(cfg: ExperimentConfig, step: int) -> float:
    """The learning rate for optimizer step `step` (0-based): linear warm-up, then constant or cosine."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "cosine":
        progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
        return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    return t.lr


def set_lr(optimizer: torch.optim.Optimizer, cfg: ExperimentConfig, step: int) -> None:
    if cfg.train.schedule == "plateau" and step >= cfg.train.warmup_steps:
        return  # ReduceLROnPlateau owns the LR after warm-up
    for group in optimizer.param_groups:
        group["lr"] = get_lr(cfg, step)
