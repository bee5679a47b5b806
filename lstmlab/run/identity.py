"""One config per experiment folder: a command whose config differs from the runs already in the folder is
refused before anything is generated or trained.

    check_experiment(cfg, runs_dir, allow_mixed=False, restart=False)   ConfigError naming the keys, or None

A run's identity is its resolved config: `--set train.lr=0.02` makes other runs, not the same runs retrained
(a run folder of the same name but another config is refused by lstmlab.run.folder). Without this check, a
rerun with a changed `--set` would be refused for the runs whose names it shares and would train the others
into the same experiment folder, which would then hold two configs that `compare` pools.

Which keys may differ between the folder's runs and the new ones, and which may not:

    may differ       the new config's sweep axes; keys the folder's runs already differ in (the axes they
                     were swept over); train.seed and experiment (what compare pools over); model.hidden_size
                     when model.param_budget sets it (it is derived per depth); keys a run folder of an
                     earlier version lacks
    may not          every other key: the folder holds one value of it, the new config another

`restart` leaves out the folder's runs the new command replaces (the same run names): what stays is compared.
A folder of more than SAMPLE runs is judged by SAMPLE of them spread over its sorted names: enough to see a
config that differs from all of them, and its sweep axes, without reading every config.yaml of a big study.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lstmlab.config import ExperimentConfig
from lstmlab.errors import ConfigError, UserError
from lstmlab.run.folder import CONFIG, RunFolder, as_text, flatten, run_name

POOLED = ("experiment", "train.seed")  # may differ between the runs of one experiment
SAMPLE = 200  # run configs read at most (~2 ms to 10 ms each): a study of 100,000 runs is checked in seconds


def differences(cfg: ExperimentConfig, runs_dir: str | Path, restart: bool = False
                ) -> tuple[dict[str, tuple[Any, Any]], int]:
    """({key: (the folder's value, this config's value)}, how many runs the folder holds that stay)."""
    folder = Path(runs_dir) / cfg.experiment
    replaced = {run_name(point, tuple(cfg.sweep)) for point in cfg.runs()} if restart else set()
    configs = [c for c in sorted(folder.glob(f"*/{CONFIG}")) if c.parent.name not in replaced] \
        if folder.is_dir() else []
    total = len(configs)
    if total > SAMPLE:  # spread over the folder: a folder of one config has it in every run
        configs = [configs[i * len(configs) // SAMPLE] for i in range(SAMPLE)]
    existing = []
    for config in configs:
        try:
            existing.append(flatten(RunFolder(config.parent).config()))
        except UserError:  # an unreadable run folder: training that run says what is wrong with it
            continue
    if not existing:
        return {}, total
    new = flatten({k: v for k, v in cfg.model_dump(mode="json").items() if k != "sweep"})
    free = set(POOLED) | set(cfg.sweep)
    if new.get("model.param_budget") is not None:
        free.add("model.hidden_size")
    found = {}
    for key, value in new.items():
        if key in free:
            continue
        theirs = [run[key] for run in existing if key in run]
        if theirs and all(v == theirs[0] for v in theirs) and theirs[0] != value:
            found[key] = (theirs[0], value)
    return found, total


def check_experiment(cfg: ExperimentConfig, runs_dir: str | Path, allow_mixed: bool = False,
                     restart: bool = False) -> None:
    """ConfigError when the experiment folder holds runs whose config differs from `cfg` in keys that are not
    sweep axes (see the module docstring), naming the keys, both values and the ways out."""
    if allow_mixed:
        return
    found, n = differences(cfg, runs_dir, restart)
    if not found:
        return
    keys = ", ".join(f"{key} ({as_text(old)} there, {as_text(new)} here)" for key, (old, new) in found.items())
    suffix = "-".join(f"{key.split('.')[-1]}{as_text(new)}" for key, (_, new) in found.items())
    suggestion = re.sub(r"[^A-Za-z0-9._-]", "_", f"{cfg.experiment}-{suffix}")[:100]
    raise ConfigError(
        f"{Path(runs_dir) / cfg.experiment} holds {n} run(s) of another config: they differ from this one in "
        f"{keys}, {'not a sweep axis' if len(found) == 1 else 'not sweep axes'}. A changed key (--set) makes "
        "other runs, not the same ones again, and an experiment folder keeps one config (apart from its sweep "
        "axes) so that compare pools like with like. Nothing was trained. Give the new runs an experiment of "
        f"their own (--set experiment={suggestion}), another --runs-dir, or pass --allow-mixed-configs to add "
        "them to this folder anyway" + (
            "; to train the runs there on to more steps instead, pass --extend"
            if set(found) == {"train.steps"} and _larger(*found["train.steps"]) else ""))


def _larger(old: Any, new: Any) -> bool:
    return isinstance(old, int) and isinstance(new, int) and new > old
