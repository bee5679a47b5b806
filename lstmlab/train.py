"""train(run_config) -> a run folder. Read it top to bottom: data, model, optimizer, loop, test.

A run resumes from its checkpoint when its folder already holds one, and is skipped when it already
completed; the folder is locked while the run trains (lstmlab.runs says what that guarantees).
Every random choice comes from `train.seed`: on CPU the same config gives the same metrics.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lstmlab import kernels
from lstmlab.config import ExperimentConfig, get_dotted
from lstmlab.env import environment
from lstmlab.errors import UserError
from lstmlab.models.sequence import build_model, count_parameters, resolve_hidden_size
from lstmlab.runs import RunFolder, RunInterrupted, fire_test_hooks
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
    path: Path
    status: str  # completed | skipped
    summary: dict[str, Any]


def run_name(cfg: ExperimentConfig, swept_keys: tuple[str, ...] = ()) -> str:
    """`L2-scratch-lstm-s0`, plus `-<key><value>` for every other swept key."""
    name = f"L{cfg.model.layers}-{cfg.model.type}-s{cfg.train.seed}"
    raw = cfg.model_dump(mode="json")
    for key in swept_keys:
        if key in ("model.layers", "model.type", "train.seed"):
            continue
        name += f"-{key.split('.')[-1]}{get_dotted(raw, key)}"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def resolve_run(cfg: ExperimentConfig, data_dir: str | Path, log: Callable[[str], None] = print):
    """Load the run's dataset (generating it if missing) and derive the model size that follows from it.

    Returns the resolved config (hidden_size written out) and the dataset.
    """
    dataset = load_dataset(cfg.task, data_dir, log=log)
    return cfg.model_copy(update={"model": resolve_hidden_size(cfg.model, dataset.spec)}), dataset


def train(
    cfg: ExperimentConfig,
    *,
    runs_dir: str | Path = "runs",
    data_dir: str | Path = "data",
    swept_keys: tuple[str, ...] = (),
    restart: bool = False,
    quiet: bool = False,
    argv: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train one run in its folder. Raises RunBusy when another process is training it, RunRefused when
    the folder holds another run, RunFailed when the run fails and RunInterrupted on SIGINT or SIGTERM."""
    # -- data, and the model size that follows from it -----------------------------------------------
    task = make_task(cfg.task)
    cfg, dataset = resolve_run(cfg, data_dir, log)
    spec = dataset.spec
    run = RunFolder(Path(runs_dir) / cfg.experiment / run_name(cfg, swept_keys))
    config = cfg.model_dump(mode="json")

    # -- the run folder, locked for the whole run: new, resumed or already done ----------------------
    with run.lock(), StopAtStepBoundary() as stop:
        state = run.prepare(config, restart=restart)  # "new" | "resume" | "completed"
        if state == "completed":
            return RunResult(run.path, "skipped", run.summary() or {})

        # -- device, threads, seeds -------------------------------------------------------------------
        device = pick_device(cfg.train.device)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.precision == "bf16" and device.type != "cuda":
            raise UserError("train.precision: bf16 autocast needs a CUDA device; use fp32 on CPU")
        dtype = getattr(torch, cfg.train.dtype)
        torch.manual_seed(cfg.train.seed)
        batch_rng = torch.Generator().manual_seed(cfg.train.seed)

        backend = pick_backend(cfg, device)
        model = build_model(cfg.model, spec).to(device=device, dtype=dtype)
        params = count_parameters(model)
        optimizer = make_optimizer(model, cfg)
        scheduler = make_scheduler(optimizer, cfg, task.higher_is_better)
        splits = {
            split: {k: to_tensor(v, device, dtype) for k, v in arrays.items()}
            for split, arrays in dataset.splits.items()
        }
        n_train = len(splits["train"]["inputs"])
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")
        metric, better = task.metric, (max if task.higher_is_better else min)

        # -- state: fresh, or from the checkpoint -----------------------------------------------------
        step, elapsed, bad_evals = 0, 0.0, 0
        best: dict[str, Any] = {"step": None, "val": None, "model": None}
        interval = new_interval()
        if state == "resume":
            ckpt = run.load_checkpoint(map_location=device, config=config)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            batch_rng.set_state(ckpt["rng"]["batches"])
            if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
            step, elapsed, bad_evals, best, interval = (
                ckpt["step"], ckpt["elapsed"], ckpt["bad_evals"], ckpt["best"], ckpt["interval"]
            )
            log(f"{run.path}: resuming at step {step}")
        run.truncate_metrics(step)  # rows past the checkpoint are redone; an uncommitted test row goes

        def checkpoint() -> None:
            rng = {"torch": torch.get_rng_state(), "batches": batch_rng.get_state()}
            if device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state()
            run.save_checkpoint({
                "step": step, "elapsed": elapsed, "bad_evals": bad_evals, "best": best, "interval": interval,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng,
            }, config=config)

        baselines = dataset.meta["baselines"]
        summary: dict[str, Any] = {
            "status": "running", "experiment": cfg.experiment, "run": run.path.name, "task": cfg.task.name,
            "model_type": cfg.model.type, "layers": cfg.model.layers, "hidden_size": cfg.model.hidden_size,
            "params": params, "metric": metric, "higher_is_better": task.higher_is_better,
            "baseline": baselines["trivial"], "baselines": baselines,
            "solve_threshold": dataset.meta["solve_threshold"], "dataset": dataset.folder.name,
            "device": str(device), "backend": backend, "steps": cfg.train.steps,
        }
        run.write_config(cfg.dump_yaml())
        run.write_env(environment(device, backend, argv))
        run.write_summary(summary)
        columns = run.metrics_columns()

        # -- the loop ---------------------------------------------------------------------------------
        progress = make_progress(cfg.train.steps, step, run.path.name, quiet)
        started = time.perf_counter() - elapsed
        try:
            while step < cfg.train.steps:
                fire_test_hooks(f"step={step}", run.path.name)
                stop.check()
                model.train()
                tic = time.perf_counter()
                index = torch.randint(n_train, (cfg.train.batch_size,), generator=batch_rng).to(device)
                batch = {k: v[index] for k, v in splits["train"].items()}
                set_lr(optimizer, cfg, step)
                with autocast:
                    output = model(batch["inputs"])
                    loss = task.loss(output, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} at step {step + 1}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or math.inf)
                optimizer.step()
                step += 1
                interval["time"] += time.perf_counter() - tic
                interval["n"] += 1
                interval["grad_norm"] += grad_norm.item()
                interval["seqs"] += cfg.train.batch_size
                accumulate(interval["scores"], task.score(output.detach(), batch))
                progress.update(1)

                if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
                    val = evaluate(model, task, splits["val"], cfg.train.eval_batch_size, autocast)
                    elapsed = time.perf_counter() - started
                    common = {
                        "step": step, "epoch": step * cfg.train.batch_size / n_train,
                        "lr": optimizer.param_groups[0]["lr"], "elapsed_s": elapsed,
                        "grad_norm": interval["grad_norm"] / interval["n"],
                        "seq_per_s": interval["seqs"] / max(interval["time"], 1e-9),
                    }
                    train_scores = {k: s / max(c, 1) for k, (s, c) in interval["scores"].items()}
                    rows = [{**common, "split": "train", **train_scores}, {**common, "split": "val", **val}]
                    columns = columns or LEAD_COLUMNS + [k for k in val if k != "loss"] + TAIL_COLUMNS
                    run.append_metrics(rows, columns)
                    progress.set_postfix(loss=f"{val['loss']:.4g}", **{metric: f"{val[metric]:.4g}"},
                                         seq_s=f"{common['seq_per_s']:.0f}")
                    interval = new_interval()

                    if best["val"] is None or better(val[metric], best["val"][metric]) != best["val"][metric]:
                        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                        best = {"step": step, "val": val, "model": weights}
                        bad_evals = 0
                    else:
                        bad_evals += 1
                    if cfg.train.schedule == "plateau":
                        scheduler.step(val[metric])
                    checkpoint()
                    if cfg.train.early_stop_patience and bad_evals >= cfg.train.early_stop_patience:
                        log(f"{run.path.name}: early stop at step {step} "
                            f"({bad_evals} evaluations without improvement)")
                        break
        except KeyboardInterrupt:
            elapsed = time.perf_counter() - started
            if stop.at_boundary:  # a second Ctrl-C mid-step keeps the last evaluation's checkpoint instead
                checkpoint()
            progress.close()
            run.write_summary({**summary, "status": "interrupted", "step": step, "wall_s": elapsed,
                               "signal": stop.signal})
            raise
        except Exception as e:
            progress.close()
            run.write_summary({**summary, "status": "failed", "step": step, "error": f"{type(e).__name__}: {e}",
                               "wall_s": time.perf_counter() - started})
            raise RunFailed(f"{type(e).__name__}: {e}", run.path) from e
        progress.close()

        # -- the best-by-validation weights, on the test split ------------------------------------------
        if best["step"] == step:
            final_val = best["val"]
        else:
            final_val = evaluate(model, task, splits["val"], cfg.train.eval_batch_size, autocast)
        model.load_state_dict(best["model"])
        test = evaluate(model, task, splits["test"], cfg.train.eval_batch_size, autocast)
        test_row = {"step": step, "epoch": step * cfg.train.batch_size / n_train, "split": "test", **test,
                    "lr": optimizer.param_groups[0]["lr"], "elapsed_s": time.perf_counter() - started}
        threshold = dataset.meta["solve_threshold"]
        solved = test[metric] >= threshold if task.higher_is_better else test[metric] <= threshold
        summary.update({
            "status": "completed", "step": step, "best_step": best["step"], "best_val": best["val"],
            "final_val": final_val, "test": test, "test_metric": test[metric], "solved": bool(solved),
            "wall_s": time.perf_counter() - started,
        })
        run.complete(test_row, columns, summary)
    return RunResult(run.path, "completed", summary)


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


def new_interval() -> dict[str, Any]:
    """Running sums between two evaluations: steps, grad norm, sequences, time, task scores (loss included)."""
    return {"n": 0, "grad_norm": 0.0, "seqs": 0, "time": 0.0, "scores": {}}


def accumulate(sums: dict[str, list[float]], scores: dict[str, tuple[float, float]]) -> None:
    """Add one batch's (sum, count) per metric to running sums; metric = sum / count at the end."""
    for name, (total, count) in scores.items():
        acc = sums.setdefault(name, [0.0, 0.0])
        acc[0] += total
        acc[1] += count


@torch.no_grad()
def evaluate(model, task, split: dict[str, torch.Tensor], batch_size: int, autocast) -> dict[str, float]:
    """Every metric of the task over a whole split (sums over batches, then one division)."""
    model.eval()
    sums: dict[str, list[float]] = {}
    n = len(split["inputs"])
    for start in range(0, n, batch_size):
        batch = {k: v[start : start + batch_size] for k, v in split.items()}
        with autocast:
            output = model(batch["inputs"])
        accumulate(sums, task.score(output, batch))
    return {name: total / max(count, 1) for name, (total, count) in sums.items()}


def pick_backend(cfg: ExperimentConfig, device: torch.device) -> str:
    """The LSTM kernel that will run (scratch-lstm), or "torch.nn" for the torch.nn cores."""
    if cfg.model.type != "scratch-lstm":
        return "torch.nn"
    try:
        return kernels.resolve(cfg.model.backend, device.type)
    except kernels.BackendUnavailable as e:
        here = ", ".join(n for n in kernels.BACKEND_NAMES if n == "auto" or kernels.available(n, device.type))
        raise UserError(f"model.backend: {e}; valid on this machine: {here}") from None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda was asked for but no CUDA device is available; valid here: auto, cpu")
    return torch.device(name)


def to_tensor(array, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    if tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.to(device)


def make_optimizer(model: torch.nn.Module, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    t = cfg.train
    params = model.parameters()
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.RMSprop(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


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


def make_progress(total: int, initial: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, leave=False,
                disable=quiet or not sys.stderr.isatty())
