"""Study benchmark: the wall time of a whole small study, packed against one run per process.

`lstmlab bench --study CONFIG [--jobs N]` trains every run of CONFIG's sweep three ways, from scratch,
in fresh run folders under a temporary directory:

    packed            --pack auto (or --pack K, several)  the packs of lstmlab.run.packing, in one process
    packed --jobs N   the same in N worker processes      (auto sizes the packs to keep N workers busy)
    unpacked          --pack 1 --jobs N                   one run per worker process, N at a time
    lstm unpacked     --pack 1 --jobs N, model.type=lstm  torch.nn.LSTM at the same parameter budget

The three are timed in interleaved rounds (packed, unpacked, lstm; packed, unpacked, lstm; ...) in one
process, so a machine that slows down or speeds up mid-run shifts them alike; each variant's figure is
the median over rounds. Datasets are generated and the C++ loop is built before the first round, so
neither is timed. Every timed run must complete, or the benchmark stops with the run's error.
Reported: wall seconds, runs per minute, and each variant's time over the unpacked one.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lstmlab.config import ExperimentConfig, validate


@dataclass(frozen=True)
class Variant:
    name: str
    pack: int | str  # a pack size, or "auto"
    jobs: int
    model_type: str | None = None  # None: the config's own


def variants(packs: list[int | str], jobs: int) -> list[Variant]:
    """Packed at each pack size, in one process and (jobs > 1) in `jobs`; then unpacked and lstm unpacked."""
    packed = []
    for pack in packs:
        for n in sorted({1, jobs}):
            name = "packed" + (f" {pack}" if len(packs) > 1 else "") + (f" --jobs {n}" if n > 1 else "")
            packed.append(Variant(name, pack, n))
    return [*packed, Variant("unpacked", 1, jobs), Variant("lstm unpacked", 1, jobs, "lstm")]


def with_model_type(cfg: ExperimentConfig, model_type: str | None) -> ExperimentConfig:
    if model_type is None:
        return cfg
    raw = cfg.model_dump(mode="json")
    raw["model"]["type"] = model_type
    raw["sweep"].pop("model.type", None)
    return validate(raw, source=f"study with model.type={model_type}")


def warm_up(cfg: ExperimentConfig, data_dir: str | Path) -> None:
    """Generate the study's datasets and get its kernel ready (the C++ loop built), so that neither is timed."""
    import torch

    from lstmlab import kernels
    from lstmlab.run.env import pick_device
    from lstmlab.run.sweep import generate_datasets
    from lstmlab.run.train import pick_backend

    points = list(cfg.runs())
    generate_datasets(points, data_dir, log=lambda _: None)
    first = points[0]
    if first.model.type == "scratch-lstm":
        device = pick_device(first.train.device)
        kernels.prepare(pick_backend(first, device), device, getattr(torch, first.train.dtype))


def bench_study(
    cfg: ExperimentConfig,
    *,
    data_dir: str | Path,
    jobs: int = 2,
    packs: list[int | str] | None = None,
    reps: int = 1,
    log: Callable[[str], None] = lambda _: None,
    work_dir: str | Path | None = None,
) -> list[dict]:
    """Time CONFIG's whole study per variant; one row per variant (see the module docstring). The run
    folders go to a temporary folder (under `work_dir` if given), removed afterwards.

    Row keys: variant, model_type, pack, jobs, runs, wall_s (median), times_s, runs_per_min, vs_unpacked.
    """
    from lstmlab.run.sweep import run_sweep

    if reps < 1:
        raise ValueError("reps must be at least 1")
    chosen = variants(list(packs or ["auto"]), jobs)
    studies = {v.name: with_model_type(cfg, v.model_type) for v in chosen}
    for study in studies.values():
        warm_up(study, data_dir)
    times: dict[str, list[float]] = {name: [] for name in studies}
    runs: dict[str, int] = {}
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lstmlab-bench-study-", dir=work_dir))
    try:
        for round_ in range(reps):
            for variant in chosen:
                runs_dir = work / f"{round_}-{variant.name.replace(' ', '-')}"
                start = time.perf_counter()
                outcomes = run_sweep(studies[variant.name], runs_dir=runs_dir, data_dir=data_dir, quiet=True,
                                     jobs=variant.jobs, pack=variant.pack, log=lambda _: None)
                seconds = time.perf_counter() - start
                unfinished = [o for o in outcomes if o.status != "completed"]
                if unfinished:
                    first = unfinished[0]
                    raise RuntimeError(f"study benchmark, {variant.name}: run {first.name} {first.status}"
                                       f"{': ' + first.detail if first.detail else ''}")
                times[variant.name].append(seconds)
                runs[variant.name] = len(outcomes)
                log(f"round {round_ + 1}/{reps}: {variant.name}: {len(outcomes)} runs in {seconds:.1f} s")
                shutil.rmtree(runs_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for variant in chosen:
        wall = statistics.median(times[variant.name])
        rows.append({
            "variant": variant.name, "model_type": studies[variant.name].model.type, "pack": variant.pack,
            "jobs": variant.jobs, "runs": runs[variant.name], "wall_s": wall, "times_s": times[variant.name],
            "runs_per_min": runs[variant.name] / wall * 60,
        })  # fmt: skip
    unpacked = next(r["wall_s"] for r in rows if r["variant"] == "unpacked")
    for row in rows:
        row["vs_unpacked"] = row["wall_s"] / unpacked
    return rows


def render_study(rows: list[dict]):
    """The rows as a rich Table."""
    from rich.table import Table

    table = Table(title="Study benchmark (median wall time over rounds; × unpacked: this time / unpacked's)")
    for column in ("variant", "model.type", "pack", "jobs", "runs", "wall s", "runs/min", "× unpacked"):
        table.add_column(column, justify="left" if column in ("variant", "model.type") else "right")
    for row in rows:
        table.add_row(row["variant"], row["model_type"], str(row["pack"]), str(row["jobs"]), str(row["runs"]),
                      f"{row['wall_s']:.1f}", f"{row['runs_per_min']:.1f}", f"{row['vs_unpacked']:.2f}")
    return table
