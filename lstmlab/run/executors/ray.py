"""Units as Ray tasks on a Ray cluster (`address=auto`: the one this machine belongs to; `local`: a new one
here; `ray://HOST:PORT`: a remote head through Ray Client).

- One task per unit with `num_cpus` / `num_gpus`; results are taken with `ray.wait` as each task ends.
  At most MAX_PENDING tasks are handed to Ray at once; more go in as those end.
- A task whose worker process or node dies is re-executed by Ray up to `max_retries` times and resumes
  from its run folder; an exception raised by a unit is not retried (a failed run fails the same way).
- The code reaches the nodes either because lstmlab is installed in every node's Python (as on the head),
  or through `working_dir=PATH` (Ray's runtime_env ships the folder and puts it on the workers' path).
  Either way, the runs dir and data dir must be on a file system every node mounts at the same path.
- CPU threads per unit: `num_cpus` (Ray itself sets OMP_NUM_THREADS=1 in workers unless told otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayTaskError, TaskCancelledError

from lstmlab.errors import UserError
from lstmlab.run.executors import Finished, call_unit, finished

MAX_PENDING = 1000  # tasks handed to Ray and not yet finished
GRACE_S = 5.0  # after Ctrl-C, how long running tasks get to checkpoint before this driver lets go of them


def make(options: dict[str, Any], *, work_dir: Path) -> RayExecutor:
    return RayExecutor(options)


@ray.remote
def _ray_call(unit_fn: Callable[[Any], Any], unit: Any, threads: int) -> Any:
    return call_unit(unit_fn, unit, threads)


class RayExecutor:
    def __init__(self, options: dict[str, Any]):
        self.options = options
        self.threads = max(1, int(options["num_cpus"]))

    def run(self, unit_fn: Callable[[Any], Any], units: Sequence[Any], labels: Sequence[str],
            log: Callable[[str], None]) -> Iterator[Finished]:
        connected_here = self._connect()
        o = self.options
        try:
            cpus = ray.cluster_resources().get("CPU", 0)
            log(f"running {len(units)} tasks on the Ray cluster ({cpus:g} CPUs; {o['num_cpus']:g} CPU(s), "
                f"{o['num_gpus']:g} GPU(s) per task)")
            task = _ray_call.options(num_cpus=o["num_cpus"], num_gpus=o["num_gpus"], max_retries=o["max_retries"],
                                     retry_exceptions=False, name="lstmlab-unit")
            waiting = list(range(len(units)))
            pending: dict[ray.ObjectRef, int] = {}
            try:
                while waiting or pending:
                    room = MAX_PENDING - len(pending)
                    batch, waiting = waiting[:room], waiting[room:]
                    pending.update({task.remote(unit_fn, units[i], self.threads): i for i in batch})
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        yield self._outcome(pending.pop(ref), ref)
            except KeyboardInterrupt:
                for ref in pending:
                    ray.cancel(ref)  # a running task gets KeyboardInterrupt: its run checkpoints and stops
                ray.wait(list(pending), num_returns=len(pending), timeout=GRACE_S)
                raise
        finally:
            if connected_here:
                ray.shutdown()

    def _connect(self) -> bool:
        """Join the cluster named by `address` (unless this process already has); True if joined here."""
        if ray.is_initialized():
            return False
        address = self.options["address"]
        runtime_env = {"working_dir": self.options["working_dir"]} if self.options["working_dir"] else None
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, logging_level=logging.WARNING,
                     **({"include_dashboard": False} if address == "local" else {}))
        except ConnectionError as e:
            raise UserError(f"--executor-opt address={address}: {str(e).rstrip('.')}; start a cluster with "
                            "`ray start --head`, or "
                            "use address=local for a Ray instance on this machine alone") from None
        return True

    @staticmethod
    def _outcome(index: int, ref: ray.ObjectRef) -> Finished:
        try:
            return finished(index, ray.get(ref))
        except TaskCancelledError:
            return Finished(index, interrupted=True)
        except RayTaskError as e:  # the unit raised
            cause = e.cause if e.cause is not None else e
            return Finished(index, error=f"{type(cause).__name__}: {cause}")
        except ray.exceptions.RayError as e:  # its worker or node died more often than max_retries allows
            return Finished(index, error=f"{type(e).__name__}: {str(e).strip().splitlines()[0]}")
