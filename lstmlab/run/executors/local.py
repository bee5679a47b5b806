"""The local executor: a sweep's units on this machine, one after another in this process (`--jobs 1`), or
in `jobs` worker processes, each with its share of the CPU threads and, where there are several GPUs, a GPU of
its own.

    executor = make_executor("local", jobs=4)
    for finished in executor.run(unit_fn, units, labels, log, on_steps=progress.steps):
        ...  # finished.index, finished.result | finished.error | finished.interrupted

In this process `unit_fn(unit, log=log, on_steps=on_steps)` is called and sees both; in a worker process
`unit_fn(unit)` is called, and the member steps it trains reach `on_steps` through a shared counter
(`step_counter()` inside the worker). Workers are started fresh (spawn: no torch threads or CUDA state
inherited) and die with their parent: if the parent is killed, each worker gets SIGTERM (a training one stops
at its next step boundary with a checkpoint, an idle one exits).

Ctrl-C or SIGTERM (the sweep turns SIGTERM into a KeyboardInterrupt: lstmlab.run.sweep.sigterm_like_ctrl_c):
no unit starts any more, the running ones finish their optimizer step, checkpoint and mark themselves
interrupted, and KeyboardInterrupt is raised again. A signal that reaches a worker stops the sweep from that
worker too (stop_sweep, _start_no_more_units): Ctrl-C at a terminal reaches the workers with the parent, and
they may act first. A unit whose worker alone was interrupted, or whose worker died, comes back without a
result (interrupted, or with an error): its run folders say what became of it, and after a signal no other
unit starts.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from lstmlab.run.executors import Finished
from lstmlab.run.folder import RunInterrupted

GRACE_S = 2.0  # after Ctrl-C, how long workers get to stop on their own before they are asked directly
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WORKER_DIED = "its worker process died (killed, or out of memory?)"

SIGNALLED: list[str] = []  # in the parent: SIGINT/SIGTERM received during the sweep (sigterm_like_ctrl_c)
_STOP = None  # in a worker: the parent's event that says "start no more units"
_WORKER_SIGNALLED = False  # in a worker: a signal reached this worker (it starts no more units)
_STEPS = None  # in a worker: the parent's count of member steps trained (the study's progress)


def make(options: dict[str, Any], *, work_dir: Path, jobs: int = 1) -> LocalExecutor:
    return LocalExecutor(jobs)


class LocalExecutor:
    def __init__(self, jobs: int = 1):
        self.jobs = max(1, int(jobs))

    def run(self, unit_fn: Callable[..., Any], units: Sequence[Any], labels: Sequence[str],
            log: Callable[[str], None], on_steps: Callable[[int], None] | None = None) -> Iterator[Finished]:
        if self.jobs <= 1 or len(units) <= 1:
            for index, unit in enumerate(units):  # a KeyboardInterrupt goes through: the unit checkpointed
                yield Finished(index, result=unit_fn(unit, log=log, on_steps=on_steps))
        else:
            yield from _run_parallel(unit_fn, units, min(self.jobs, len(units)), log, on_steps)


# -- inside a worker: what run_unit asks ---------------------------------------------------------------


def in_worker() -> bool:
    return _STEPS is not None


def stopping() -> bool:
    """In a worker: the sweep was interrupted, or a signal reached this worker: start no more units."""
    return _STOP is not None and (_WORKER_SIGNALLED or _STOP.is_set())


def stop_sweep() -> None:
    """In a worker whose unit a signal stopped: start no more units, here or in any other worker. Ctrl-C or a
    scheduler's SIGTERM reaches every process of the group at once, and a worker can end its interrupted unit
    and take the next one before the parent has set the event; the worker sets it itself, before it takes
    another. A no-op outside a worker."""
    global _WORKER_SIGNALLED
    if _STOP is not None:
        _WORKER_SIGNALLED = True
        _STOP.set()


def _start_no_more_units(signum, frame) -> None:
    """A worker's SIGINT handler between units. A flag only: a handler must not take the shared event's lock,
    which the interrupted code of this thread may be holding (stopping() reads the event under it)."""
    global _WORKER_SIGNALLED
    _WORKER_SIGNALLED = True


def step_counter() -> Callable[[int], None] | None:
    """In a worker: on_steps(n) adds n member steps to the parent's count; None elsewhere."""
    return _count_steps if _STEPS is not None else None


def _count_steps(n: int) -> None:
    with _STEPS.get_lock():
        _STEPS.value += n


# -- worker processes ----------------------------------------------------------------------------------


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use, not the machine's
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _run_parallel(unit_fn: Callable[[Any], Any], units: Sequence[Any], jobs: int, log: Callable[[str], None],
                  on_steps: Callable[[int], None] | None) -> Iterator[Finished]:
    import torch

    threads = max(1, cpu_count() // jobs)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    runs = sum(len(u) for u in units)
    log(f"running {runs} runs, {jobs} at a time ({threads} CPU thread(s) each)" if runs == len(units) else
        f"running {len(units)} packs of {runs} runs, {jobs} at a time ({threads} CPU thread(s) each)")
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads or CUDA state inherited
    counter, stop, steps = context.Value("i", 0), context.Event(), context.Value("q", 0)
    lost: list[int] = []  # units whose worker died: reported once the pool is down
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                               initargs=(os.getpid(), counter, stop, steps, threads, gpus))
    futures: dict[Future, int] = {}
    try:
        futures = {pool.submit(unit_fn, unit): index for index, unit in enumerate(units)}
        pending, reported = set(futures), 0
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            if SIGNALLED:  # the signal's KeyboardInterrupt was raised where it could not reach this loop
                raise RunInterrupted(SIGNALLED[-1])
            if on_steps is not None and steps.value > reported:
                on_steps(steps.value - reported)
                reported = steps.value
            for future in done:
                index = futures[future]
                try:
                    finished = Finished(index, result=future.result())
                except KeyboardInterrupt:  # this worker alone was interrupted: its runs are checkpointed
                    finished = Finished(index, interrupted=True)
                except BrokenProcessPool:
                    lost.append(index)
                    continue
                yield finished  # outside the try: an interrupt thrown in here stops the whole pool (below)
    except KeyboardInterrupt as e:
        stop.set()  # a unit already handed to a worker's queue (the executor queues ahead) will not start
        _stop(pool, futures, getattr(e, "signal", "SIGINT"))
        raise
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)  # joins every worker: those stopped with the pool have saved their runs by now
    for index in lost:
        yield Finished(index, error=WORKER_DIED)


def _stop(pool: ProcessPoolExecutor, futures: dict[Future, int], signal_name: str) -> None:
    """Start no new units; let the running ones checkpoint and mark themselves interrupted, then return.

    SIGTERM is passed on to the workers at once (a second SIGTERM changes nothing for one that got it
    too). After SIGINT the workers get a moment first: a Ctrl-C at the terminal reached them as well, and
    a second Ctrl-C would stop them mid-step."""
    for future in futures:
        future.cancel()
    workers = list(getattr(pool, "_processes", {}).values())  # the executor keeps no public list of its workers
    if signal_name != "SIGTERM":
        deadline = time.monotonic() + GRACE_S
        while any(f.running() for f in futures) and time.monotonic() < deadline:
            time.sleep(0.05)
    for worker in workers:  # a signal sent to this process alone: pass it on
        if worker.is_alive() and any(f.running() for f in futures):
            try:
                os.kill(worker.pid, signal.SIGTERM if signal_name == "SIGTERM" else signal.SIGINT)
            except (ProcessLookupError, TypeError):
                pass
    pool.shutdown(wait=True, cancel_futures=True)


def _init_worker(parent_pid: int, counter, stop, steps, threads: int, gpus: int) -> None:
    global _STOP, _STEPS
    _STOP, _STEPS = stop, steps
    # Between units Ctrl-C only says "start no more units" (the parent decides what happens next) and SIGTERM
    # ends the worker; during a unit, train_pack() handles both: it stops at the next step boundary with a
    # checkpoint, and run_unit() then says "start no more units" too.
    signal.signal(signal.SIGINT, _start_no_more_units)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(parent_pid)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if gpus > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    import torch

    torch.set_num_threads(threads)


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux: prctl PR_SET_PDEATHSIG);
    elsewhere a watchdog thread checks the parent's pid every second and does the same."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        armed = False
    if os.getppid() != parent_pid:  # the parent died before the kernel was asked to watch it
        os.kill(os.getpid(), signal.SIGTERM)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="lstmlab-parent-watchdog", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
