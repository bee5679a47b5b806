"""The task registry: a plain dict from name to Task class. Adding a task is adding a file and a line here."""

from __future__ import annotations

from lstmlab.tasks.adding import AddingTask
from lstmlab.tasks.base import SPLITS, Task, TaskConfig, TaskSpec
from lstmlab.tasks.charlm import CharLMTask
from lstmlab.tasks.copy import CopyTask
from lstmlab.tasks.embedded_reber import EmbeddedReberTask
from lstmlab.tasks.mackey_glass import MackeyGlassTask
from lstmlab.tasks.temporal_order import TemporalOrderTask

TASKS: dict[str, type[Task]] = {
    AddingTask.name: AddingTask,
    CopyTask.name: CopyTask,
    TemporalOrderTask.name: TemporalOrderTask,
    EmbeddedReberTask.name: EmbeddedReberTask,
    CharLMTask.name: CharLMTask,
    MackeyGlassTask.name: MackeyGlassTask,
}


def get_task_class(name: str) -> type[Task]:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}") from None


def make_task(cfg: TaskConfig) -> Task:
    return get_task_class(cfg.name)(cfg)


__all__ = ["SPLITS", "TASKS", "Task", "TaskConfig", "TaskSpec", "get_task_class", "make_task"]
