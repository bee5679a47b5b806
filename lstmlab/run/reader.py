"""Reading a run folder: one read-only view for everything that reads runs after (or while) they train —
compare, inspect, sample, and the MLflow and TensorBoard exporters. Writing is lstmlab.run.folder's.

    view = RunView(path)             nothing is read yet; each file is read once, on first use
    view.config, view.flat           config.yaml as written; its leaves by dotted key ({"model.layers": 2, ...})
    view.lookup("task")              (found, value) of any dotted key, a whole section included
    view.resolved()                  the config validated: an ExperimentConfig, defaults filled
    view.summary, view.format        summary.json ({} before the run wrote one) and its run-folder format
    view.status, view.name           "running" | "completed" | "failed" | "interrupted" | "unknown"; run name
    view.rows, view.diagnostics      metrics.csv and diagnostics.csv rows, numbers parsed
    view.env                         env.json ({} when there is none)
    view.metric, view.higher_is_better, view.test_metric(), view.best_val(), view.solved(), view.val_curve()
                                     the results, read by the folder's format (below)
    view.weights(choice)             a checkpoint's weights and which they are
    view.load_model(choice, spec=)   the run's model (build_model of its config) holding those weights
    find_data_dir(view, task_cfg, given)   where the run's dataset is: given, else env.json's data.dir, else ./data

A file that cannot be read as what it should be raises files.UnreadableFile, a UserError naming the file:
the command line says so in one line and exits 2; compare, which must not stop at one bad folder among
thousands, catches it and lists the run as skipped with that reason.

Formats (lstmlab.run.folder's docstring): a format-1 folder (summary.json without "format", written before
the field existed) is read as far as its fields allow: the metric and its direction come from the task
registry when the summary lacks them, the test metric from metrics.csv's test row, the best validation
metric from its val rows, `solved` from the solve threshold, and a checkpoint without best weights is an
old one. A format-2 folder is read as written: a completed summary without one of COMPLETED_FIELDS, or a
checkpoint saved after the first evaluation without best weights, is damaged, and says so. A later
format only adds fields, so it reads like format 2.

Which weights (`choice`):
    best            the best-by-validation weights: those a completed run's test metric was measured with
                    (while a run trains: the best so far)
    latest          the last checkpoint's weights (for a completed run, the ones it ended training with)
    auto            best for a completed run, else latest: an unfinished run is read where it stands
                    (inspect's default)
    best-or-latest  best, or latest where a checkpoint has none (saved before the first evaluation, or by a
                    version that kept none: format 1); sample's choice
"""

from __future__ import annotations

import functools
import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmlab import files
from lstmlab.errors import UserError
from lstmlab.run.folder import (
    CHECKPOINT,
    CONFIG,
    DIAGNOSTICS,
    FORMAT_UNMARKED,
    METRICS,
    SUMMARY,
    RunFolder,
    flatten,
)

if TYPE_CHECKING:
    import torch

    from lstmlab.config import ExperimentConfig, ModelConfig

DEFAULT_BY = ("model.layers",)  # the config key runs are grouped by when no --by is given
WEIGHTS = ("auto", "best", "latest", "best-or-latest")
UNKNOWN = "unknown"  # the status of a run without summary.json, or whose summary names none

FIELD_TYPES: dict[str, tuple[type, ...]] = {  # summary fields readers use, and the types they accept
    "format": (int,), "status": (str,), "run": (str,), "task": (str,), "metric": (str,),
    "higher_is_better": (bool,), "params": (int,), "hidden_size": (int,), "baseline": (int, float),
    "baselines": (dict,), "solve_threshold": (int, float), "solved": (bool,), "wall_s": (int, float),
    "test": (dict,), "test_metric": (int, float), "best_val": (dict,), "best_step": (int,), "step": (int,),
    "steps": (int,), "error": (str,), "converged": (bool,),
}
TYPE_NAMES = {str: "text", bool: "true or false", int: "an integer", float: "a number", dict: "an object"}
# what a completed summary of format 2 or later always holds (lstmlab.run.train.finish writes them); `solved`
# only where the task has a solve threshold (an arrays task has none unless task.solve_threshold sets one)
COMPLETED_FIELDS = ("task", "metric", "higher_is_better", "params", "best_val", "test_metric", "solved")


class WeightsDoNotFit(files.UnreadableFile):
    """checkpoint.pt's weights do not load into the model its config.yaml builds."""


class RunView:
    """A read-only view of one run folder; every file is read at most once, when first asked for."""

    def __init__(self, path: str | Path):
        self.folder = RunFolder(path)
        self.path = self.folder.path
        self._resolved: ExperimentConfig | None = None

    def __repr__(self) -> str:
        return f"RunView({str(self.path)!r})"

    # -- config.yaml -------------------------------------------------------------------------------------
    @cached_property
    def config(self) -> dict[str, Any]:
        """config.yaml as a mapping, as written (the resolved config of the run)."""
        return self.folder.config()

    @cached_property
    def flat(self) -> dict[str, Any]:
        """The config's leaves by dotted key, hashable so that runs group by them: {"model.layers": 2,
        "task.text": ("a.txt",), ...} (lists as tuples, an empty section as the JSON text "{}")."""
        return flat_config(self.config)

    def lookup(self, key: str) -> tuple[bool, Any]:
        """(found, value) of a dotted key, hashable; a section (e.g. `task`) as JSON text."""
        if key in self.flat:
            return True, self.flat[key]
        found, value = dotted(self.config, key)
        return found, hashable(value)

    def resolved(self) -> ExperimentConfig:
        """The config validated (ConfigError, a UserError, naming config.yaml and the key at fault)."""
        if self._resolved is None:
            from lstmlab.config import validate

            self._resolved = validate(self.config, source=str(self.path / CONFIG))
        return self._resolved

    @property
    def experiment(self) -> str:
        return str(self.config.get("experiment") or self.path.parent.name)

    # -- summary.json ------------------------------------------------------------------------------------
    @cached_property
    def summary(self) -> dict[str, Any]:
        """summary.json ({} when there is none yet), its fields' types checked (FIELD_TYPES), and for a
        completed run of format 2 or later, COMPLETED_FIELDS present."""
        path = self.path / SUMMARY
        if not path.exists():
            return {}
        try:
            summary = json.loads(files.read_text(path))
        except json.JSONDecodeError as e:
            raise files.UnreadableFile(path, f"not JSON ({e})") from None
        if not isinstance(summary, dict):
            raise files.UnreadableFile(path, "not an object")
        for key, types in FIELD_TYPES.items():
            value = summary.get(key)
            if value is None:
                continue
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise files.UnreadableFile(path, f"{key} is {json.dumps(value)[:40]}, not "
                                                 f"{' or '.join(TYPE_NAMES[t] for t in types)}")
        marked = summary.get("format", FORMAT_UNMARKED)
        if marked < 1:
            raise files.UnreadableFile(path, f"format is {marked}, not a run folder format (1, 2, ...)")
        if marked > FORMAT_UNMARKED and summary.get("status") == "completed":
            missing = [key for key in COMPLETED_FIELDS if summary.get(key) is None
                       and not (key == "solved" and summary.get("solve_threshold") is None)]
            if missing:
                raise files.UnreadableFile(path, f"a completed run's summary of format {marked} always holds "
                                                 f"{', '.join(missing)}, and this one does not: damaged, or "
                                                 "not written by lstmlab")
        return summary

    def has_summary(self) -> bool:
        return (self.path / SUMMARY).exists()

    @property
    def format(self) -> int | None:
        """The run folder's format: summary.json's "format", 1 when it has none; None without summary.json."""
        if not self.summary:
            return None
        return self.summary.get("format", FORMAT_UNMARKED)

    @property
    def unmarked(self) -> bool:
        """Format 1 (or no summary to tell): fields may be missing, and are derived where they can be."""
        return self.format in (None, FORMAT_UNMARKED)

    @property
    def status(self) -> str:
        return self.summary.get("status") or UNKNOWN

    @property
    def name(self) -> str:
        return self.summary.get("run") or self.path.name

    @property
    def task(self) -> str | None:
        task = self.summary.get("task") or self.flat.get("task.name")
        return task if isinstance(task, str) else None

    @property
    def metric(self) -> str | None:
        """The task's metric: the summary's, or for format 1 the task registry's."""
        metric = self.summary.get("metric")
        if metric is None and self.unmarked:
            metric = task_attribute(self.task, "metric")
        return metric

    @property
    def higher_is_better(self) -> bool | None:
        higher = self.summary.get("higher_is_better")
        if higher is None and self.unmarked:
            higher = task_attribute(self.task, "higher_is_better")
        return higher

    def test_metric(self) -> Any:
        """The test metric of a completed run (measured with the best weights), as written: the summary's
        test_metric; for format 1 also its test[metric] or metrics.csv's test row. None when there is none."""
        value = self.summary.get("test_metric")
        if value is None and self.unmarked:
            test, metric = self.summary.get("test"), self.metric
            if isinstance(test, dict) and metric:
                value = test.get(metric)
            if value is None:
                value = next((row.get(metric) for row in reversed(self.rows) if row.get("split") == "test"), None)
        return value

    def best_val(self) -> float | None:
        """The best validation metric (the one that chose the weights): summary best_val[metric]; for format 1
        without it, the best of the val rows of metrics.csv."""
        best, metric = self.summary.get("best_val"), self.metric
        value = best.get(metric) if isinstance(best, dict) and metric else None
        if not is_number(value) and self.unmarked and self.higher_is_better is not None:
            curve = self.val_curve()
            if curve:
                value = (max if self.higher_is_better else min)(v for _, v in curve)
        return float(value) if is_number(value) else None

    def solved(self) -> bool | None:
        """Whether the test metric beats the solve threshold: the summary's word; for format 1 without it,
        the comparison itself."""
        solved = self.summary.get("solved")
        if solved is None and self.unmarked:
            value, threshold, higher = self.test_metric(), self.summary.get("solve_threshold"), self.higher_is_better
            if is_number(value) and threshold is not None and higher is not None:
                solved = value >= threshold if higher else value <= threshold
        return None if solved is None else bool(solved)

    # -- metrics.csv, diagnostics.csv, env.json ----------------------------------------------------------
    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """metrics.csv: one dict per complete row, numbers parsed; [] when there is no file yet."""
        return self.folder.metrics(METRICS)

    @cached_property
    def diagnostics(self) -> list[dict[str, Any]]:
        """diagnostics.csv (train.diagnostics_every): rows like metrics.csv's; [] when there is none."""
        return self.folder.metrics(DIAGNOSTICS)

    @cached_property
    def env(self) -> dict[str, Any]:
        return self.folder.env() or {}

    def val_curve(self, metric: str | None = None) -> list[tuple[int, float]]:
        """(step, validation metric) per evaluation, the task's metric unless `metric` is given."""
        metric = metric or self.metric
        return [(row["step"], float(row[metric])) for row in self.rows
                if row.get("split") == "val" and is_step(row.get("step")) and is_number(row.get(metric))]

    def last_step(self) -> int | None:
        """The step of metrics.csv's last row: where an unfinished run stood at its last evaluation."""
        steps = [row["step"] for row in self.rows if is_step(row.get("step"))]
        return steps[-1] if steps else None

    # -- checkpoint.pt -----------------------------------------------------------------------------------
    @cached_property
    def checkpoint(self) -> dict[str, Any]:
        """checkpoint.pt on the CPU (UserError when there is none yet, or it cannot be read as one)."""
        path = self.path / CHECKPOINT
        if not self.folder.has_checkpoint():
            raise UserError(f"{self.path} has no checkpoint.pt yet (status {self.status}): a run writes its first "
                            "checkpoint at its first evaluation (every train.eval_every steps)")
        state = files.load_torch(path, map_location="cpu")
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise files.UnreadableFile(path, "is not an lstmlab checkpoint (no model weights in it)")
        return state

    def weights(self, choice: str = "auto") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(state_dict, which weights: {"source": "best" | "latest checkpoint", "step", "status",
        "checkpoint_step"}) for `choice` (see the module docstring). A checkpoint saved before the run's
        first evaluation (interrupted early) has no best weights yet: auto and best-or-latest read its latest."""
        if choice not in WEIGHTS:
            raise UserError(f"weights: unknown choice {choice!r}; valid: {', '.join(WEIGHTS)}")
        ckpt, path, status = self.checkpoint, self.path / CHECKPOINT, self.status
        best = ckpt.get("best")
        has_best = isinstance(best, dict) and isinstance(best.get("model"), dict)
        before_first_evaluation = isinstance(best, dict) and best.get("step") is None  # stopped before it
        if not has_best and choice != "latest":
            if not self.unmarked and not before_first_evaluation:
                raise files.UnreadableFile(path, f"has no best weights, though a format-{self.format} run "
                                                 "folder's checkpoint holds them from the first evaluation on: "
                                                 "damaged, or not written by lstmlab")
            if choice == "best":
                why = ("the run stopped before its first evaluation" if before_first_evaluation
                       else "written by a version that kept none")
                raise files.UnreadableFile(path, f"no best weights in it ({why}); use --weights latest")
        if has_best and (choice in ("best", "best-or-latest") or (choice == "auto" and status == "completed")):
            return best["model"], {"source": "best", "step": best.get("step"), "status": status,
                                   "checkpoint_step": ckpt.get("step")}
        return ckpt["model"], {"source": "latest checkpoint", "step": ckpt.get("step"), "status": status,
                               "checkpoint_step": ckpt.get("step")}

    def load_model(self, weights: str = "auto", *, spec: Any, model: ModelConfig | None = None
                   ) -> tuple[torch.nn.Module, dict[str, Any]]:
        """(model in eval mode, which weights): `build_model` of the run's model config (or `model`, a config
        whose parameters have the same names and shapes) for the dataset `spec`, in the run's train.dtype,
        holding the chosen weights. WeightsDoNotFit when they do not load into it."""
        import torch

        from lstmlab.models.sequence import build_model

        cfg = self.resolved()
        state, used = self.weights(weights)
        net = build_model(model or cfg.model, spec).to(dtype=getattr(torch, cfg.train.dtype))
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise WeightsDoNotFit(self.path / CHECKPOINT, "weights do not fit the model of config.yaml "
                                                          f"({str(e).strip().splitlines()[0]})") from None
        return net.eval(), used


def open_run(path: str | Path) -> RunView:
    """The view of the run folder at `path`; UserError when `path` is none (it has no config.yaml)."""
    view = RunView(path)
    if not view.folder.exists():
        raise UserError(f"{path} is not a run folder: it has no config.yaml (a run folder is "
                        "runs/<experiment>/<run-name>)")
    return view


# -- dotted keys ----------------------------------------------------------------------------------------


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """flatten(config) with hashable leaves: lists as tuples, an empty section as JSON text."""
    return {key: hashable(value) for key, value in flatten(config).items()}


def dotted(config: Any, key: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key in a nested config: dotted(cfg, "model.layers") -> (True, 2)."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_step(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@functools.cache
def task_attribute(task: str | None, name: str) -> Any:
    """A class attribute of a registered task (metric, higher_is_better): for format-1 summaries that lack it."""
    if task is None:
        return None
    from lstmlab.tasks import TASKS

    cls = TASKS.get(task)
    return getattr(cls, name, None) if cls else None


DEFAULT_DATA_DIR = Path("data")  # where train makes datasets unless told --data-dir


def find_data_dir(run: RunView, task_cfg, data_dir: str | Path | None) -> Path:
    """The data dir to read a run's dataset from: `data_dir` when given; else the one its env.json records
    (`data.dir`) if the dataset is still there; else ./data. UserError naming the places looked in when the
    dataset is in none of them."""
    from lstmlab.tasks.datasets import dataset_dir

    if data_dir is not None:
        return Path(data_dir)
    try:
        recorded = (run.env.get("data") or {}).get("dir")
    except (UserError, AttributeError):  # an unreadable or hand-edited env.json: look in the default place
        recorded = None
    places = [Path(recorded)] if isinstance(recorded, str) and recorded else []
    places.append(DEFAULT_DATA_DIR)
    for place in places:
        if dataset_dir(task_cfg, place).exists():
            return place
    name = dataset_dir(task_cfg, DEFAULT_DATA_DIR).name
    raise UserError(f"the dataset of {run.path} ({name}) is in none of {', '.join(map(str, places))}; pass "
                    f"--data-dir DIR, or make it again with `lstmlab generate-data {run.path / 'config.yaml'}`")
