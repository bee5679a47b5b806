"""Run every point of a config's sweep, one run folder each; a failed run does not stop the others.

Two steps, kept apart so that another executor can take the second one over:

    plan_sweep(points, options, pack) -> Plan     which runs, resolved and named, grouped into units of work
    execute(units, options, jobs)     -> outcomes, streamed unit by unit as each one ends
    execute_on(cluster, units, ...)   -> the same, with each unit a Slurm job or a Ray task (lstmlab.run.executors)

A unit is a pack of runs that train together (lstmlab.run.packing: runs of one architecture that differ only
in seeds and other keys that change no shape) or one run alone. `run_unit(unit, options)` trains one unit
in the calling process and returns one Outcome per run; it is top-level and its arguments are plain data,
so it can be shipped as it is to a worker process, a cluster task or a Ray task. Every run is seeded by
its own config and writes its own folder, so the folders and their numbers depend neither on the packing
nor on `jobs` (on CPU the numbers are the same to rounding; only timings differ).

With `jobs > 1` the units go to that many worker processes, each with its share of the CPU threads and,
where there are several GPUs, a GPU of its own. With a cluster executor the same units go to the cluster,
and the runs dir and data dir are made absolute first (the nodes must see them at the same path).
Completed runs are taken out in the plan, so a rerun submits only what is left.

Points of the sweep that resolve to the same config (`model.layers=1,1`, `train.seed=0,0.0`) run once.
A run that another process is training (its folder is locked) is skipped and listed as such.

Ctrl-C and SIGTERM: each running run finishes its optimizer step, saves a checkpoint and marks itself
`interrupted`; units not yet started are not started. The same command again skips completed runs and
resumes the rest (members regroup into packs by the step their checkpoints hold). Workers die with their
parent: if the parent is killed, each worker gets SIGTERM (a training one stops at its next step boundary
with a checkpoint, an idle one exits).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmlab.config import ExperimentConfig
from lstmlab.errors import ConfigError, UserError
from lstmlab.run.folder import RunFolder, RunInterrupted
from lstmlab.run.packing import Point, Unit

if TYPE_CHECKING:
    from lstmlab.run.executors import Executor

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
    pack: int | str = "auto",
    executor: str = "local",
    executor_options: Sequence[str] = (),
    argv: list[str] | None = None,
    tensorboard: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> list[Outcome]:
    """Train every distinct point, `pack` runs at most to a pack (an int, or "auto"); log one line per run
    as it ends, then the listing by outcome. Outcomes come back in the sweep's order.

    `executor`: where the units run (lstmlab.run.executors): `local` (here, or `jobs` worker processes),
    `submitit` or `ray`, with its `executor_options` (KEY=VALUE texts). `tensorboard`: a folder where every
    run also logs its evaluations as TensorBoard scalars while it trains (needs the [tensorboard] extra)."""
    from lstmlab.run.executors import make_executor
    from lstmlab.run.progress import StudyProgress

    cluster = make_executor(executor, executor_options, jobs=jobs, work_dir=Path(runs_dir) / cfg.experiment)
    if cluster is not None:  # the tasks run elsewhere: they are handed paths that mean the same there
        runs_dir, data_dir = Path(runs_dir).resolve(), Path(data_dir).resolve()
        tensorboard = Path(tensorboard).resolve() if tensorboard is not None else None
    points = distinct_points(cfg, log)
    log(f"{cfg.experiment}: {len(points)} run(s) of task {cfg.task.name} -> {Path(runs_dir) / cfg.experiment}")
    options = UnitOptions(Path(runs_dir), Path(data_dir), tuple(cfg.sweep), restart, quiet, argv,
                          Path(tensorboard) if tensorboard is not None else None)
    with sigterm_like_ctrl_c():
        generate_datasets(points, data_dir, log)  # before any worker starts, so that no two generate the same data
        plan = plan_sweep(points, options, pack, jobs=jobs if cluster is None else 1)
        if len(plan.units) < sum(len(u) for u in plan.units):
            log(describe_plan(plan))
        outcomes = {o.name: o for o in plan.skipped}
        for outcome in plan.skipped:
            log(describe(outcome))
        with StudyProgress(len(points), plan.steps, done_runs=len(plan.skipped), quiet=quiet) as progress:
            units = execute(plan.units, options, jobs, log, progress.steps) if cluster is None else \
                execute_on(cluster, plan.units, options, log)
            try:
                for unit_outcomes in units:
                    for outcome in unit_outcomes:
                        outcomes[outcome.name] = outcome
                        log(describe(outcome))
                    progress.runs_done(len(unit_outcomes))
            except KeyboardInterrupt as e:  # it may arrive here, between two outcomes, rather than in the
                stop_units(units, e)  # executor's wait: the executor must still stop its workers
                raise
    ordered = [outcomes[name] for name in plan.names if name in outcomes]
    for line in listing(ordered):
        log(line)
    return ordered


# -- plan: which runs, resolved, named and packed ------------------------------------------------------


@dataclass(frozen=True)
class UnitOptions:
    """What every unit of a sweep is trained with (plain data: it travels with a unit to any executor)."""

    runs_dir: Path
    data_dir: Path
    swept_keys: tuple[str, ...]
    restart: bool = False
    quiet: bool = False
    argv: list[str] | None = None
    tensorboard: Path | None = None  # train --tensorboard DIR


@dataclass
class Plan:
    names: list[str]  # every run, in the sweep's order
    units: list[Unit]  # what is left to train, packed
    skipped: list[Outcome]  # runs already completed
    pack: int  # the most members a unit may hold

    @property
    def steps(self) -> int:
        """Member steps left to train."""
        return sum(p.cfg.train.steps - p.step for unit in self.units for p in unit.points)


def plan_sweep(points: list[ExperimentConfig], options: UnitOptions, pack: int | str, jobs: int = 1) -> Plan:
    """Resolve each point (its hidden size follows from its dataset), name it, look at its folder: a completed
    run is skipped, an unfinished one resumes from its checkpoint's step; then pack what is left (`auto`:
    lstmlab.run.packing.auto_pack_size for the device and `jobs` workers)."""
    from lstmlab.models.sequence import resolve_hidden_size
    from lstmlab.run.env import pick_device
    from lstmlab.run.folder import run_name
    from lstmlab.run.packing import Point, auto_pack_size, groups, plan

    specs: dict[str, Any] = {}
    names, todo, skipped = [], [], []
    for point in points:
        key = point.task.model_dump_json()
        if key not in specs:
            specs[key] = dataset_spec(point.task, options.data_dir)
        resolved = point.model_copy(update={"model": resolve_hidden_size(point.model, specs[key])})
        name = run_name(resolved, options.swept_keys)
        names.append(name)
        run = RunFolder(options.runs_dir / resolved.experiment / name)
        status, step = ("new", 0) if options.restart else folder_state(run, resolved)
        if status == "completed":
            skipped.append(Outcome(name, run.path, "skipped", ""))
        else:
            todo.append(Point(resolved, name, step))
    if pack == "auto":
        device_type = pick_device(points[0].train.device).type if points else "cpu"
        pack = auto_pack_size(device_type, [len(g) for g in groups(todo)], jobs)
    return Plan(names, plan(todo, int(pack)), skipped, int(pack))


def dataset_spec(task_cfg, data_dir: Path):
    """A generated dataset's TaskSpec, from its meta.json alone."""
    import json

    from lstmlab.tasks import make_task
    from lstmlab.tasks.datasets import dataset_dir

    meta = json.loads((dataset_dir(task_cfg, data_dir) / "meta.json").read_text())
    return make_task(task_cfg).spec(meta["info"])


def folder_state(run: RunFolder, cfg: ExperimentConfig) -> tuple[str, int]:
    """("completed", step) for a completed run of this config, else ("resume", its checkpoint's step) or
    ("new", 0). Anything unreadable counts as new here: training the run says what is wrong with it."""
    try:
        if not run.exists() or run.config() != cfg.model_dump(mode="json"):
            return "new", 0
        if run.status() == "completed":
            return "completed", cfg.train.steps
        if run.has_checkpoint():
            return "resume", int(run.load_checkpoint()["step"])
    except Exception:  # noqa: BLE001 (the run's own training reports it properly)
        pass
    return "new", 0


def describe_plan(plan: Plan) -> str:
    sizes = sorted({len(u) for u in plan.units}, reverse=True)
    runs = sum(len(u) for u in plan.units)
    return (f"{runs} run(s) to train in {len(plan.units)} unit(s) of {'/'.join(map(str, sizes))} "
            f"(--pack {plan.pack}: runs of one architecture train together)")


def generate_datasets(points: list[ExperimentConfig], data_dir: str | Path, log: Callable[[str], None]) -> None:
    from lstmlab.tasks.datasets import generate

    for task_cfg in {p.task.model_dump_json(): p.task for p in points}.values():
        generate(task_cfg, data_dir, log=log)


# -- execute: units, here or in worker processes; outcomes as each unit ends -----------------------------


def execute(units: list[Unit], options: UnitOptions, jobs: int, log: Callable[[str], None],
            on_steps: Callable[[int], None] | None = None) -> Iterator[list[Outcome]]:
    """Train the units one after another here (jobs 1) or in `jobs` worker processes; yield each unit's
    outcomes as it ends. on_steps(n): n more member steps trained (for the study's progress)."""
    if jobs <= 1 or len(units) <= 1:
        for unit in units:
            yield run_unit(unit, options, log=log, on_steps=on_steps)
    else:
        yield from _run_parallel(units, options, min(jobs, len(units)), log, on_steps)


def execute_on(cluster: Executor, units: list[Unit], options: UnitOptions,
               log: Callable[[str], None]) -> Iterator[list[Outcome]]:
    """Train the units as tasks of a cluster executor; yield each unit's outcomes as it ends. A unit that
    came back without outcomes (stopped by a signal, or its task lost for good) is read from its folders."""
    if not units:
        return  # nothing left to train: nothing is submitted
    unit_fn = functools.partial(run_unit, options=dataclasses.replace(options, quiet=True))
    labels = [", ".join(unit.names) for unit in units]
    for finished in cluster.run(unit_fn, units, labels, log):
        if finished.result is not None:
            yield finished.result
            continue
        outcomes = [_outcome_from_folder(p, options) for p in units[finished.index].points]
        if finished.error is not None:  # say why, unless its folder says it completed or stopped cleanly
            outcomes = [o if o.status != "failed" else dataclasses.replace(o, detail=finished.error) for o in outcomes]
        yield outcomes


def stop_units(units: Iterator[list[Outcome]], interrupt: KeyboardInterrupt) -> None:
    """Raise `interrupt` inside the executor's generator, where it stops the workers as a Ctrl-C in its own wait
    would (start no unit, let the running ones checkpoint); a generator already ended has nothing to stop."""
    try:
        units.throw(interrupt)
    except (KeyboardInterrupt, StopIteration):
        pass


def distinct_points(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> list[ExperimentConfig]:
    """The sweep's points with repeats dropped (one note per repeated run); ConfigError when two different
    points would share a run folder."""
    from lstmlab.run.folder import run_name

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
    a sweep the same way. Each signal is also recorded in _SIGNALLED: a KeyboardInterrupt raised where Python
    cannot propagate it (a finaliser, a callback) is printed and dropped, and the parallel loop would then go on
    starting units; it checks _SIGNALLED between its waits instead."""
    _SIGNALLED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        name = signal.Signals(signum).name
        _SIGNALLED.append(name)  # seen by the parallel loop even where the exception itself gets swallowed
        raise RunInterrupted(name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use, not the machine's
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _run_parallel(units: list[Unit], options: UnitOptions, jobs: int, log: Callable[[str], None],
                  on_steps: Callable[[int], None] | None) -> Iterator[list[Outcome]]:
    import torch

    threads = max(1, cpu_count() // jobs)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    runs = sum(len(u) for u in units)
    log(f"running {runs} runs, {jobs} at a time ({threads} CPU thread(s) each)" if runs == len(units) else
        f"running {len(units)} packs of {runs} runs, {jobs} at a time ({threads} CPU thread(s) each)")
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads or CUDA state inherited
    counter, stop, steps = context.Value("i", 0), context.Event(), context.Value("q", 0)
    lost: list[Unit] = []  # units whose worker died: their folders say what happened once the pool is down
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                               initargs=(os.getpid(), counter, stop, steps, threads, gpus))
    futures: dict[Future, Unit] = {}
    quiet = dataclasses.replace(options, quiet=True)
    try:
        futures = {pool.submit(run_unit, unit, quiet): unit for unit in units}
        pending, reported = set(futures), 0
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            if _SIGNALLED:  # the signal's KeyboardInterrupt was raised where it could not reach this loop
                raise RunInterrupted(_SIGNALLED[-1])
            if on_steps is not None and steps.value > reported:
                on_steps(steps.value - reported)
                reported = steps.value
            for future in done:
                unit = futures[future]
                try:
                    outcomes = future.result()
                except KeyboardInterrupt:  # this worker alone was interrupted: its runs are checkpointed
                    outcomes = [_outcome_from_folder(p, options) for p in unit.points]
                except BrokenProcessPool:
                    lost.append(unit)
                    continue
                yield outcomes  # outside the try: an interrupt thrown in here stops the whole pool (below)
    except KeyboardInterrupt as e:
        stop.set()  # a unit already handed to a worker's queue (the executor queues ahead) will not start
        _stop(pool, futures, getattr(e, "signal", "SIGINT"))
        raise
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)  # joins every worker: those stopped with the pool have saved their runs by now
    for unit in lost:
        yield [_outcome_from_folder(p, options) for p in unit.points]


def _outcome_from_folder(point: Point, options: UnitOptions) -> Outcome:
    """The outcome of a run whose worker process died or was stopped, read from its run folder."""
    run = RunFolder(options.runs_dir / point.cfg.experiment / point.name)
    summary = run.summary() if run.exists() else None
    status = summary.get("status") if isinstance(summary, dict) else None
    if status == "completed":
        return Outcome(point.name, run.path, "completed", "")
    if status == "interrupted":
        return Outcome(point.name, run.path, "interrupted",
                       f"its worker was stopped by {summary.get('signal') or 'a signal'}; checkpoint saved")
    return Outcome(point.name, run.path if summary else None, "failed",
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


_SIGNALLED: list[str] = []  # in the parent: SIGINT/SIGTERM received during the sweep (sigterm_like_ctrl_c)
_STOP = None  # in a worker: the parent's event that says "start no more units"
_STEPS = None  # in a worker: the parent's count of member steps trained (the study's progress)


def _init_worker(parent_pid: int, counter, stop, steps, threads: int, gpus: int) -> None:
    global _STOP, _STEPS
    _STOP, _STEPS = stop, steps
    # Between units a worker ignores Ctrl-C (the parent decides what happens next) and ends on SIGTERM; during
    # a unit, train_pack() handles both: it stops at the next step boundary with a checkpoint.
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


def _count_steps(n: int) -> None:
    with _STEPS.get_lock():
        _STEPS.value += n


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


def run_unit(unit: Unit, options: UnitOptions, *, log: Callable[[str], None] | None = None,
             on_steps: Callable[[int], None] | None = None) -> list[Outcome]:
    """Train one unit in this process; one Outcome per run, in the unit's order.

    Top-level, and `unit` and `options` are plain data: an executor ships both to wherever the unit runs
    (a worker process here; a cluster or Ray task elsewhere) and calls this there. A run that fails, that
    another process is training, or whose folder holds another run has its Outcome; the others go on.
    Raises RunInterrupted on SIGINT or SIGTERM (every run of the unit has saved its checkpoint by then).
    """
    from lstmlab.run.train import train_pack

    if _STOP is not None and _STOP.is_set():
        return [Outcome(p.name, None, "interrupted", "not started: the sweep was interrupted") for p in unit.points]
    if on_steps is None and _STEPS is not None:
        on_steps = _count_steps
    try:
        results = train_pack([p.cfg for p in unit.points], runs_dir=options.runs_dir, data_dir=options.data_dir,
                             swept_keys=options.swept_keys, restart=options.restart, quiet=options.quiet,
                             argv=options.argv, log=log or (lambda _: None), on_steps=on_steps,
                             tensorboard=options.tensorboard)
    except UserError as e:  # what all the runs share (data, device, backend) is not right; the sweep goes on
        return [Outcome(p.name, None, "refused", str(e)) for p in unit.points]
    except RunInterrupted as e:
        if _STOP is not None and e.signal == "SIGTERM":  # a worker told to end (its parent died, the job ends)
            signal.raise_signal(signal.SIGTERM)  # its runs are saved; the parent, if alive, reads the folders
        raise
    return [outcome_of(result) for result in results]


def outcome_of(result) -> Outcome:
    """A RunResult as the sweep reports it."""
    if result.status in ("busy", "refused"):
        return Outcome(result.name, result.path, result.status, str(result.error))
    if result.status == "failed":
        return Outcome(result.name, result.path, "failed", result.summary.get("error", str(result.error)))
    detail = ""
    summary = result.summary
    if result.status == "completed" and isinstance(summary.get("test_metric"), (int, float)):
        detail = f"test {summary.get('metric', 'metric')} {summary['test_metric']:.4g}"
        if isinstance(summary.get("wall_s"), (int, float)):
            detail += f" in {summary['wall_s']:.1f} s"
    return Outcome(result.name, result.path, result.status, detail)
