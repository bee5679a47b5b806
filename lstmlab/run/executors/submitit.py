"""Units as submitit jobs: a Slurm job array per sweep (or, with cluster=local, processes on this machine;
with cluster=debug, one after another in this process).

- One job per unit, submitted in arrays of at most `max_array_size` jobs with `%array_parallelism` (on
  Slurm the scheduler holds the rest back); a new array goes in when the queue has room. Jobs write
  straight into the run folders, so the runs dir must be on a file system the nodes share.
- Timeout and preemption: submitit sends USR2 `signal_delay_s` before the time limit (and Slurm on
  preemption). The unit stops at its next optimizer step with a checkpoint, then submitit requeues the
  job through `UnitTask.checkpoint`, which resubmits the same call: it resumes from the run folder.
- A job that ended without a result (its process killed, its node lost) is resubmitted up to `retries`
  times, and resumes from the run folder the same way. A unit that raised is reported failed at once.
- CPU threads per unit: `cpus_per_task` (Slurm's SLURM_CPUS_PER_TASK when it is set).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import UncompletedJobError

from lstmlab.errors import UserError
from lstmlab.run.executors import Finished, Interrupted, call_unit, finished

# our option -> submitit's AutoExecutor parameter
PARAMETERS = {"time": "timeout_min", "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb",
              "partition": "slurm_partition", "array_parallelism": "slurm_array_parallelism"}


def make(options: dict[str, Any], *, work_dir: Path) -> SubmititExecutor:
    return SubmititExecutor(options, work_dir)


class UnitTask(submitit.helpers.Checkpointable):
    """One unit as a submitit job. Requeued after a timeout or preemption by `checkpoint()` (inherited:
    the same call again), which resumes from the run folder's checkpoint: the state lives there, not here."""

    def __init__(self, unit_fn: Callable[[Any], Any], unit: Any, threads: int):
        self.unit_fn, self.unit, self.threads = unit_fn, unit, threads

    def __call__(self) -> Any:
        threads = int(os.environ.get("SLURM_CPUS_PER_TASK", self.threads))
        preempt = submitit.JobEnvironment._usr_sig()
        requeue = signal.getsignal(preempt)  # submitit's: checkpoint() this task, requeue it, exit
        caught: list[int] = []

        def stop_at_step_boundary(signum, frame):  # as Ctrl-C does: the run checkpoints and stops
            caught.append(signum)
            os.kill(os.getpid(), signal.SIGINT)

        if callable(requeue):
            signal.signal(preempt, stop_at_step_boundary)
        result = call_unit(self.unit_fn, self.unit, threads)
        if caught and isinstance(result, Interrupted):
            requeue(caught[0], None)  # checkpoint() and requeue; returns only when out of requeues
        return result


class SubmititExecutor:
    def __init__(self, options: dict[str, Any], work_dir: Path):
        self.options = options
        self.cluster = options["cluster"]
        self.folder = Path(options["folder"] or work_dir / ".submitit").resolve()
        self.executor = self._make_executor()
        self.poll_s = options["poll_s"] if options["poll_s"] is not None else (30.0 if self.cluster == "slurm" else 1.0)

    def _make_executor(self) -> submitit.AutoExecutor:
        o = self.options
        if self.cluster == "slurm" and submitit.SlurmExecutor.affinity() < 0:
            raise UserError("--executor-opt cluster=slurm: no Slurm here (srun is not on PATH); on a machine "
                            "without Slurm use cluster=local")
        try:
            executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster,
                                             slurm_max_num_timeout=o["max_num_timeout"],
                                             local_max_num_timeout=o["max_num_timeout"])
            parameters = {theirs: o[ours] for ours, theirs in PARAMETERS.items() if o[ours] is not None}
            if o["gpus_per_task"]:
                parameters["gpus_per_node"] = o["gpus_per_task"]
            parameters.update({k: v for k, v in o.items() if k.startswith("slurm_")})
            executor.update_parameters(name="lstmlab", **parameters)
        except (NameError, ValueError, TypeError, AssertionError) as e:  # submitit's own checks of a parameter
            raise UserError(f"--executor submitit: {e}") from None
        return executor

    @property
    def cap(self) -> int:
        """Jobs submitted and not yet finished, at most: Slurm holds back all but array_parallelism of an
        array itself; the local cluster starts whatever is submitted, so there the cap is the parallelism."""
        if self.cluster == "slurm":
            return self.options["max_array_size"]
        return 1 if self.cluster == "debug" else self.options["array_parallelism"]

    def run(self, unit_fn: Callable[[Any], Any], units: Sequence[Any], labels: Sequence[str],
            log: Callable[[str], None]) -> Iterator[Finished]:
        threads = self.options["cpus_per_task"]
        log(f"submitting {len(units)} jobs to submitit ({self.cluster}; at most "
            f"{self.options['array_parallelism']} at a time, {threads} CPU(s) each); job logs in {self.folder}")
        waiting = list(range(len(units)))
        running: dict[int, submitit.Job] = {}
        attempts = dict.fromkeys(waiting, 0)
        try:
            while waiting or running:
                room = self.cap - len(running)
                # on Slurm a new array goes in once half the queue is free: fewer, larger submissions
                if waiting and room >= min(len(waiting), max(1, self.cap // 2 if self.cluster == "slurm" else 1)):
                    batch, waiting = waiting[:room], waiting[room:]
                    jobs = self.executor.submit_array([UnitTask(unit_fn, units[i], threads) for i in batch])
                    running.update(zip(batch, jobs, strict=True))
                ended = [i for i, job in running.items() if job.done()]
                for i in ended:
                    job = running.pop(i)
                    outcome = self._outcome(i, job, self.cluster == "local")
                    if outcome is None:  # no result: its process died; try again, from the run folder
                        attempts[i] += 1
                        if attempts[i] <= self.options["retries"]:
                            log(f"{labels[i]}: job {job.job_id} ended without a result (killed?); resubmitting "
                                f"({attempts[i]}/{self.options['retries']})")
                            waiting.insert(0, i)
                            continue
                        outcome = Finished(i, error=f"job {job.job_id} ended without a result {attempts[i]} times "
                                                    f"(killed, out of memory, its node lost?); see {job.paths.stderr}")
                    yield outcome
                if running and not ended:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            for job in running.values():
                job.cancel(check=False)  # the job gets SIGINT/SIGTERM: its run checkpoints at a step boundary
            raise

    @staticmethod
    def _outcome(index: int, job: submitit.Job, local_files: bool) -> Finished | None:
        """The job's result; None when it ended without one. submitit waits 15 s for a result file to
        appear (a shared file system may show it late); on this machine's own disk that wait is not needed."""
        if local_files and not job.paths.result_pickle.exists():
            return None
        try:
            return finished(index, job.result())
        except UncompletedJobError:
            return None
        except Exception as e:  # noqa: BLE001 - the unit raised: submitit hands back its traceback
            last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            return Finished(index, error=f"{last} (job {job.job_id}; log {job.paths.stderr})")
