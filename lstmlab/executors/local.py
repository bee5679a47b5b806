"""Units on this machine: one after another in this process (`--jobs 1`), or in `--jobs N` worker processes.

Workers are fresh interpreters (spawn: no torch threads or CUDA state inherited), each with its share of
the CPU threads and, where there are several GPUs, a GPU of its own.

Ctrl-C: each running unit finishes its optimizer step, saves a checkpoint and marks its runs interrupted;
units not yet started are not started.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from lstmlab.executors import Finished, Interrupted, call_unit, finished

GRACE_S = 2.0  # after Ctrl-C, how long workers get to stop on their own before they are asked directly


def make(options: dict[str, Any], *, jobs: int, work_dir: Path) -> LocalExecutor:
    return LocalExecutor(jobs)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use, not the machine's
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


class LocalExecutor:
    def __init__(self, jobs: int = 1):
        self.jobs = jobs
        self.in_process = jobs <= 1

    def run(self, unit_fn: Callable[[Any], Any], units: Sequence[Any], labels: Sequence[str],
            log: Callable[[str], None]) -> Iterator[Finished]:
        if self.in_process or len(units) <= 1:
            for i, unit in enumerate(units):
                yield Finished(i, result=unit_fn(unit))  # Ctrl-C propagates: the sweep stops here
            return
        yield from self._run_parallel(unit_fn, units, min(self.jobs, len(units)), log)

    def _run_parallel(self, unit_fn, units, jobs: int, log) -> Iterator[Finished]:
        import torch

        threads = max(1, cpu_count() // jobs)
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        log(f"running {len(units)} runs, {jobs} at a time ({threads} CPU thread(s) each)")
        context = multiprocessing.get_context("spawn")
        counter, stop = context.Value("i", 0), context.Event()
        pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(counter, stop, gpus))
        futures: dict[Future, int] = {}
        try:
            futures = {pool.submit(_call_unless_stopped, unit_fn, unit, threads): i for i, unit in enumerate(units)}
            for future in as_completed(futures):
                yield _collect(future, futures[future])
        except KeyboardInterrupt:
            stop.set()  # a unit already handed to a worker's queue (the pool queues ahead) will not start
            _stop(pool, futures)
            raise
        except BaseException:  # the consumer stopped early, or failed: start nothing more
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


def _collect(future: Future, index: int) -> Finished:
    try:
        return finished(index, future.result())
    except BrokenProcessPool as e:
        return Finished(index, error=f"its worker process died ({e}); killed, or out of memory?")
    except Exception as e:  # noqa: BLE001 - the unit's own error, reported and not fatal to the others
        return Finished(index, error=f"{type(e).__name__}: {e}")


def _stop(pool: ProcessPoolExecutor, futures: dict[Future, int]) -> None:
    """Start no new units; let the running ones checkpoint and mark themselves interrupted, then return."""
    for future in futures:
        future.cancel()
    workers = list(getattr(pool, "_processes", {}).values())  # the pool keeps no public list of its workers
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


_STOP = None  # in a worker: the parent's event that says "start no more units"


def _init_worker(counter, stop, gpus: int) -> None:
    global _STOP
    _STOP = stop
    # Between units a worker ignores Ctrl-C (the parent decides what happens next); during a run, train()
    # installs its own handler that stops at the next step boundary with a checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if gpus > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)


def _call_unless_stopped(unit_fn: Callable[[Any], Any], unit: Any, threads: int) -> Any:
    if _STOP is not None and _STOP.is_set():
        return Interrupted()  # not started: the sweep was interrupted
    return call_unit(unit_fn, unit, threads)
