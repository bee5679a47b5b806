"""Run every point of a config's sweep, one run folder each; a failed run does not stop the others.

With `jobs > 1` the runs go to that many worker processes, each with its share of the CPU threads and,
where there are several GPUs, a GPU of its own. Every run is seeded by its own config, so the run folders
and their metrics do not depend on `jobs` (on CPU the numbers are the same; only timings differ).

Points of the sweep that resolve to the same config (`model.layers=1,1`, `train.seed=0,0.0`) run once.
A run that another process is training (its folder is locked) is skipped and listed as such.

Ctrl-C and SIGTERM: each running run finishes its optimizer step, saves a checkpoint and marks itself
`interrupted`; runs not yet started are not started. The same command again skips completed runs and
resumes the rest. Workers die with their parent: if the parent is killed, each worker gets SIGTERM
(a training one stops at its next step boundary with a checkpoint, an idle one exits).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from lstmlab.config import ExperimentConfig
from lstmlab.errors import ConfigError, UserError
from lstmlab.runs import RunBusy, RunFolder, RunInterrupted

# What a sweep did with each run, in the order the listing shows them, with the listing's words.
OUTCOMES = {
    "completed": "completed",
    "skipped": "skipped (already completed)",
    "busy": "skipped (being trained by another process)",
    "refused": "refused",
    "failed": "failed",
    "interrupted": "interrupted",
}
GRACE_S = 2.0  # after Ctrl-C, how long workers get to stop on their own before they are asked directly
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class Outcome:
    name: str
    path: Path | None
    status: str  # a key of OUTCOMES
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
    """Train every distinct point; log one line per run as it ends, then the listing by outcome."""
    from lstmlab.tasks.datasets import generate

    swept = tuple(cfg.sweep)
    points = distinct_points(cfg, log)
    log(f"{cfg.experiment}: {len(points)} run(s) of task {cfg.task.name} -> {Path(runs_dir) / cfg.experiment}")
    kwargs = dict(runs_dir=runs_dir, data_dir=data_dir, swept_keys=swept, restart=restart, quiet=quiet, argv=argv)
    with sigterm_like_ctrl_c():
        for task_cfg in {p.task.model_dump_json(): p.task for p in points}.values():
            generate(task_cfg, data_dir, log=log)  # before any worker starts, so that no two generate the same data
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


def distinct_points(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> list[ExperimentConfig]:
    """The sweep's points with repeats dropped (one note per repeated run); ConfigError when two different
    points would share a run folder."""
    from lstmlab.train import run_name

    swept = tuple(cfg.sweep)
    points: dict[str, ExperimentConfig] = {}
    repeats: dict[str, int] = {}
    folders: dict[str, str] = {}
    for point in cfg.runs():
        key, name = point.model_dump_json(), run_name(point, swept)
        if key in points:
            repeats[name] = repeats.get(name, 1) + 1
            continue
        if name in folders:
            raise ConfigError(f"sweep: two different points would share the run folder {name} (their values "
                              "differ only in characters a folder name cannot hold); change one of them")
        points[key], folders[name] = point, key
    for name, count in repeats.items():
        log(f"note: the sweep lists run {name} {count} times (repeated values); it runs once")
    return list(points.values())


def describe(outcome: Outcome) -> str:
    """One line for one run, as it ends."""
    if outcome.status == "busy":
        return outcome.detail  # "<run folder> is being trained by another process (pid N on host H); skipped"
    return f"{outcome.name}: {OUTCOMES[outcome.status]}{' — ' + outcome.detail if outcome.detail else ''}"


def listing(outcomes: list[Outcome]) -> list[str]:
    """What the sweep did, by outcome: one line each for completed, skipped, busy, refused, failed, interrupted."""
    lines = []
    for status, words in OUTCOMES.items():
        names = [o.name for o in outcomes if o.status == status]
        if names:
            lines.append(f"{words} ({len(names)}): {', '.join(names)}")
    return lines


def exit_code(outcomes: list[Outcome]) -> int:
    """130 when a run was interrupted, 2 when one was refused (bad input), 1 when one failed, else 0."""
    statuses = {o.status for o in outcomes}
    for status, code in (("interrupted", 130), ("refused", 2), ("failed", 1)):
        if status in statuses:
            return code
    return 0


@contextlib.contextmanager
def sigterm_like_ctrl_c() -> Iterator[None]:
    """In the main thread, SIGTERM raises a KeyboardInterrupt (RunInterrupted) as Ctrl-C does, so both stop
    a sweep the same way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise RunInterrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use, not the machine's
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _run_parallel(points: list[ExperimentConfig], kwargs: dict, jobs: int, log: Callable[[str], None]) -> list[Outcome]:
    import torch

    threads = max(1, cpu_count() // jobs)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    log(f"running {len(points)} runs, {jobs} at a time ({threads} CPU thread(s) each)")
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads or CUDA state inherited
    counter, stop = context.Value("i", 0), context.Event()
    outcomes: dict[int, Outcome] = {}
    lost: list[int] = []  # runs whose worker died: their folders say what happened once the pool is down
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                               initargs=(os.getpid(), counter, stop, threads, gpus))
    futures: dict[Future, int] = {}
    try:
        futures = {pool.submit(_run_one, point, {**kwargs, "quiet": True}, None): i for i, point in enumerate(points)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                outcomes[i] = future.result()
            except KeyboardInterrupt:  # this worker alone was interrupted: its run is checkpointed, the sweep goes on
                outcomes[i] = Outcome(_name(points[i], kwargs), None, "interrupted",
                                      "checkpoint saved; run the same command again to resume")
            except BrokenProcessPool:
                lost.append(i)
                continue
            log(describe(outcomes[i]))
    except KeyboardInterrupt as e:
        stop.set()  # a run already handed to a worker's queue (the executor queues ahead) will not start
        _stop(pool, futures, getattr(e, "signal", "SIGINT"))
        raise
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)  # joins every worker: those stopped with the pool have saved their runs by now
    for i in lost:
        outcomes[i] = _outcome_from_folder(points[i], kwargs)
        log(describe(outcomes[i]))
    return [outcomes[i] for i in range(len(points))]


def _name(point: ExperimentConfig, kwargs: dict) -> str:
    from lstmlab.train import run_name

    return run_name(point, kwargs["swept_keys"])


def _outcome_from_folder(point: ExperimentConfig, kwargs: dict) -> Outcome:
    """The outcome of a run whose worker process died, read from its run folder."""
    name = _name(point, kwargs)
    run = RunFolder(Path(kwargs["runs_dir"]) / point.experiment / name)
    summary = run.summary() if run.exists() else None
    status = summary.get("status") if isinstance(summary, dict) else None
    if status == "completed":
        return Outcome(name, run.path, "completed", "")
    if status == "interrupted":
        return Outcome(name, run.path, "interrupted",
                       f"its worker was stopped by {summary.get('signal') or 'a signal'}; checkpoint saved")
    return Outcome(name, run.path if summary else None, "failed",
                   "its worker process died (killed, or out of memory?)")


def _stop(pool: ProcessPoolExecutor, futures: dict[Future, int], signal_name: str) -> None:
    """Start no new runs; let the running ones checkpoint and mark themselves interrupted, then return.

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


_STOP = None  # in a worker: the parent's event that says "start no more runs"


def _init_worker(parent_pid: int, counter, stop, threads: int, gpus: int) -> None:
    global _STOP
    _STOP = stop
    # Between runs a worker ignores Ctrl-C (the parent decides what happens next) and ends on SIGTERM; during
    # a run, train() handles both: it stops at the next step boundary with a checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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


def _run_one(point: ExperimentConfig, kwargs: dict, log: Callable[[str], None] | None) -> Outcome:
    from lstmlab.train import RunFailed, RunInterrupted, train

    name = _name(point, kwargs)
    if _STOP is not None and _STOP.is_set():
        return Outcome(name, None, "interrupted", "not started: the sweep was interrupted")
    try:
        result = train(point, log=log or (lambda _: None), **kwargs)
    except RunBusy as e:
        return Outcome(name, e.path, "busy", str(e))
    except UserError as e:  # this run's folder or data is not right; the sweep goes on
        return Outcome(name, None, "refused", str(e))
    except RunFailed as e:  # the run's summary says why; the sweep goes on
        return Outcome(name, e.path, "failed", str(e))
    except RunInterrupted as e:
        if _STOP is not None and e.signal == "SIGTERM":  # a worker told to end (its parent died, the job ends)
            signal.raise_signal(signal.SIGTERM)  # its run is saved; the parent, if alive, reads the folder
        raise
    if result.status == "skipped":
        return Outcome(name, result.path, "skipped", "")
    summary = result.summary
    detail = ""
    if isinstance(summary.get("test_metric"), (int, float)):
        detail = f"test {summary.get('metric', 'metric')} {summary['test_metric']:.4g}"
        if isinstance(summary.get("wall_s"), (int, float)):
            detail += f" in {summary['wall_s']:.1f} s"
    return Outcome(name, result.path, result.status, detail)
