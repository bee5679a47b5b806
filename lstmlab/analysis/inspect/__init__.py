"""Inside a trained run: how much gradient reaches each time step, and how saturated the gates are.

    inspect_run(path)              -> one run's object (its best weights, or its latest checkpoint)
    inspect_runs(paths, by=...)    -> runs grouped by config keys, each group summarised

The gradient flow comes from `lstmlab.models.gradflow.trace` (per-step forward, hand-written backward through
time, float64 on copies of the run's weights). What the numbers are:

- `grad_h[t]` for each layer: the mean over the batch's sequences b of ‖∂(B·L)/∂h_{t,b}‖₂, where L is the
  task's training loss on the batch (a mean over its B sequences) and ∂/∂h_t is the *total* derivative:
  every path from h_t to the loss (the head, the layer above, and step t+1). Scaling by B makes it the
  gradient of sequence b's own loss, so the numbers do not depend on the batch size. `grad_c[t]` (LSTM)
  and `grad_x[t]` (the first layer's input x_t, the embedding vector for token tasks) likewise.
- `grad_h_first_to_last` = grad_h[first step] / grad_h[last step]: how much of the gradient reaches the start.
- gates, per layer over every step and sequence of the batch: `mean`, `saturated` (the fraction with
  σ < 0.05 or σ > 0.95 for sigmoid gates — LSTM i, f, o; GRU r, z — and |tanh| > 0.95 for LSTM g and
  GRU n), `quantiles` and a `histogram`. An RNN has no gates: its layers report the saturation of h
  itself (`activation`: |h| > 0.95 for tanh, h = 0 for relu).
- `c_abs_mean[t]` (LSTM) and `h_abs_mean[t]`: the mean |c_t| and |h_t| over sequences and units.

Steps are positions in the batch's arrays: for left-padded tasks (temporal order) the first steps of
shorter sequences are padding. Nothing is written: a run folder is only read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lstmlab.errors import UserError
from lstmlab.models.gradflow import first_to_last, summarize
from lstmlab.run.folder import find_runs
from lstmlab.run.reader import (
    DEFAULT_BY,
    DEFAULT_DATA_DIR,
    RunView,
    dotted,
    find_data_dir,
    flat_config,
    hashable,
    open_run,
)

SPLIT, BATCH = "val", 256  # defaults: the first 256 sequences of the validation split
WEIGHTS = ("auto", "best", "latest")  # of lstmlab.run.reader's: auto is best for a completed run, else latest


# -- one run folder ------------------------------------------------------------------------------------


def inspect_run(path: str | Path, *, split: str = SPLIT, batch: int = BATCH, weights: str = "auto",
                data_dir: str | Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The gradient flow and gates of a run folder on the first `batch` sequences of `split`.

    weights="auto" uses the run's best-by-validation weights when it completed, else its latest checkpoint
    (a run still training, interrupted or failed); "best" and "latest" ask for one of them (the best so
    far, or the last weights a completed run trained to). `weights` in the result says which, and from
    which step. `data_dir` None: the data dir the run was trained from (its env.json), else ./data.
    """
    import torch

    from lstmlab.models.gradflow import trace
    from lstmlab.models.sequence import LSTM_TYPES
    from lstmlab.tasks import make_task
    from lstmlab.tasks.datasets import load as load_dataset

    check_options(split, batch, weights)
    run = open_run(path)
    cfg = run.resolved()
    run.weights(weights)  # a missing or unreadable checkpoint.pt or summary.json: refused before the data loads
    if data_dir is None:
        try:
            data_dir = find_data_dir(run, cfg.task, None)
        except UserError:  # in none of the places looked in: made in ./data, from its config (deterministic)
            data_dir = DEFAULT_DATA_DIR
    dataset = load_dataset(cfg.task, data_dir, log=log)
    model_cfg = cfg.model
    if model_cfg.type in LSTM_TYPES:  # torch.nn.LSTM's state_dict loads into the scratch LSTM: same keys
        model_cfg = model_cfg.model_copy(update={"type": "scratch-lstm", "backend": "reference"})
    model, used = run.load_model(weights, spec=dataset.spec, model=model_cfg)
    arrays = dataset.splits[split]
    n = min(batch, len(arrays["inputs"]))
    tensors = {k: torch.from_numpy(v[:n]) for k, v in arrays.items()}
    result = trace(model, tensors["inputs"], tensors, make_task(cfg.task).loss)
    return {
        "run": run.name,
        "path": str(run.path),
        "task": cfg.task.name,
        "model_type": cfg.model.type,
        "core": result.kind,
        "num_layers": cfg.model.layers,
        "hidden_size": cfg.model.hidden_size,
        "weights": used,
        "split": split,
        "batch": n,
        "seq_len": result.x.shape[0],
        "norm": "mean over sequences b of ||d(B*L)/d(.)_{t,b}||_2, L the batch-mean training loss",
        **summarize(result),
    }


def check_options(split: str, batch: int, weights: str = "auto") -> None:
    from lstmlab.tasks import SPLITS

    if weights not in WEIGHTS:
        raise UserError(f"--weights: unknown choice {weights!r}; valid: {', '.join(WEIGHTS)}")
    if split not in SPLITS:
        raise UserError(f"--split: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if batch < 1:
        raise UserError(f"--batch: must be at least 1 sequence (got {batch})")


# -- folders of runs, grouped ---------------------------------------------------------------------------


def inspect_runs(paths: list[str | Path], *, by: tuple[str, ...] = DEFAULT_BY, split: str = SPLIT,
                 batch: int = BATCH, weights: str = "auto", data_dir: str | Path | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every run folder at or below `paths`, grouped by the dotted config keys `by`.

    {"by": [...], "split": ..., "batch": ..., "groups": [{"key": {KEY: value}, "n": runs, "runs": [run
    objects], "layers": [...], "grad_x": [...]}], "skipped": [{"path": ..., "reason": ...}]}: a group's
    `layers` and `grad_x` are its runs' curves combined step by step (geometric mean of the gradient
    norms, mean of the gate statistics), so groups plot and read like runs.
    """
    from lstmlab.analysis.compare import check_keys, mixed_keys, order, pooling_warning

    check_options(split, batch, weights)
    by = tuple(by) or DEFAULT_BY
    folders = find_runs(list(paths))
    if not folders:
        raise UserError(f"no run folders under {', '.join(map(str, paths))}: a run folder holds a config.yaml")
    configs: dict[Path, dict] = {}
    skipped: list[dict[str, str]] = []
    for folder in folders:
        try:
            configs[folder.path] = RunView(folder.path).resolved().model_dump(mode="json")
        except UserError as e:
            skipped.append({"path": str(folder.path), "reason": str(e)})
    check_keys(by, list(configs.values()))  # a --by key no run has: exit 2 with the valid keys

    grouped: dict[tuple, list[dict]] = {}
    flats: dict[tuple, list[dict]] = {}  # each group's configs, for compare's warning on pooled configs
    for path, config in configs.items():
        found = [dotted(config, k) for k in by]
        if not all(ok for ok, _ in found):
            skipped.append({"path": str(path), "reason": f"config has no {', '.join(by)}"})
            continue
        try:
            run = inspect_run(path, split=split, batch=batch, weights=weights, data_dir=data_dir, log=log)
        except UserError as e:
            skipped.append({"path": str(path), "reason": str(e)})
            continue
        grouped.setdefault(tuple(hashable(value) for _, value in found), []).append(run)
        flats.setdefault(tuple(hashable(value) for _, value in found), []).append(flat_config(config))
    groups = []
    for key in sorted(grouped, key=lambda k: tuple(order(v) for v in k)):
        runs = grouped[key]
        groups.append({"key": dict(zip(by, key, strict=True)), "n": len(runs), **combine(runs), "runs": runs})
    skipped.sort(key=lambda s: s["path"])
    warning = pooling_warning(sorted({k for group in flats.values() for k in mixed_keys(group)}), tuple(by))
    if warning:
        log(warning)
    return {"by": list(by), "split": split, "batch": batch, "groups": groups, "skipped": skipped,
            "warnings": [warning] if warning else []}


def combine(runs: list[dict]) -> dict[str, Any]:
    """A group's curves: per layer index and step, the geometric mean of its runs' gradient norms (gradients
    span decades: the arithmetic mean would be the largest run's), and the mean of the gate statistics."""
    lengths = {run["seq_len"] for run in runs}
    if len(lengths) > 1:
        return {"layers": [], "grad_x": None, "note": f"sequence lengths differ ({sorted(lengths)}): not combined"}
    layers = []
    for index in range(max(len(run["layers"]) for run in runs)):
        members = [run["layers"][index] for run in runs if len(run["layers"]) > index]
        gates = {}
        for name in dict.fromkeys(name for m in members for name in m["gates"]):  # every gate, in order
            stats = [m["gates"][name] for m in members if name in m["gates"]]
            gates[name] = {
                "mean": _mean([s["mean"] for s in stats]),
                "saturated": _mean([s["saturated"] for s in stats]),
                "histogram": {"edges": stats[0]["histogram"]["edges"], "fraction": [
                    _mean(f) for f in zip(*(s["histogram"]["fraction"] for s in stats), strict=True)]},
            }
        grad_h, grad_c = _geometric([m["grad_h"] for m in members]), _geometric([m["grad_c"] for m in members])
        layers.append({
            "layer": index, "n": len(members), "grad_h": grad_h, "grad_c": grad_c,
            "grad_h_first_to_last": first_to_last(grad_h),
            "grad_c_first_to_last": first_to_last(grad_c) if grad_c is not None else None,
            "gates": gates,
        })
    grad_x = _geometric([run["grad_x"] for run in runs])
    combined = {"layers": layers, "grad_x": grad_x, "grad_x_first_to_last": first_to_last(grad_x)}
    cores = sorted({run["core"] for run in runs})
    if len(cores) > 1:
        combined["note"] = f"the group mixes {' and '.join(cores)} runs; add --by model.type to separate them"
    return combined


def _geometric(curves: list[list[float] | None]) -> list[float] | None:
    """Step-by-step geometric mean of curves of equal length; None when any curve is None (no cell state)."""
    if any(c is None for c in curves):
        return None
    return [0.0 if min(vs) <= 0 else math.exp(sum(map(math.log, vs)) / len(vs)) for vs in zip(*curves, strict=True)]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)
