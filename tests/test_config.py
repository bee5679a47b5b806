"""The config schema: overrides, sweeps, and bad input that names the key and what is valid."""

from __future__ import annotations

import copy

import pytest
from conftest import TINY, write_config

from lstmlab.config import ExperimentConfig, apply_overrides, load_config, parse_scalar, validate
from lstmlab.errors import ConfigError


def test_set_parses_yaml_scalars(tiny_config):
    cfg = load_config(tiny_config, ["train.lr=3e-4", "model.type=gru", "train.grad_clip=null", "model.layers=2"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.model.type == "gru"
    assert cfg.train.grad_clip is None
    assert cfg.model.layers == 2


def test_sweep_is_a_cartesian_product_in_order(tiny_config):
    cfg = load_config(tiny_config, sweeps=["model.layers=1,2,3", "train.seed=0,1"])
    points = [(r.model.layers, r.train.seed) for r in cfg.runs()]
    assert points == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    assert all(r.sweep == {} for r in cfg.runs())


def test_sweep_flag_replaces_axis_and_set_pins_it(tmp_path):
    raw = copy.deepcopy(TINY)
    raw["sweep"] = {"model.layers": [1, 2, 3], "train.seed": [0, 1, 2]}
    path = write_config(tmp_path / "c.yaml", raw)
    cfg = load_config(path, overrides=["train.seed=7"], sweeps=["model.layers=2,4"])
    assert cfg.sweep == {"model.layers": [2, 4]}
    assert [(r.model.layers, r.train.seed) for r in cfg.runs()] == [(2, 7), (4, 7)]


def test_resolved_run_config_round_trips(tiny_config, tmp_path):
    cfg = next(load_config(tiny_config, sweeps=["model.layers=2"]).runs())
    again = load_config(write_config(tmp_path / "again.yaml", cfg.model_dump(mode="json")))
    assert again == cfg


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.layerz=2", "model.layerz: unknown key; valid keys: type, layers, hidden_size"),
        ("task.seq_lenx=3", "task.seq_lenx: unknown key; valid keys: name, n_train"),
        ("train.lr=abc", "train.lr: Input should be a valid number"),
        ("model.layers=0", "model.layers: Input should be greater than or equal to 1 (got 0)"),
        ("train.dropout=0.5", "train.dropout: unknown key"),
        ("model.type=transformer", "model.type: Input should be 'scratch-lstm', 'lstm', 'gru' or 'rnn'"),
        ("task.name=nope", "task.name"),
        ("model.backend=cuda-magic", "model.backend: Input should be 'auto', 'reference', 'fused' or 'triton'"),
    ],
)
def test_bad_values_name_the_dotted_key(tiny_config, override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(tiny_config, [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_task_lists_the_valid_tasks(tiny_config):
    with pytest.raises(ConfigError, match="adding") as err:
        load_config(tiny_config, ["task.name=nope"])
    assert "copy" in str(err.value) or "'adding'" in str(err.value)


def test_malformed_set_and_sweep(tiny_config):
    with pytest.raises(ConfigError, match="malformed --set 'model.layers'"):
        load_config(tiny_config, ["model.layers"])
    with pytest.raises(ConfigError, match="malformed --sweep"):
        load_config(tiny_config, sweeps=["=1,2"])
    with pytest.raises(ConfigError, match="is not a config key"):
        load_config(tiny_config, sweeps=["model.width=1,2"])
    with pytest.raises(ConfigError, match="cannot be set"):
        load_config(tiny_config, ["train.lr.x=1"])


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does-not-exist.yaml does not exist"):
        load_config(tmp_path / "does-not-exist.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task:\n  name: adding\n seq_len: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line \d+"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listy)


def test_missing_task_section(tmp_path):
    with pytest.raises(ConfigError, match="task: Field required"):
        validate({"experiment": "x"})


def test_experiment_name_must_be_a_folder_name(tiny_config):
    with pytest.raises(ConfigError, match="experiment: must be letters"):
        load_config(tiny_config, ["experiment=../escape"])


def test_parse_scalar():
    assert parse_scalar("1e-3") == pytest.approx(1e-3)
    assert parse_scalar("true") is True
    assert parse_scalar("[1, 2]") == [1, 2]
    assert parse_scalar("gru") == "gru"


def test_apply_overrides_does_not_touch_the_input():
    raw = copy.deepcopy(TINY)
    apply_overrides(raw, ["model.layers=3"], ["train.seed=1,2"])
    assert raw == TINY


def test_every_field_is_documented():
    from pydantic import BaseModel

    from lstmlab.tasks import TASKS

    models: list[type[BaseModel]] = [ExperimentConfig, *(cls.Config for cls in TASKS.values())]
    models += [ExperimentConfig.model_fields[s].annotation for s in ("model", "train")]
    for model in models:
        for name, field in model.model_fields.items():
            if name == "name" and model is not ExperimentConfig:
                continue  # each task's `name` tag; documented once, on TaskConfig
            assert field.description, f"{model.__name__}.{name} has no description"


def test_model_types_come_from_the_registry_when_a_config_is_validated(monkeypatch):
    """model.type is checked against the core registry (plugins included) at validation, not fixed as a Literal
    when lstmlab.config was imported: a core registered afterwards is valid, and the error lists it."""
    from importlib.metadata import EntryPoint

    from lstmlab import config, plugins

    late = EntryPoint("late-core", "somewhere:make", plugins.CORE_GROUP)
    monkeypatch.setattr(plugins, "plugin_entry_points",
                        lambda group: {"late-core": late} if group == plugins.CORE_GROUP else {})
    config.model_types.cache_clear()
    try:
        assert validate({"task": {"name": "adding"}, "model": {"type": "late-core"}}).model.type == "late-core"
        with pytest.raises(ConfigError, match=r"model.type: Input should be 'scratch-lstm', 'lstm', 'gru', 'rnn' "
                                              r"or 'late-core' \(got 'nope'\)"):
            validate({"task": {"name": "adding"}, "model": {"type": "nope"}})
    finally:
        config.model_types.cache_clear()


def test_task_names_come_from_the_registry_when_a_config_is_validated(monkeypatch):
    """The task section is checked against the task registry when a config is validated: a task registered after
    lstmlab.config was imported validates with its own Config, and an unknown name lists it."""
    from lstmlab.tasks import TASKS
    from lstmlab.tasks.adding import AddingTask

    class LateConfig(AddingTask.Config):
        name: str = "late-task"
        extra_key: int = 3

    class LateTask(AddingTask):
        name = "late-task"
        Config = LateConfig

    monkeypatch.setitem(TASKS, "late-task", LateTask)
    cfg = validate({"task": {"name": "late-task", "extra_key": 5, "seq_len": 7}})
    assert type(cfg.task) is LateConfig and cfg.task.extra_key == 5
    assert cfg.model_dump()["task"]["extra_key"] == 5  # the task's own keys are dumped, not only the shared ones
    with pytest.raises(ConfigError, match=r"task.name: unknown task 'nope'; valid tasks: .*late-task"):
        validate({"task": {"name": "nope"}})
    with pytest.raises(ConfigError, match=r"task.extra_key: Input should be a valid integer"):
        validate({"task": {"name": "late-task", "extra_key": "x"}})
