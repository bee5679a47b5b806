"""Run every point of a config's sweep, one run folder each; a failed run does not stop the others.

With `jobs > 1` the runs go to that many worker processes, each with its share of the CPU threads and,
where there are several GPUs, a GPU of its own. Every run is seeded by its own config, so the run folders
and their metrics do not depend on `jobs` (on CPU the numbers are the same; only timings differ).

Ctrl-C: each running run finishes its optimizer step, saves a checkpoint and marks itself `interrupted`;
runs not yet started are not started. The same command again skips completed runs and resumes the rest.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from lstmlab.config import ExperimentConfig

STATUSES = ("completed", "skipped", "failed", "interrupted")
GRACE_S = 2.0  # after Ctrl-C, how long workers get to stop on their own before they are asked directly


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
        outcomes = []
        for point in points:
            outcomes.append(_run_one(point, kwargs, log))
            log(describe(outcomes[-1]))
    else:
        outcomes = _run_parallel(points, kwargs, min(jobs, len(points)), log)
    for line in listing(outcomes):
        log(line)
    return outcomes


def describe(outcome: Outcome) -> str:
    return f"{outcome.name}: {outcome.status}{' — ' + outcome.detail if outcome.detail else ''}"


def listing(outcomes: list[Outcome]) -> list[str]:
    """What the sweep did, by status: one line each for completed, skipped, failed and interrupted runs."""
    lines = []
    for status in STATUSES:
        names = [o.name for o in outcomes if o.status == status]
        if names:
            what = "skipped (already completed)" if status == "skipped" else status
            lines.append(f"{what} ({len(names)}): {', '.join(names)}")
    return lines


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use, not the machine's
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _run_parallel(points: list[ExperimentConfig], kwargs: dict, jobs: int, log: Callable[[str], None]) -> list[Outcome]:
    import torch

    from lstmlab.train import run_name

    threads = max(1, cpu_count() // jobs)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    log(f"running {len(points)} runs, {jobs} at a time ({threads} CPU thread(s) each)")
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads or CUDA state inherited
    counter, stop = context.Value("i", 0), context.Event()
    outcomes: dict[int, Outcome] = {}
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                               initargs=(counter, stop, threads, gpus))
    futures: dict[Future, int] = {}
    try:
        futures = {pool.submit(_run_one, point, {**kwargs, "quiet": True}, None): i for i, point in enumerate(points)}
        for future in as_completed(futures):
            i = futures[future]
            outcomes[i] = _collect(future, run_name(points[i], kwargs["swept_keys"]))
            log(describe(outcomes[i]))
    except KeyboardInterrupt:
        stop.set()  # a run already handed to a worker's queue (the executor queues ahead) will not start
        _stop(pool, futures)
        raise
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [outcomes[i] for i in range(len(points))]


def _collect(future: Future, name: str) -> Outcome:
    try:
        return future.result()
    except KeyboardInterrupt:  # this worker alone was interrupted: its run is checkpointed, the sweep goes on
        return Outcome(name, None, "interrupted", "checkpoint saved; run the same command again to resume")
    except BrokenProcessPool as e:
        return Outcome(name, None, "failed", f"its worker process died ({e}); killed, or out of memory?")


def _stop(pool: ProcessPoolExecutor, futures: dict[Future, int]) -> None:
    """Start no new runs; let the running ones checkpoint and mark themselves interrupted, then return."""
    for future in futures:
        future.cancel()
    workers = list(getattr(pool, "_processes", {}).values())  # the executor keeps no public list of its workers
    deadline = time.monotonic() + GRACE_S
    while any(f.running() for f in futures) and time.monotonic() < deadline:
        time.sleep(0.05)  # a Ctrl-C at the terminal reached the workers too: they stop at their next step
    for worker in workers:  # a SIGINT sent to this process alone did not: pass it on (idle workers ignore it)
        if worker.is_alive() and any(f.running() for f in futures):
            try:
                os.kill(worker.pid, signal.SIGINT)
            except (ProcessLookupError, TypeError):
                pass
    pool.shutdown(wait=True, cancel_futures=True)


_STOP = None  # in a worker: the parent's event that says "start no more runs"


def _init_worker(counter, stop, threads: int, gpus: int) -> None:
    global _STOP
    _STOP = stop
    # Between runs a worker ignores Ctrl-C (the parent decides what happens next); during a run, train()
    # installs its own handler that stops at the next step boundary with a checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
    if _STOP is not None and _STOP.is_set():
        return Outcome(name, None, "interrupted", "not started: the sweep was interrupted")
    try:
        result = train(point, log=log or (lambda _: None), **kwargs)
    except RunFailed as e:  # the run's summary says why; the sweep goes on
        return Outcome(name, e.path, "failed", str(e))
    summary = result.summary
    detail = ""
    if isinstance(summary.get("test_metric"), (int, float)):
        detail = f"test {summary.get('metric', 'metric')} {summary['test_metric']:.4g}"
        if isinstance(summary.get("wall_s"), (int, float)):
            detail += f" in {summary['wall_s']:.1f} s"
    return Outcome(name, result.path, result.status, detail)
