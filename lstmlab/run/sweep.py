"""Run every point of a config's sweep, one run folder each; a failed run does not stop the others.

Two steps, kept apart so that an executor can take the second one over:

    plan_sweep(points, options, pack)    -> Plan       which runs, resolved and named, grouped into units of work
    execute_on(executor, units, options) -> outcomes   streamed unit by unit as each one ends; the executor
                                                       (lstmlab.run.executors) runs each unit here or in local
                                                       worker processes, as a Slurm job or as a Ray task

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
import dataclasses
import functools
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmlab.config import ExperimentConfig
from lstmlab.errors import ConfigError, UserError
from lstmlab.run.folder import RunFolder, RunInterrupted
from lstmlab.run.options import UnitOptions, unit_options
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


@dataclass
class Outcome:
    name: str
    path: Path | None
    status: str  # a key of OUTCOMES
    detail: str = ""


def run_sweep(
    cfg: ExperimentConfig,
    options: UnitOptions | None = None,
    *,
    jobs: int = 1,
    pack: int | str = "auto",
    executor: str = "local",
    executor_options: Sequence[str] = (),
    log: Callable[[str], None] = print,
    **fields,
) -> list[Outcome]:
    """Train every distinct point, `pack` runs at most to a pack (an int, or "auto"); log one line per run
    as it ends, then the listing by outcome. Outcomes come back in the sweep's order.

    `options`: what every unit is trained with (lstmlab.run.options.UnitOptions: runs dir, data dir, restart,
    quiet, argv, tensorboard folder, ...), or its fields as keywords (`runs_dir=..., data_dir=...`); the swept
    keys are the config's. `executor`: where the units run (lstmlab.run.executors): `local` (here, or `jobs`
    worker processes), `submitit` or `ray`, with its `executor_options` (KEY=VALUE texts)."""
    from lstmlab.run.executors import make_executor
    from lstmlab.run.progress import StudyProgress

    options = dataclasses.replace(unit_options(options, fields, "run_sweep"), swept_keys=tuple(cfg.sweep))
    runner = make_executor(executor, executor_options, jobs=jobs, work_dir=options.runs_dir / cfg.experiment)
    if executor != "local":  # the tasks run elsewhere: they are handed paths that mean the same there
        options = options.resolved()
    runs_dir, data_dir, quiet = options.runs_dir, options.data_dir, options.quiet
    points = distinct_points(cfg, log)
    log(f"{cfg.experiment}: {len(points)} run(s) of task {cfg.task.name} -> {Path(runs_dir) / cfg.experiment}")
    with sigterm_like_ctrl_c():
        generate_datasets(points, data_dir, log)  # before any worker starts, so that no two generate the same data
        plan = plan_sweep(points, options, pack, jobs=jobs if executor == "local" else 1)
        if len(plan.units) < sum(len(u) for u in plan.units):
            log(describe_plan(plan))
        outcomes = {o.name: o for o in plan.skipped}
        for outcome in plan.skipped:
            log(describe(outcome))
        with StudyProgress(len(points), plan.steps, done_runs=len(plan.skipped), quiet=quiet) as progress:
            units = execute_on(runner, plan.units, options, log, progress.steps)
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
    from lstmlab.run.env import pick_device
    from lstmlab.run.folder import run_name
    from lstmlab.run.packing import Point, auto_pack_size, groups, plan
    from lstmlab.run.train import resolve_point

    specs: dict[str, Any] = {}
    names, todo, skipped = [], [], []
    for point in points:
        key = point.task.model_dump_json()
        if key not in specs:
            specs[key] = dataset_spec(point.task, options.data_dir)
        resolved = resolve_point(point, specs[key])
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


def dataset_spec(task_cfg, data_dir: Path, *, generated: bool = True):
    """The TaskSpec a point's model is sized by: a generated dataset's, from its meta.json alone. With
    `generated=False` the data may be missing and is not made: the task's spec from its config alone when the
    task can give one without data (most can; a text corpus's vocabulary or a user's arrays cannot), else None."""
    import json

    from lstmlab.tasks import make_task
    from lstmlab.tasks.datasets import dataset_dir

    meta_file = dataset_dir(task_cfg, data_dir) / "meta.json"
    if generated or meta_file.exists():
        return make_task(task_cfg).spec(json.loads(meta_file.read_text())["info"])
    try:
        return make_task(task_cfg).spec({})  # no info: only a task whose sizes follow from its config answers
    except Exception:  # noqa: BLE001 (any task, plugins included, that needs its data's info to say)
        return None


def print_configs(cfg: ExperimentConfig, data_dir: str | Path, write: Callable[[str], None],
                  note: Callable[[str], None]) -> None:
    """train --print-config: every distinct point as `train` would run it, one YAML document each, named by its
    run folder (`yaml.safe_load_all` reads them back). A dry run: nothing is written, no data generated. A
    hidden size that only the data can give (model.param_budget on a task that needs its data to size the
    model) is left as the config has it, and the document says it is derived at train time."""
    from lstmlab.run.folder import run_name
    from lstmlab.run.train import resolve_point

    points = distinct_points(cfg, note)
    for i, point in enumerate(points, 1):
        spec = None if point.model.param_budget is None else dataset_spec(point.task, Path(data_dir),
                                                                            generated=False)
        resolved = point if spec is None else resolve_point(point, spec)
        write(f"--- # run {i}/{len(points)}: {run_name(resolved, tuple(cfg.sweep))}\n")
        if point.model.param_budget is not None and spec is None:
            write(f"# model.hidden_size: derived at train time from model.param_budget and the data of task "
                  f"{point.task.name}, which is not generated yet (--print-config writes nothing)\n")
        write(resolved.dump_yaml())


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


def execute_on(executor: Executor, units: list[Unit], options: UnitOptions, log: Callable[[str], None],
               on_steps: Callable[[int], None] | None = None) -> Iterator[list[Outcome]]:
    """Train the units through `executor` (lstmlab.run.executors); yield each unit's outcomes as it ends. A unit
    that came back without outcomes (stopped by a signal, or its worker or task lost for good) is read from its
    folders. on_steps(n): n more member steps trained, where the executor can see them (local)."""
    from lstmlab.run.executors.local import LocalExecutor

    if not units:
        return  # nothing left to train: nothing is submitted
    labels = [", ".join(unit.names) for unit in units]
    if isinstance(executor, LocalExecutor):  # here, or worker processes that report their steps
        finishes = executor.run(functools.partial(run_unit, options=options), units, labels, log, on_steps)
    else:  # a cluster's tasks: no progress bars there
        finishes = executor.run(functools.partial(run_unit, options=dataclasses.replace(options, quiet=True)),
                                units, labels, log)
    for finished in finishes:
        outcomes = finished.result
        if outcomes is None:
            outcomes = [_outcome_from_folder(p, options) for p in units[finished.index].points]
            if finished.error is not None:  # say why, unless its folder says it completed or stopped cleanly
                outcomes = [o if o.status != "failed" else dataclasses.replace(o, detail=finished.error)
                            for o in outcomes]
        try:
            yield outcomes
        except KeyboardInterrupt as e:  # thrown in here (stop_units): the executor must stop its workers too
            stop_units(finishes, e)
            raise


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
    starting units; it checks SIGNALLED between its waits instead (lstmlab.run.executors.local). One raised in a
    library's callback may come out wrapped in that library's error (pydantic's serializers do): once a signal
    was received, such an error leaves this block as the RunInterrupted it carries."""
    from lstmlab.run.executors.local import SIGNALLED

    SIGNALLED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        name = signal.Signals(signum).name
        SIGNALLED.append(name)  # seen by the parallel loop even where the exception itself gets swallowed
        raise RunInterrupted(name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except Exception as e:
        if SIGNALLED:  # the signal's RunInterrupted, wrapped where it was raised
            raise RunInterrupted(SIGNALLED[-1]) from e
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


def run_unit(unit: Unit, options: UnitOptions, *, log: Callable[[str], None] | None = None,
             on_steps: Callable[[int], None] | None = None) -> list[Outcome]:
    """Train one unit in this process; one Outcome per run, in the unit's order.

    Top-level, and `unit` and `options` are plain data: an executor ships both to wherever the unit runs
    (a worker process here; a cluster or Ray task elsewhere) and calls this there. A run that fails, that
    another process is training, or whose folder holds another run has its Outcome; the others go on.
    Raises RunInterrupted on SIGINT or SIGTERM (every run of the unit has saved its checkpoint by then).
    """
    from lstmlab.run.executors import local
    from lstmlab.run.observers import observers_for
    from lstmlab.run.train import train_pack

    if local.stopping():
        return [Outcome(p.name, None, "interrupted", "not started: the sweep was interrupted") for p in unit.points]
    if local.in_worker():  # a local worker process: no bars of its own; its steps reach the parent's bar
        options, on_steps = dataclasses.replace(options, quiet=True), on_steps or local.step_counter()
    try:
        observers = observers_for(options, on_steps)  # built here, where the unit runs: they need not travel
        results = train_pack([p.cfg for p in unit.points], options, observers=observers.observers,
                             log=log or (lambda _: None))
    except UserError as e:  # what all the runs share (data, device, backend) is not right; the sweep goes on
        return [Outcome(p.name, None, "refused", str(e)) for p in unit.points]
    except RunInterrupted as e:
        local.stop_sweep()  # in a worker: before it can take another unit (a no-op elsewhere)
        if local.in_worker() and e.signal == "SIGTERM":  # a worker told to end (its parent died, the job ends)
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
