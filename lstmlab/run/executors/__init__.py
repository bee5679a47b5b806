"""Where a sweep's units of work run: here (`local`, the default), on a Slurm cluster through submitit, or
on a Ray cluster.

`local` (lstmlab.run.executors.local) runs the units on this machine: one after another in this process, or in
`--jobs N` worker processes. Every executor takes over the second step of a sweep (lstmlab.run.sweep): a unit
is whatever the sweep hands over (a pack of runs trained together, or one run, with its UnitOptions bound into
`unit_fn`, which pickles); an executor calls `unit_fn(unit)` for each, somewhere, and streams back a `Finished`
as each one ends, in the order they end. A unit whose call raises,
or whose worker is lost for good, is reported with an error; the others go on. Every executor sets the
CPU threads of each call explicitly, and none changes what a unit computes: the same units give the same
run folders (and, on CPU, the same numbers) whichever executor runs them.

    executor = make_executor("ray", ["address=auto", "num_cpus=2"], work_dir=runs_dir / experiment)
    for finished in executor.run(unit_fn, units, labels, log=print):
        ...  # finished.index, finished.result | finished.error | finished.interrupted

Ctrl-C in the calling process stops the units that are running (each checkpoints at a step boundary and
marks itself interrupted), starts no more, and re-raises KeyboardInterrupt.

Options (`--executor-opt KEY=VALUE`) are declared per executor below, parsed as YAML scalars and checked
before anything starts; a bad one is a UserError that names it. The cluster libraries are optional
extras, imported only when their executor is chosen.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lstmlab.errors import UserError


@dataclass
class Finished:
    """One unit's end: its result, or why there is none."""

    index: int  # position of the unit in the sequence handed to `run`
    result: Any = None  # what unit_fn returned
    error: str | None = None  # unit_fn raised, or its worker was lost for good (after the retries)
    interrupted: bool = False  # stopped by a signal: its runs are checkpointed and marked interrupted


class Executor(Protocol):
    def run(self, unit_fn: Callable[[Any], Any], units: Sequence[Any], labels: Sequence[str],
            log: Callable[[str], None]) -> Iterator[Finished]: ...


@dataclass(frozen=True)
class Option:
    kind: type  # int, float, str, dict or list: what the YAML value must be
    default: Any
    help: str
    minimum: float | None = None
    choices: tuple[str, ...] = ()


# Each executor: the module that implements it, the extra that installs its library, and its options.
@dataclass(frozen=True)
class Spec:
    module: str  # the module whose make(options, work_dir=...) builds it
    library: str | None
    extra: str | None
    options: dict[str, Option] = field(default_factory=dict)


SUBMITIT_OPTIONS = {
    "cluster": Option(str, "slurm", "slurm, local (processes on this machine) or debug (in this process)",
                      choices=("slurm", "local", "debug")),
    "partition": Option(str, None, "Slurm partition"),
    "time": Option(int, 60, "time limit per job, minutes (jobs near it checkpoint and requeue)", minimum=1),
    "cpus_per_task": Option(int, 1, "CPUs per job; the unit's torch threads", minimum=1),
    "gpus_per_task": Option(int, 0, "GPUs per job", minimum=0),
    "mem_gb": Option(float, None, "memory per job, GB", minimum=0),
    "array_parallelism": Option(int, 256, "jobs of the sweep running at once", minimum=1),
    "max_array_size": Option(int, 1000, "jobs per array and at most in the queue (Slurm's MaxArraySize is "
                             "1001 unless raised)", minimum=1),
    "max_num_timeout": Option(int, 3, "requeues after timeout or preemption", minimum=0),
    "retries": Option(int, 2, "resubmissions of a job that died without a result (killed, node lost)",
                      minimum=0),
    "folder": Option(str, None, "job scripts and logs (default <runs-dir>/<experiment>/.submitit)"),
    "poll_s": Option(float, None, "seconds between status checks (default 1; 30 on Slurm)", minimum=0),
    "slurm_*": Option(str, None, "any other submitit Slurm parameter, e.g. slurm_account=proj, slurm_qos=high, "
                      "slurm_additional_parameters='{mail-type: END}'"),
}

RAY_OPTIONS = {
    "address": Option(str, "auto", "auto (a running cluster), local (start one here) or ray://HOST:PORT"),
    "num_cpus": Option(float, 1, "CPUs per task; the unit's torch threads", minimum=0),
    "num_gpus": Option(float, 0, "GPUs per task", minimum=0),
    "max_retries": Option(int, 3, "re-executions of a task whose worker or node died", minimum=0),
    "working_dir": Option(str, None, "ship this folder to the workers (Ray runtime_env) instead of relying on "
                          "lstmlab being installed on every node"),
}

LOCAL_OPTIONS: dict[str, Option] = {}

EXECUTORS: dict[str, Spec] = {
    "local": Spec("lstmlab.run.executors.local", None, None, LOCAL_OPTIONS),
    "submitit": Spec("lstmlab.run.executors.submitit", "submitit", "slurm", SUBMITIT_OPTIONS),
    "ray": Spec("lstmlab.run.executors.ray", "ray", "ray", RAY_OPTIONS),
}


def options_help() -> str:
    """The `--executor-opt` keys of every executor, for --help."""
    parts = []
    for name, spec in EXECUTORS.items():
        if spec.options:
            keys = ", ".join(k + (f" ({'|'.join(o.choices)})" if o.choices else "") for k, o in spec.options.items())
            parts.append(f"{name}: {keys}")
    return "; ".join(parts)


def parse_options(name: str, texts: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` texts -> {key: value} with defaults filled, each value checked against its Option."""
    from lstmlab.config import parse_scalar

    spec = _spec(name)
    given: dict[str, Any] = {}
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--executor-opt {text!r}: expected KEY=VALUE, e.g. partition=gpu")
        option = spec.options.get(key) or (spec.options.get("slurm_*") if key.startswith("slurm_") else None)
        if option is None:
            valid = ", ".join(spec.options) or "none"
            raise UserError(f"--executor-opt {key}: not an option of --executor {name}; valid: {valid}")
        value = parse_scalar(raw)
        given[key] = value if key not in spec.options else _check(name, key, option, value)  # slurm_*: submitit checks
    values = {k: o.default for k, o in spec.options.items() if k != "slurm_*"}
    values.update(given)
    return values


def _check(executor: str, key: str, option: Option, value: Any) -> Any:
    where = f"--executor-opt {key}={value!r} (--executor {executor})"
    if option.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if option.kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # a partition or host named by digits
    if value is None or isinstance(value, bool) or not isinstance(value, option.kind):
        raise UserError(f"{where}: expected {_kind_name(option.kind)}")
    if option.choices and value not in option.choices:
        raise UserError(f"{where}: valid values: {', '.join(option.choices)}")
    if option.minimum is not None and value < option.minimum:
        raise UserError(f"{where}: must be at least {option.minimum:g}")
    return value


def _kind_name(kind: type) -> str:
    return {int: "a whole number", float: "a number", str: "a text", dict: "a mapping, e.g. '{key: value}'"}.get(
        kind, kind.__name__)


def _spec(name: str) -> Spec:
    if name not in EXECUTORS:
        raise UserError(f"--executor {name}: unknown executor; valid: {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


def make_executor(name: str, options: Sequence[str] = (), *, jobs: int = 1,
                  work_dir: str | Path = ".") -> Executor:
    """The executor called `name`, its options checked and its library imported (or a UserError saying
    which extra installs it); `local` runs `jobs` units at a time (worker processes when more than one).
    `work_dir` (on the shared file system) is where an executor may keep its own files, e.g. submitit's
    job scripts and logs."""
    spec = _spec(name)
    values = parse_options(name, options)
    if name != "local" and jobs != 1:
        raise UserError(f"--jobs is for --executor local; with --executor {name} the cluster decides how many "
                        "units run at once (see --executor-opt)")
    if spec.library is not None:
        try:
            importlib.import_module(spec.library)
        except ImportError:
            raise UserError(f"--executor {name} needs the {spec.library} package: "
                            f"pip install 'lstmlab[{spec.extra}]'") from None
    module = importlib.import_module(spec.module)
    if name == "local":
        return module.make(values, work_dir=Path(work_dir), jobs=jobs)
    return module.make(values, work_dir=Path(work_dir).resolve())


# -- inside a worker -----------------------------------------------------------------------------------


def set_threads(threads: int) -> None:
    """Give this process `threads` CPU threads, before torch starts its pools (a run's own train.threads,
    when set, still wins: train() applies it)."""
    threads = max(1, int(threads))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    import torch

    torch.set_num_threads(threads)


class Interrupted:
    """What a worker hands back for a unit stopped by a signal (its runs checkpointed and marked so)."""


def call_unit(unit_fn: Callable[[Any], Any], unit: Any, threads: int) -> Any:
    """Run one unit in a worker: threads set, and a stop by signal returned as Interrupted, not raised."""
    set_threads(threads)
    try:
        return unit_fn(unit)
    except KeyboardInterrupt:
        return Interrupted()


def finished(index: int, result: Any) -> Finished:
    if isinstance(result, Interrupted):
        return Finished(index, interrupted=True)
    return Finished(index, result=result)
