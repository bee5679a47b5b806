"""Train ONE run, top to bottom: data, model, optimizer, step, evaluate, checkpoint, summary. Read this first.

This is the whole recipe of an lstmlab run with nothing else in the way — no packs, observers, signals or
resuming — as nanoGPT's train.py reads. `lstmlab train` runs lstmlab.run.train.train_pack instead, which
trains K runs at once through one stacked kernel and adds locking, resuming and failure handling; it uses the
same pieces (make_optimizer, set_lr/get_lr, clip_grad_norms, the Interval sums, the run folder), and a pack of
one gives the same metrics.csv row by row as this loop (tests/test_single.py asserts it in float64).

Every step, with θ the model's weights, B = train.batch_size and lr_t from get_lr (warm-up, then constant or cosine):

    x, y   = B sequences of the training split, drawn with replacement by the run's own generator
    L      = task.loss(model(x), y)                     mean over the batch
    g      = ∂L/∂θ;   g ← g · min(1, clip / (‖g‖₂ + 1e-6))  (train.grad_clip; none when unset)
    θ      ← optimizer(θ, g, lr_t)                       Adam / AdamW / SGD / RMSprop (make_optimizer)

and every train.eval_every steps: the mean training metrics since the last evaluation and the validation
metrics go to metrics.csv, the best-by-validation weights are kept, and a checkpoint is written. At the end
the best weights are scored on the test split and summary.json says `completed`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from lstmlab.config import ExperimentConfig, check_threads
from lstmlab.models.sequence import build_model, count_parameters
from lstmlab.run.convergence import run_converged
from lstmlab.run.env import data_source, environment, pick_device
from lstmlab.run.folder import RunFolder, run_name
from lstmlab.run.train import (
    LEAD_COLUMNS,
    TAIL_COLUMNS,
    Best,
    Interval,
    accumulate,
    averages,
    clip_grad_norms,
    make_optimizer,
    make_scheduler,
    pick_backend,
    resolve_point,
    set_lr,
    summary_head,
    to_tensor,
)
from lstmlab.tasks import make_task
from lstmlab.tasks.datasets import load as load_dataset


def train_single(cfg: ExperimentConfig, runs_dir: str | Path = "runs", data_dir: str | Path = "data") -> dict:
    """Train `cfg` from step 0 in <runs_dir>/<experiment>/<run-name> (what was there is replaced); its summary."""
    # -- data: the task's splits, on the device --
    task, dataset = make_task(cfg.task), load_dataset(cfg.task, data_dir, log=lambda _: None)
    cfg = resolve_point(cfg, dataset.spec)  # model.param_budget -> hidden_size
    device, dtype = pick_device(cfg.train.device), getattr(torch, cfg.train.dtype)
    data = {split: {k: to_tensor(v, device, dtype) for k, v in arrays.items()}
            for split, arrays in dataset.splits.items()}  # fmt: skip
    n_train = len(data["train"]["inputs"])
    # -- model and optimizer: initial weights, then dropout masks, from the run's seed --
    if cfg.train.threads:
        check_threads(cfg.train.threads)
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, dataset.spec).to(device=device, dtype=dtype)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, task.higher_is_better)  # ReduceLROnPlateau, or none
    batches = torch.Generator().manual_seed(cfg.train.seed)  # the run's batch order
    # -- the run folder: config, env, summary while it trains --
    run, config = RunFolder(Path(runs_dir) / cfg.experiment / run_name(cfg)), cfg.model_dump(mode="json")
    with run.lock():
        run.prepare(config, restart=True)
        summary = summary_head(cfg, run, task, dataset, count_parameters(model), device, pick_backend(cfg, device))
        run.write_config(cfg.dump_yaml())
        run.write_env({**environment(device, summary["backend"], None),
                       "pack": {"size": 1, "members": [run.path.name]},
                       "data": data_source(dataset.folder, dataset.meta)})
        run.write_summary(summary)
        best, bad_evals, interval, columns, started = Best(), 0, Interval(), None, time.perf_counter()
        for step in range(cfg.train.steps):
            # -- one optimizer step --
            tic = time.perf_counter()
            model.train()
            index = torch.randint(n_train, (cfg.train.batch_size,), generator=batches).to(device)
            batch = {k: v[index] for k, v in data["train"].items()}  # (B, T, ...)
            set_lr(optimizer, cfg, step)
            output = model(batch["inputs"])  # (B, C) or (B, T, C)
            loss = task.loss(output, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clip_grad_norms([list(model.parameters())], [cfg.train.grad_clip or float("inf")])[0]
            optimizer.step()
            interval.add(loss.detach(), grad_norm, task.score(output.detach(), batch), cfg.train.batch_size)
            interval.seconds += time.perf_counter() - tic
            # -- evaluate: metrics rows, best weights, schedule, checkpoint, early stop --
            done = step + 1
            if done % cfg.train.eval_every and done != cfg.train.steps:
                continue
            val, (train_scores, mean_norm) = evaluate(model, task, data["val"], cfg), interval.means()
            if not all(math.isfinite(v) for v in [*val.values(), *train_scores.values()]):
                raise FloatingPointError(f"a metric became non-finite at step {done}")  # train_pack: run "failed"
            common = {"step": done, "epoch": done * cfg.train.batch_size / n_train,
                      "lr": optimizer.param_groups[0]["lr"], "elapsed_s": time.perf_counter() - started,
                      "grad_norm": mean_norm, "seq_per_s": interval.seqs / max(interval.seconds, 1e-9)}
            columns = columns or LEAD_COLUMNS + [k for k in val if k != "loss"] + TAIL_COLUMNS
            run.append_metrics([{**common, "split": "train", **train_scores}, {**common, "split": "val", **val}],
                               columns)
            interval = Interval()
            better = max if task.higher_is_better else min
            if best.val is None or better(val[task.metric], best.val[task.metric]) != best.val[task.metric]:
                best, bad_evals = Best(done, val, {k: v.detach().clone() for k, v in model.state_dict().items()}), 0
            else:
                bad_evals += 1
            if cfg.train.schedule == "plateau":
                scheduler.step(val[task.metric])
            run.save_checkpoint({"step": done, "elapsed": time.perf_counter() - started, "bad_evals": bad_evals,
                                 "best": best.state_dict(), "interval": interval.state_dict(),
                                 "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(),
                                 "rng": {"torch": torch.get_rng_state(), "batches": batches.get_state(),
                                         "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}},
                                config=config)  # the format train_pack writes and resumes from
            if cfg.train.early_stop_patience and bad_evals >= cfg.train.early_stop_patience:
                break
        # -- finish: the best-by-validation weights on the test split --
        final_val = best.val if best.step == done else evaluate(model, task, data["val"], cfg)
        model.load_state_dict(best.weights)
        test = evaluate(model, task, data["test"], cfg)
        metric, threshold = test[task.metric], dataset.meta["solve_threshold"]
        wall = time.perf_counter() - started
        test_row = {"step": done, "epoch": done * cfg.train.batch_size / n_train, "split": "test", **test,
                    "lr": optimizer.param_groups[0]["lr"], "elapsed_s": wall}
        solved = None if threshold is None else metric >= threshold if task.higher_is_better else metric <= threshold
        summary.update({"status": "completed", "step": done, "best_step": best.step, "best_val": best.val,
                        "final_val": final_val, "test": test, "test_metric": metric, "wall_s": wall,
                        "solved": None if solved is None else bool(solved),  # None: no threshold (arrays tasks)
                        "converged": run_converged(run.metrics(), task.metric, task.higher_is_better)})
        run.complete(test_row, columns, summary)
    return run.summary()  # as written: the format stamp included


@torch.no_grad()
def evaluate(model: torch.nn.Module, task, split: dict[str, torch.Tensor], cfg: ExperimentConfig) -> dict[str, float]:
    """Every metric of the task over a whole split: sums over batches, then one division (metric = Σ / count)."""
    model.eval()
    sums: dict[str, list] = {}
    for start in range(0, len(split["inputs"]), cfg.train.eval_batch_size):
        batch = {k: v[start : start + cfg.train.eval_batch_size] for k, v in split.items()}
        accumulate(sums, task.score(model(batch["inputs"]), batch))
    return averages(sums)
