"""The experiment config: one pydantic schema, YAML loading, `--set` overrides and sweep expansion.

Every key is documented here (the README's config reference is generated from these descriptions).
Unknown keys are errors: a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import platform
import re
import reprlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from lstmlab import files
from lstmlab.errors import ConfigError, UserError
from lstmlab.kernels import BACKEND_NAMES
from lstmlab.plugins import core_names
from lstmlab.schema import SEED_MAX, Section
from lstmlab.tasks import TASKS, TaskConfig, valid_tasks


def task_config(value: Any) -> Any:
    """The `task` section as its task's own Config, the task looked up in the registry (lstmlab.tasks.TASKS,
    plugins included) when a config is validated; its keys' errors keep their place (task.seq_len)."""
    if isinstance(value, TaskConfig):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError("model_attributes_type",
                                  "Input should be a valid dictionary or object to extract fields from")
    name = value.get("name")
    if name is None:
        raise PydanticCustomError("union_tag_not_found", "task.name is missing")
    if not isinstance(name, str) or name not in TASKS:
        raise PydanticCustomError("union_tag_invalid", "unknown task {tag}", {"tag": str(name)})
    return TASKS[name].Config.model_validate(value)

LSTM_TYPES = ("scratch-lstm", "lstm")  # the types forget_bias applies to
BUILTIN_MODEL_TYPES = (*LSTM_TYPES, "gru", "rnn")  # plugin cores are looked up when a config is validated


@functools.cache
def model_types() -> tuple[str, ...]:
    """Built-in core names, then those installed plugins add (lstmlab.plugins.core_names), looked up the first
    time a config is validated, not when this module loads (an entry-point scan costs milliseconds)."""
    return core_names(BUILTIN_MODEL_TYPES)


class ModelConfig(Section):
    """The network: input encoder -> recurrent core -> head."""

    type: str = Field(
        "scratch-lstm",
        description="Recurrent core: lstmlab's own LSTM (scratch-lstm) or torch.nn's LSTM, GRU, RNN "
        "(or a core an installed plugin adds).",
        json_schema_extra={"choices": list(BUILTIN_MODEL_TYPES)},
    )
    layers: int = Field(1, ge=1, le=16, description="Stacked recurrent layers.")
    hidden_size: int | None = Field(
        128, ge=1, le=65536, description="Units per recurrent layer. Derived when param_budget is set."
    )
    param_budget: int | None = Field(
        None,
        ge=1,
        description="Total parameter count to aim at: hidden_size is derived per type and depth so the "
        "whole model is as close to it as an integer size allows. null: use hidden_size.",
    )
    backend: Literal[BACKEND_NAMES] = Field(  # type: ignore[valid-type]
        "auto",
        description="scratch-lstm only: the kernel. auto picks the fastest correct one for the device "
        "(and says so when it falls back); the choice is recorded in env.json.",
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout between recurrent layers (none after the last), as nn.LSTM."
    )
    forget_bias: float | None = Field(
        None,
        description="LSTM types: initial value of the forget-gate bias (b_if + b_hf), applied the same "
        "way to scratch-lstm and lstm. null: PyTorch's default init.",
    )
    nonlinearity: Literal["tanh", "relu"] = Field("tanh", description="rnn only: the cell's nonlinearity.")
    embedding_dim: int | None = Field(
        None, ge=1, description="Token tasks: embedding size. null: equal to hidden_size."
    )
    tie_weights: bool = Field(
        False,
        description="Token tasks that predict tokens: share the embedding and output matrices "
        "(needs embedding_dim equal to hidden_size).",
    )

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> str:
        """A registry name, checked when a config is validated (not a Literal fixed when this module loaded)."""
        valid = model_types()
        if value not in valid:
            names = [repr(name) for name in valid]
            raise ValueError(f"Input should be {', '.join(names[:-1])} or {names[-1]}")
        return value


MAX_THREADS = 4096  # train.threads above this is refused when the config is read; the CPUs are checked where it runs


class TrainConfig(Section):
    """The training recipe."""

    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of model init, batch order and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu.")
    dtype: Literal["float32", "float64"] = Field("float32", description="Parameter and compute dtype.")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: autocast matmuls to bfloat16 (CUDA only; parameters stay float32)."
    )
    threads: int | None = Field(None, ge=1, le=MAX_THREADS, description="CPU threads for torch, at most the CPUs "
                                "the training process may run on (checked where it runs). null: torch's default.")
    steps: int = Field(2000, ge=1, description="Optimizer steps: the training budget.")
    batch_size: int = Field(64, ge=1, description="Sequences per optimizer step.")
    eval_every: int = Field(200, ge=1, description="Evaluate on the validation split every N steps.")
    eval_batch_size: int = Field(512, ge=1, description="Sequences per batch when evaluating.")
    diagnostics_every: int | None = Field(
        None, ge=1, description="Write diagnostics.csv every N optimizer steps (and at step 0): the gradient "
        "reaching the first and last time step per layer and the gate statistics, on the first 256 validation "
        "sequences (see docs/inspect.md). null: off.",
    )
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field("adam", description="Optimizer.")
    lr: float = Field(1e-3, gt=0.0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="Weight decay (decoupled for adamw).")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd and rmsprop: momentum.")
    grad_clip: float | None = Field(
        1.0, gt=0.0, description="Clip the global gradient norm to this value. null: no clipping."
    )
    schedule: Literal["constant", "cosine", "plateau"] = Field(
        "constant",
        description="LR schedule: constant; cosine decay to min_lr_ratio·lr over the steps; plateau: "
        "multiply by plateau_factor after plateau_patience evaluations without improvement.",
    )
    warmup_steps: int = Field(0, ge=0, description="Linear LR warm-up steps (constant and cosine).")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="cosine: final LR as a fraction of lr.")
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0, description="plateau: LR multiplier.")
    plateau_patience: int = Field(2, ge=0, description="plateau: evaluations without improvement to wait.")
    early_stop_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without improvement. null: never."
    )




def check_threads(threads: int | None) -> None:
    """train.threads against the CPUs of the process about to train (a Slurm or Ray job may run on a bigger
    machine than the one that read the config, so the check is made where the run starts, not when the config
    is read). 100000 threads ended in a segfault, the run left `running`."""
    cpus = available_cpus()
    if threads is not None and threads > cpus:
        raise ConfigError(f"train.threads: {threads} is more than the {cpus} CPU(s) this process may run on "
                          f"(on {platform.node() or 'this machine'}); at most {cpus}, or null to let torch choose")


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: what a container or taskset leaves it)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class TuneConfig(Section):
    """`train --tune KEY`: per group, widen the grid of one sweep axis while its best value sits at an edge
    (lstmlab.search). Not part of a run's config: it changes which runs exist, not how one trains."""

    key: str | None = Field(
        None, description="The sweep axis to tune within each group (e.g. train.lr), chosen by mean "
        "validation metric as `compare --tune` does; `train --tune KEY` sets it. null: no search.",
    )
    max_widen: int = Field(3, ge=0, description="Widenings per group at most; then the group stops at its edge.")
    min: float | None = Field(None, description="No value below this is tried. null: the key's own range only.")
    max: float | None = Field(None, description="No value above this is tried. null: the key's own range only.")


class HalvingConfig(Section):
    """`train --halving`: successive halving over the tuned key's values (lstmlab.search)."""

    enabled: bool = Field(False, description="Train every value to a fraction of the budget, continue the best "
                          "1/eta of them, and so on to train.steps; `train --halving` sets it.")
    eta: int = Field(3, ge=2, description="Each rung keeps the best 1/eta of the values (at least one) and "
                     "multiplies the budget by eta.")
    min_fraction: float = Field(0.25, gt=0.0, le=1.0, description="The first rung's budget as a fraction of "
                                "train.steps (rounded up to a multiple of train.eval_every).")


class ExperimentConfig(Section):
    """A whole experiment: what to learn, with what, how, and which points to sweep."""

    experiment: str = Field(
        "default", max_length=100,
        description="Name of the experiment: runs land in <runs-dir>/<experiment>/<run-name>/.",
    )
    task: SerializeAsAny[TaskConfig] = Field(description="The sequence task; `name` picks it, its keys follow.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The network (keys below).")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The training recipe (keys below).")
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Dotted key -> list of values; one run per point of the cartesian product. {range: N} "
        "stands for the list 0, 1, ..., N-1 (train.seed: {range: 10} is ten seeds).",
    )
    tune: TuneConfig = Field(default_factory=TuneConfig, exclude=True,  # not in run folders' config.yaml
                             description="train --tune: the grid search that widens itself (keys below).")
    halving: HalvingConfig = Field(default_factory=HalvingConfig, exclude=True,
                                   description="train --halving: successive halving (keys below).")

    @field_validator("sweep", mode="before")
    @classmethod
    def _ranges(cls, sweep: Any) -> Any:
        """An axis written {range: N} is [0, 1, ..., N-1]: `train.seed: {range: 10}` sweeps ten seeds."""
        if not isinstance(sweep, dict):
            return sweep
        expanded = {}
        for key, values in sweep.items():
            if isinstance(values, dict):
                n = values.get("range")
                if set(values) != {"range"} or not isinstance(n, int) or isinstance(n, bool) or n < 1:
                    raise ValueError(f"axis {key}: a mapping here must be {{range: N}} with N a whole number ≥ 1 "
                                     f"(the values 0..N-1), got {values!r}; or give a list of values")
                values = list(range(n))
            expanded[key] = values
        return expanded

    _task = field_validator("task", mode="before")(task_config)

    @field_validator("experiment")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError("must be letters, digits, '.', '_' or '-' (it names a folder)")
        return value

    @model_validator(mode="after")
    def _sweep_axes_not_empty(self) -> ExperimentConfig:
        for key, values in self.sweep.items():
            if not values:
                raise ValueError(f"sweep axis {key!r} has no values")
        return self

    def runs(self) -> Iterator[ExperimentConfig]:
        """One resolved config (sweep applied, `sweep` emptied) per point of the sweep, in order."""
        raw = self.model_dump(mode="json")
        axes = list(self.sweep.items())
        raw.pop("sweep")
        for values in itertools.product(*(v for _, v in axes)):
            point = copy.deepcopy(raw)
            where = []
            for (key, _), value in zip(axes, values, strict=True):
                set_dotted(point, key, value)
                where.append(f"{key}={echo(value, str)}")
            yield validate(point, source="sweep point " + ", ".join(where))

    def sweep_points(self) -> int:
        """How many points the sweep has: the product of its axes' lengths (repeats included)."""
        return math.prod(len(values) for values in self.sweep.values())

    def dump_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# -- dotted keys ------------------------------------------------------------------------------------


def set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])} is a value, not a section, so {key} cannot be set")
        node = child
    node[parts[-1]] = value


def get_dotted(raw: dict, key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node[part]
    return node


load_yaml = files.load_yaml


def parse_scalar(text: str) -> Any:
    """A `--set` value is a YAML scalar: 3e-4 -> 0.0003, gru -> 'gru', null -> None, [1, 2] -> list."""
    try:
        return load_yaml(text) if text != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse value {echo(text)} as YAML: {echo(str(e).splitlines()[0], str)}") from None


def parse_assignment(text: str, flag: str = "--set") -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ConfigError(f"malformed {flag} {echo(text)}: expected KEY=VALUE with a dotted key, e.g. train.lr=3e-4")
    return key, value


def split_sweep_values(text: str, key: str = "KEY") -> list[Any]:
    """`--sweep KEY=1,2,3` values: comma-separated YAML scalars."""
    values = [parse_scalar(v.strip()) for v in text.split(",")]
    if any(v == "" for v in values):
        raise ConfigError(f"--sweep {key}={echo(text, str)}: an empty value in the list; give comma-separated values, "
                          f"e.g. --sweep {key}=1,2")
    return values


# -- validation with messages that name the key -----------------------------------------------------


def _schema_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _loc_to_key(loc: tuple) -> str:
    parts = [str(p) for p in loc]
    # a discriminated union puts the tag in the path: task.adding.seq_len -> task.seq_len
    if len(parts) >= 2 and parts[0] == "task" and parts[1] in TASKS:
        parts = [parts[0], *parts[2:]]
    return ".".join(parts)


def _section_model(key: str, raw: dict) -> type[BaseModel] | None:
    parts = key.split(".")[:-1]
    model: type[BaseModel] = ExperimentConfig
    for part in parts:
        if model is ExperimentConfig and part == "task":
            name = raw.get("task", {}).get("name") if isinstance(raw.get("task"), dict) else None
            if name not in TASKS:
                return None
            model = TASKS[name].Config
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


ECHO_LIMIT = 200  # characters of a value that a message repeats
_REPR = reprlib.Repr()  # containers shown from their first items and levels, never spelled out in full
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 10
_REPR.maxstring = _REPR.maxother = ECHO_LIMIT
_REPR.maxlevel = 3  # at most 10 + 10² + 10³ items, then ...


def echo(value: Any, show=repr) -> str:
    """A value as a message repeats it: at most ECHO_LIMIT characters (a list of a million values is not
    spelled out; `show` is repr, or str for a scalar written as in `key=value`)."""
    text = show(value) if show is str and not isinstance(value, (list, tuple, dict, set)) else _REPR.repr(value)
    return text if len(text) <= ECHO_LIMIT else f"{text[:ECHO_LIMIT]}..."


def format_error(error: dict, raw: dict) -> str:
    key = _loc_to_key(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        section = _section_model(key, raw)
        valid = f"; valid keys: {', '.join(_schema_keys(section))}" if section else ""
        return f"{key}: unknown key{valid}"
    if kind == "union_tag_invalid":
        return f"{key}.name: unknown task {error.get('ctx', {}).get('tag')!r}; {valid_tasks()}"
    if kind == "union_tag_not_found":
        return f"{key}.name: missing (it picks the task); {valid_tasks()}"
    message = error["msg"].removeprefix("Value error, ")
    field = re.match(r"(\w+): ", message)
    if kind == "value_error" and field and _section_model(f"{key}.{field[1]}", raw) is not None:
        return f"{key}.{message}"  # a section's validator naming one of its keys (lstmlab.schema)
    if "input" in error and kind not in ("missing",) and not isinstance(error["input"], (dict, list)):
        message += f" (got {echo(error['input'])})"
    return f"{key}: {message}"


def validate(raw: Any, source: str = "config", origins: dict[str, str] | None = None) -> ExperimentConfig:
    """Validate a raw config dict. `source` names where it came from; `origins` maps the dotted keys that
    `--set` and `--sweep` gave to the flag that gave them, so that an error in one is blamed on the flag."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (experiment, task, model, train, sweep)")
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        blamed: dict[str, list[str]] = {}
        for err in e.errors():
            message = format_error(err, raw)
            key = message.split(":", 1)[0]
            origin = next((flag for k, flag in (origins or {}).items() if key == k or key.startswith(k + ".")),
                          source)
            blamed.setdefault(origin, []).append(message)
        raise ConfigError("; ".join(f"{origin}: {'; '.join(errors)}" for origin, errors in blamed.items())) from None
    for key in config.sweep:
        _check_key_exists(key, raw, (origins or {}).get(f"sweep.{key}", source))
    _check_sweep_size(config, source, origins or {})
    return config


MAX_SWEEP_POINTS = 10_000  # points of one sweep; LSTMLAB_MAX_SWEEP_POINTS raises it


def max_sweep_points() -> int:
    import os

    text = os.environ.get("LSTMLAB_MAX_SWEEP_POINTS", "")
    if not text:
        return MAX_SWEEP_POINTS
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"LSTMLAB_MAX_SWEEP_POINTS={echo(text, str)}: expected a positive integer")
    return int(text)


def _check_sweep_size(config: ExperimentConfig, source: str, origins: dict[str, str]) -> None:
    """Refuse a sweep of more points than max_sweep_points() from the axes' lengths alone (their product),
    before any point is walked: a 1000 × 1000 × 1000 sweep is refused at once, not after hours of checking."""
    points, limit = config.sweep_points(), max_sweep_points()
    if points > limit:
        axes = " × ".join(f"{key} {len(values)}" + (" (--sweep)" if origins.get(f"sweep.{key}", "").startswith(
            "--sweep") else "") for key, values in config.sweep.items())
        raise ConfigError(f"{source}: sweep: {points:,} points ({axes}) is more than the limit of {limit:,} "
                          "runs in one sweep; split it into several (e.g. one command per value of an axis, with "
                          "--set KEY=VALUE), or raise the limit: LSTMLAB_MAX_SWEEP_POINTS=N lstmlab train ...")


def _check_key_exists(key: str, raw: dict, source: str) -> None:
    section = _section_model(key, raw)
    last = key.split(".")[-1]
    if section is None or last not in section.model_fields or key.split(".")[0] == "sweep":
        raise ConfigError(f"{source}: sweep key {key!r} is not a config key (use dotted keys like model.layers)")


# -- loading ----------------------------------------------------------------------------------------


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = files.read_yaml(path)
    except UserError as e:
        raise ConfigError(str(e)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (experiment, task, model, train, sweep)")
    return raw


def apply_overrides(
    raw: dict, overrides: tuple[str, ...] | list[str] = (), sweeps: tuple[str, ...] | list[str] = ()
) -> dict:
    """Apply `--set KEY=VALUE` and `--sweep KEY=V1,V2` to a raw config dict (a copy is returned).

    `--sweep` replaces the config's axis for that key; `--set` on a swept key pins it (the axis is dropped).
    """
    raw = copy.deepcopy(raw)
    for text in sweeps:
        key, values = parse_assignment(text, "--sweep")
        raw.setdefault("sweep", {})
        if not isinstance(raw["sweep"], dict):
            raise ConfigError("sweep: expected a mapping of dotted keys to lists")
        raw["sweep"][key] = split_sweep_values(values, key)
    for text in overrides:
        key, value = parse_assignment(text, "--set")
        if key.startswith("sweep."):  # a sweep key is dotted itself: --set sweep.model.layers=[1,2]
            if raw.get("sweep") is None:  # `sweep:` left empty in the file
                raw["sweep"] = {}
            if not isinstance(raw["sweep"], dict):
                raise ConfigError(f"--set {text}: sweep is not a mapping of dotted keys to lists in the config")
            raw["sweep"][key.removeprefix("sweep.")] = parse_scalar(value)
            continue
        set_dotted(raw, key, parse_scalar(value))
        if isinstance(raw.get("sweep"), dict):
            raw["sweep"].pop(key, None)
    return raw


def load_config(
    path: str | Path, overrides: tuple[str, ...] | list[str] = (), sweeps: tuple[str, ...] | list[str] = ()
) -> ExperimentConfig:
    """Read a YAML config, apply overrides, validate. Raises ConfigError naming the key and what is valid."""
    raw = apply_overrides(read_yaml(path), overrides, sweeps)
    return validate(raw, source=str(path), origins=flag_origins(overrides, sweeps))


def seed_sweep(seeds: int | None, sweeps: list[str] | tuple[str, ...] = (),
               overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """`train --seeds N` as the `--sweep` it stands for: ["train.seed=0,1,...,N-1"] ([] when None).
    ConfigError when N < 1 or another flag sets the seeds too."""
    if seeds is None:
        return []
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give the number of seeds, N ≥ 1 (seeds 0..N-1)")
    clash = [f"--sweep {t}" for t in sweeps if parse_assignment(t, "--sweep")[0] == "train.seed"]
    clash += [f"--set {t}" for t in overrides if parse_assignment(t, "--set")[0] == "train.seed"]
    if clash:
        raise ConfigError(f"--seeds {seeds} and {clash[0]} both set train.seed; give one of them")
    return [f"train.seed={','.join(map(str, range(seeds)))}"]


def flag_origins(overrides: tuple[str, ...] | list[str] = (), sweeps: tuple[str, ...] | list[str] = ()) -> dict:
    """Dotted key -> the `--set` or `--sweep` flag that gave it (for error messages)."""
    origins = {f"sweep.{parse_assignment(text, '--sweep')[0]}": f"--sweep {echo(text, str)}" for text in sweeps}
    origins.update({parse_assignment(text, "--set")[0]: f"--set {echo(text, str)}" for text in overrides})
    return origins


def ignored_keys(cfg: ExperimentConfig) -> list[str]:
    """Notes on keys this run's config sets that its model type does not use (they are kept, not applied)."""
    model = cfg.model
    notes = []
    if model.forget_bias is not None and model.type not in LSTM_TYPES:
        notes.append(f"model.forget_bias is ignored for model.type {model.type} (it applies to "
                     f"{' and '.join(LSTM_TYPES)})")
    if model.backend != "auto" and model.type != "scratch-lstm":
        notes.append(f"model.backend is ignored for model.type {model.type} (it applies to scratch-lstm)")
    if model.nonlinearity != "tanh" and model.type != "rnn":
        notes.append(f"model.nonlinearity is ignored for model.type {model.type} (it applies to rnn)")
    return notes


# -- the README's config reference, generated from the schema ---------------------------------------

REFERENCE_START = "<!-- config-reference:start (generated by `python -m lstmlab.config README.md`) -->"
REFERENCE_END = "<!-- config-reference:end -->"


def _allowed(field) -> str:
    """`a` \\| `b` for a choice; the type and its bounds otherwise (int, ≥ 1)."""
    import typing

    import annotated_types as at

    annotation = field.annotation
    args = typing.get_args(annotation)
    nullable = type(None) in args
    if nullable:
        annotation = next(a for a in args if a is not type(None))
    choices = (field.json_schema_extra or {}).get("choices") if isinstance(field.json_schema_extra, dict) else None
    if choices:  # a registry's built-in names (model.type): plugins may add more
        text = " \\| ".join(f"`{v}`" for v in choices)
    elif typing.get_origin(annotation) is Literal:
        text = " \\| ".join(f"`{v}`" for v in typing.get_args(annotation))
    else:
        text = getattr(annotation, "__name__", str(annotation).replace("typing.", ""))
        bounds = {at.Ge: ("≥", "ge"), at.Gt: (">", "gt"), at.Le: ("≤", "le"), at.Lt: ("<", "lt")}
        for meta in field.metadata:
            if type(meta) in bounds:
                symbol, attr = bounds[type(meta)]
                text += f", {symbol} {getattr(meta, attr)}"
    return text + (" or `null`" if nullable else "")


def _default(field) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        return f"`{value}`" if value in ({}, []) else "(section)"
    return "`null`" if field.default is None else f"`{field.default}`"


def _table(prefix: str, model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    lines = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{prefix}{name}` | {_default(field)} | {_allowed(field)} | {description} |")
    return lines


def config_reference() -> str:
    """Markdown tables of every config key, from the schema's own descriptions."""
    from lstmlab.tasks import BUILTIN_TASKS  # not installed plugins: the README describes lstmlab itself
    from lstmlab.tasks.base import TaskConfig

    lines = ["### Top level", "", *_table("", ExperimentConfig, skip=("task", "model", "train", "tune", "halving")),
             ""]
    lines += ["### model", "", *_table("model.", ModelConfig), ""]
    lines += ["### train", "", *_table("train.", TrainConfig), ""]
    lines += ["### tune", "", *_table("tune.", TuneConfig), ""]
    lines += ["### halving", "", *_table("halving.", HalvingConfig), ""]
    lines += ["### task (every task)", "", *_table("task.", TaskConfig), ""]
    for name, cls in sorted(BUILTIN_TASKS.items()):
        doc = (cls.__module__ and __import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip().splitlines()
        lines += [f"### task.name: {name}", "", doc[0] if doc else "", ""]
        base = TaskConfig.model_fields  # a task's own keys, and shared keys it gives another meaning or default
        own = [k for k, f in cls.Config.model_fields.items() if k != "name" and (
            k not in base or (f.description, f.default) != (base[k].description, base[k].default))]
        if own:
            lines += _table("task.", cls.Config, skip=tuple(k for k in cls.Config.model_fields if k not in own))
        else:
            lines.append("No keys of its own.")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_reference(readme: str | Path) -> bool:
    """Replace the generated block of `readme`; True when it changed."""
    path = Path(readme)
    text = path.read_text()
    start, end = text.index(REFERENCE_START), text.index(REFERENCE_END)
    new = text[: start + len(REFERENCE_START)] + "\n\n" + config_reference() + "\n" + text[end:]
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    import sys

    print("updated" if write_reference(sys.argv[1] if len(sys.argv) > 1 else "README.md") else "up to date")
