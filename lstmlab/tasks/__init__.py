"""The task registry: a plain dict from name to Task class.

Adding a task to lstmlab is adding a file and a line here; adding one from another package is an entry
point in group `lstmlab.tasks` (see lstmlab.plugins), loaded into the same dict when this module is imported.
"""

from __future__ import annotations

from lstmlab import plugins
from lstmlab.tasks.adding import AddingTask
from lstmlab.tasks.arrays import ArraysTask
from lstmlab.tasks.base import SPLITS, Task, TaskConfig, TaskSpec
from lstmlab.tasks.charlm import CharLMTask
from lstmlab.tasks.copy import CopyTask
from lstmlab.tasks.embedded_reber import EmbeddedReberTask
from lstmlab.tasks.mackey_glass import MackeyGlassTask
from lstmlab.tasks.temporal_order import TemporalOrderTask
from lstmlab.tasks.window_parity import WindowParityTask

BUILTIN_TASKS: dict[str, type[Task]] = {
    AddingTask.name: AddingTask,
    CopyTask.name: CopyTask,
    TemporalOrderTask.name: TemporalOrderTask,
    EmbeddedReberTask.name: EmbeddedReberTask,
    CharLMTask.name: CharLMTask,
    MackeyGlassTask.name: MackeyGlassTask,
    ArraysTask.name: ArraysTask,
    WindowParityTask.name: WindowParityTask,
}
TASKS: dict[str, type[Task]] = {**BUILTIN_TASKS, **plugins.load_tasks(BUILTIN_TASKS)}


def valid_tasks() -> str:
    """'valid tasks: a, b, c', plus why any plugin task is missing."""
    return f"valid tasks: {', '.join(sorted(TASKS))}{plugins.broken_note(plugins.TASK_GROUP)}"


def get_task_class(name: str) -> type[Task]:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; {valid_tasks()}") from None


def make_task(cfg: TaskConfig) -> Task:
    return get_task_class(cfg.name)(cfg)


__all__ = ["BUILTIN_TASKS", "SPLITS", "TASKS", "Task", "TaskConfig", "TaskSpec", "get_task_class", "make_task",
           "valid_tasks"]
