"""Run every point of a config's sweep, one run folder each; a failed run does not stop the others.

With `jobs > 1` the runs go to that many worker processes, each with its share of the CPU threads and,
where there are several GPUs, a GPU of its own.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lstmlab.config import ExperimentConfig


@dataclass
class Outcome:
    name: str
    path: Path | None
    status: str  # completed | skipped | failed | interrupted
    detail: str = ""


def run_sweep(
    cfg: ExperimentConfig,
    *,
    runs_dir: str | Path,
    data_dir: str | Path,
    restart: bool = False,
    quiet: bool = False,
    jobs: int = 1,
    argv: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> list[Outcome]:
    from lstmlab.tasks.datasets import generate

    points = list(cfg.runs())
    swept = tuple(cfg.sweep)
    for task_cfg in {p.task.model_dump_json(): p.task for p in points}.values():
        generate(task_cfg, data_dir)  # before any worker starts, so that no two generate the same data
    kwargs = dict(runs_dir=runs_dir, data_dir=data_dir, swept_keys=swept, restart=restart, quiet=quiet, argv=argv)
    if jobs <= 1 or len(points) <= 1:
        return [_run_one(point, kwargs, log) for point in points]

    import torch

    threads = max(1, (os.cpu_count() or 1) // jobs)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    outcomes: dict[int, Outcome] = {}
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                             initargs=(counter, threads, gpus)) as pool:
        futures = {pool.submit(_run_one, point, {**kwargs, "quiet": True}, None): i for i, point in enumerate(points)}
        for future in as_completed(futures):
            outcome = future.result()
            log(f"{outcome.name}: {outcome.status}{' — ' + outcome.detail if outcome.detail else ''}")
            outcomes[futures[future]] = outcome
    return [outcomes[i] for i in range(len(points))]


def _init_worker(counter, threads: int, gpus: int) -> None:
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if gpus > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    import torch

    torch.set_num_threads(threads)


def _run_one(point: ExperimentConfig, kwargs: dict, log: Callable[[str], None] | None) -> Outcome:
    from lstmlab.train import RunFailed, run_name, train

    name = run_name(point, kwargs["swept_keys"])
    try:
        result = train(point, log=log or (lambda _: None), **kwargs)
    except RunFailed as e:  # the run's summary says why; the sweep goes on
        return Outcome(name, e.path, "failed", str(e))
    return Outcome(name, result.path, result.status)
