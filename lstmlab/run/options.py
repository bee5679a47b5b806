"""UnitOptions: what every unit of work (a pack of runs, or one run) is trained with, beside its configs.

One frozen dataclass of plain data, so that it pickles and travels with a unit to wherever it runs: this
process, a local worker process, a Slurm job or a Ray task (lstmlab.run.executors). The sweep builds it once
(`run_sweep`), every executor passes it on unchanged, and `train_pack` reads it. What cannot travel (the
TensorBoard writer, progress bars) is built from it where the unit runs: lstmlab.run.observers.observers_for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class UnitOptions:
    """The per-unit options of a sweep (or of one `train_pack` call)."""

    runs_dir: Path = Path("runs")  # run folders land in <runs_dir>/<experiment>/<run-name>
    data_dir: Path = Path("data")  # generated datasets
    swept_keys: tuple[str, ...] = ()  # the sweep's keys: they name the run folders (run_name)
    restart: bool = False  # start runs over instead of resuming or skipping them
    quiet: bool = False  # no progress bars
    argv: tuple[str, ...] | list[str] | None = None  # the command line, recorded in env.json
    tensorboard: Path | None = None  # train --tensorboard DIR: evaluations logged live there
    threads: int | None = None  # CPU threads for the unit (a run's own train.threads wins); None: torch's default

    def __post_init__(self) -> None:  # paths given as text become Paths: the same options however written
        object.__setattr__(self, "runs_dir", Path(self.runs_dir))
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "swept_keys", tuple(self.swept_keys))
        if self.tensorboard is not None:
            object.__setattr__(self, "tensorboard", Path(self.tensorboard))

    def resolved(self) -> UnitOptions:
        """The same options with absolute paths: what a unit running on another node must be handed."""
        return UnitOptions(**{**self.as_dict(), "runs_dir": self.runs_dir.resolve(),
                              "data_dir": self.data_dir.resolve(),
                              "tensorboard": self.tensorboard.resolve() if self.tensorboard else None})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


NAMES = frozenset(f.name for f in fields(UnitOptions))


def unit_options(options: UnitOptions | None, given: Mapping[str, Any], where: str) -> UnitOptions:
    """`options`, or UnitOptions(**given) for callers that pass the fields as keywords; TypeError for both,
    or for a keyword that is no field (naming it and `where` it was passed)."""
    unknown = sorted(set(given) - NAMES)
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword argument(s) {', '.join(unknown)}; "
                        f"UnitOptions fields: {', '.join(sorted(NAMES))}")
    if options is not None:
        if given:
            raise TypeError(f"{where}(): pass either options or its fields as keywords, not both")
        return options
    return UnitOptions(**given)
