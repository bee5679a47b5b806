"""Continue a completed run to a longer budget in its own folder (successive halving's next rung).

`train.steps` is part of a run's config, and a run folder holds one config: a folder trained to 500 steps
refuses a config of 2000. Halving wants the opposite: the run that reached the first rung goes on from its
checkpoint. `continue_run` turns such a folder into an unfinished run of the longer config, which the sweep
then resumes like any interrupted run:

    completed at b steps, config C(b)   ->   interrupted at step b, config C(T), checkpoint stamped for C(T)

Only `train.steps` may differ, and only upward. The checkpoint a completed run keeps is its last step's (every
evaluation saves one, and the last step is evaluated), so the run goes on exactly where it stopped; its test
row is dropped (a resumed run's test row was never committed) and written again when it completes. A run whose
learning rate depends on the budget (schedule cosine) would not be the same run as one trained straight to T;
check_schedule refuses that schedule
(`train --halving` and `train --extend` call it). Each step can be redone: killed half-way, the folder is
still either completed at b or continuable, and `continue_run` finishes the job the next time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lstmlab.config import ExperimentConfig
from lstmlab.errors import ConfigError, UserError
from lstmlab.run.folder import RunBusy, RunFolder, run_name


def check_schedule(cfg: ExperimentConfig, flag: str) -> None:
    """ConfigError, naming `flag`, when the learning rate depends on train.steps: such a run stopped at fewer
    steps is not the longer run's first part, so it cannot be continued into it."""
    if cfg.train.schedule == "cosine":
        raise ConfigError(f"{flag}: train.schedule cosine decays over train.steps, so a run trained to fewer steps "
                          "cannot go on as the longer run; use constant or plateau")


def continuable(run: RunFolder, config: dict[str, Any]) -> int | None:
    """The train.steps of a completed or failed (or half-continued) run of `config` at a smaller train.steps,
    with a checkpoint to go on from; else None."""
    try:
        saved = run.config()
        summary = run.summary() or {}
    except UserError:
        return None
    steps = config.get("train", {}).get("steps")
    saved_steps = saved.get("train", {}).get("steps") if isinstance(saved.get("train"), dict) else None
    if not isinstance(saved_steps, int) or not isinstance(steps, int) or saved_steps >= steps:
        return None
    if saved != {**config, "train": {**config["train"], "steps": saved_steps}}:
        return None
    # a failed run continues too (from its last checkpoint it fails again, as the straight run would)
    if summary.get("status") not in ("completed", "failed") and summary.get("continued_from") != saved_steps:
        return None
    return saved_steps if run.has_checkpoint() else None


def continue_run(run: RunFolder, cfg: ExperimentConfig) -> int | None:
    """Make the completed (or failed) shorter run in `run` an interrupted run of `cfg` (a resolved config); returns the
    step it goes on from, or None when the folder holds no such run (the sweep then says what it holds)."""
    config = cfg.model_dump(mode="json")
    with run.lock():
        if continuable(run, config) is None:
            return None
        state = run.load_checkpoint()  # stamped for the shorter config, which continuable() just checked
        state.pop("config_sha256", None)
        summary = run.summary() or {}
        summary.update({"status": "interrupted", "step": state["step"], "steps": cfg.train.steps,
                        "continued_from": summary.get("continued_from", run.config()["train"]["steps"]),
                        "signal": None})
        for stale in ("test", "test_metric", "solved", "final_val"):
            summary.pop(stale, None)
        run.write_summary(summary)  # first: from here on the folder is not a completed run
        run.truncate_metrics(state["step"])  # its test row goes; it is written again at the new end
        run.save_checkpoint(state, config=config)
        run.write_config(cfg.dump_yaml())  # last: the folder now holds the longer run, to be resumed
    return int(state["step"])


def continue_shorter(points: list[ExperimentConfig], swept_keys: tuple[str, ...], runs_dir: str | Path,
                     data_dir: str | Path, log: Callable[[str], None] = print) -> int:
    """continue_run for every point whose folder holds a completed shorter run of it (datasets generated);
    returns how many were continued."""
    from lstmlab.models.sequence import resolve_hidden_size
    from lstmlab.run.sweep import dataset_spec, generate_datasets

    generate_datasets(points, data_dir, log)
    continued = 0
    for point in points:
        run = RunFolder(Path(runs_dir) / point.experiment / run_name(point, swept_keys))
        if not run.exists():
            continue
        resolved = point.model_copy(update={"model": resolve_hidden_size(point.model,
                                                                         dataset_spec(point.task, Path(data_dir)))})
        try:
            step = continue_run(run, resolved)
        except RunBusy:  # being trained elsewhere: the sweep lists it as busy
            continue
        if step is not None:
            log(f"{run.path.name}: continues from step {step} to {point.train.steps}")
            continued += 1
    return continued
