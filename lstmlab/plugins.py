"""Tasks and recurrent cores from other installed packages, found through Python entry points.

A package adds a task or a core by naming it in its own pyproject.toml (examples/plugin/ is a whole one):

    [project.entry-points."lstmlab.tasks"]
    sine = "lstmlab_sine:SineTask"        # a lstmlab.tasks.base.Task subclass whose Config has name: Literal["sine"]

    [project.entry-points."lstmlab.cores"]
    mgu = "lstmlab_sine:make_mgu"         # make_mgu(input_size, model_cfg) -> a batch-first nn.Module,
                                          # called as core(x, state=None) -> (output (B, T, H), state)

After `pip install` of that package, `task: {name: sine}` and `model: {type: mgu}` work in any config.

Plugin tasks are imported when `lstmlab.tasks` is (the config schema is built from them); plugin cores
only when a model is built, so that reading a config never imports torch. A plugin that fails to load
(an import error, a wrong type, a name already taken) is left out with a one-line warning on stderr that
names it and its package; every other command still works, and asking for it by name says why it is
missing. Only names listed here come from plugins: built-in names always win.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from lstmlab.errors import BadValue

TASK_GROUP = "lstmlab.tasks"
CORE_GROUP = "lstmlab.cores"

# group -> plugin name -> why it could not be loaded (filled as plugins are loaded)
BROKEN: dict[str, dict[str, str]] = {TASK_GROUP: {}, CORE_GROUP: {}}


def plugin_entry_points(group: str) -> dict[str, EntryPoint]:
    """The entry points of `group` in installed packages, by name (the first one wins for a repeated name)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)
    return dict(sorted(found.items()))


def source(ep: EntryPoint) -> str:
    """`package 1.0 (module:attr)`: where a plugin comes from, for messages."""
    dist = getattr(ep, "dist", None)
    where = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "an installed package"
    return f"{where} ({ep.value})"


def core_backend(name: str) -> str:
    """`plugin:mgu (package 1.0 (module:attr))`: the backend env.json and summary.json record for plugin core
    `name`."""
    ep = plugin_entry_points(CORE_GROUP).get(name)
    return f"plugin:{name}" + (f" ({source(ep)})" if ep is not None else "")


def report_broken(group: str, name: str, ep: EntryPoint, why: str) -> None:
    kind = "task" if group == TASK_GROUP else "core"
    message = f"plugin {kind} {name!r} from {source(ep)} could not be loaded: {why}"
    if name not in BROKEN[group]:
        print(f"lstmlab: warning: {message}; it is left out", file=sys.stderr)
    BROKEN[group][name] = message


def load_tasks(builtin: dict[str, type]) -> dict[str, type]:
    """Plugin Task classes by name, checked enough that building the config schema from them cannot fail."""
    from lstmlab.tasks.base import Task, TaskConfig

    loaded: dict[str, type] = {}
    for name, ep in plugin_entry_points(TASK_GROUP).items():
        try:
            cls = ep.load()
        except Exception as e:  # a plugin's import error must not stop every command
            report_broken(TASK_GROUP, name, ep, f"{type(e).__name__}: {e}")
            continue
        why = None
        if name in builtin:
            why = f"the name {name!r} is a built-in task's"
        elif not (isinstance(cls, type) and issubclass(cls, Task)):
            why = f"{ep.value} is not a lstmlab.tasks.base.Task subclass"
        elif not (isinstance(getattr(cls, "Config", None), type) and issubclass(cls.Config, TaskConfig)):
            why = f"{ep.value}.Config is not a lstmlab.tasks.base.TaskConfig subclass"
        elif getattr(cls, "name", None) != name or typing.get_args(
            cls.Config.model_fields["name"].annotation
        ) != (name,):
            why = f"its class attribute `name` and its Config's `name: Literal[...]` must both be {name!r}"
        if why:
            report_broken(TASK_GROUP, name, ep, why)
        else:
            loaded[name] = cls
    return loaded


def core_names(builtin: tuple[str, ...]) -> tuple[str, ...]:
    """Built-in core names, then plugin core names (not imported: that happens in `load_core`)."""
    return builtin + tuple(name for name in plugin_entry_points(CORE_GROUP) if name not in builtin)


def load_core(name: str) -> Callable:
    """The factory of plugin core `name`; ValueError naming the plugin and its package when it cannot load."""
    ep = plugin_entry_points(CORE_GROUP).get(name)
    if ep is None:
        raise ValueError(f"unknown model type {name!r}: no installed package provides a {CORE_GROUP} entry point "
                         "of that name")
    try:
        factory = ep.load()
    except Exception as e:
        report_broken(CORE_GROUP, name, ep, f"{type(e).__name__}: {e}")
        raise BadValue(f"model.type: {BROKEN[CORE_GROUP][name]}") from None
    if not callable(factory):
        report_broken(CORE_GROUP, name, ep, f"{ep.value} is not callable")
        raise BadValue(f"model.type: {BROKEN[CORE_GROUP][name]}")
    return factory


def broken_note(group: str) -> str:
    """'; plugin task 'x' from pkg 1.0 (mod:Cls) could not be loaded: ...' for each broken plugin, or ''."""
    return "".join(f"; {message}" for message in BROKEN[group].values())
