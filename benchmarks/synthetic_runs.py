"""Write many realistic run folders, for timing `lstmlab compare` at scale (no training involved).

    python benchmarks/synthetic_runs.py OUT [--runs 10000] [--evals 12]
    lstmlab compare OUT --tune train.lr --format json > /dev/null

Each folder holds what `lstmlab train` writes for a completed run of the adding problem: the resolved
config.yaml (every key, as `ExperimentConfig.dump_yaml` writes it), summary.json (best validation and
test metrics, baselines, solve threshold) and metrics.csv (a train and a val row per evaluation, then the
test row). The study is a depth study with a learning-rate grid: layers 1-4 × lr {1e-3, 3e-3, 1e-2,
3e-2, 1e-1} × as many seeds as --runs asks for. Outcomes are bimodal like the real adding problem: a
run solves it (test MSE near 2e-4) with a probability that depends on depth and learning rate, or stays
near the 1/6 baseline. The same arguments always write the same files (one seeded generator).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import yaml

from lstmlab.run.convergence import converged

LAYERS = (1, 2, 3, 4)
LRS = (0.001, 0.003, 0.01, 0.03, 0.1)
HIDDEN = {1: 69, 2: 40, 3: 31, 4: 26}  # a 20k parameter budget
BASELINE = 0.1641
THRESHOLD = 0.01 / 6  # the adding task's solve threshold: 1% of its analytic baseline 1/6
COLUMNS = "step,epoch,split,loss,mse,lr,grad_norm,elapsed_s,seq_per_s"


def config(layers: int, lr: float, seed: int) -> dict:
    return {
        "experiment": "synthetic",
        "task": {"name": "adding", "n_train": 10000, "n_val": 1000, "n_test": 1000, "seed": 1234, "seq_len": 50,
                 "placement": "halves"},
        "model": {"type": "lstm", "layers": layers, "hidden_size": HIDDEN[layers], "param_budget": 20000,
                  "backend": "auto", "dropout": 0.0, "forget_bias": None, "nonlinearity": "tanh",
                  "embedding_dim": None, "tie_weights": False},
        "train": {"seed": seed, "device": "auto", "dtype": "float32", "precision": "fp32", "threads": None,
                  "steps": 3000, "batch_size": 64, "eval_every": 250, "eval_batch_size": 512, "optimizer": "adam",
                  "lr": lr, "weight_decay": 0.0, "momentum": 0.9, "grad_clip": 1.0, "schedule": "constant",
                  "warmup_steps": 0, "min_lr_ratio": 0.0, "plateau_factor": 0.5, "plateau_patience": 2,
                  "early_stop_patience": None},
        "sweep": {},
    }


def outcome(rng: random.Random, layers: int, lr: float) -> float:
    """Test MSE: solved (near 2e-4) or stuck near the baseline; best at lr 3e-3 and 2 layers."""
    p_solve = max(0.05, 0.9 - 0.25 * abs(math.log10(lr / 0.003)) - 0.1 * abs(layers - 2))
    if rng.random() < p_solve:
        return 2e-4 * math.exp(rng.gauss(0, 0.4))
    return BASELINE * (1 - abs(rng.gauss(0, 0.05)))


def write_run(root: Path, rng: random.Random, layers: int, lr: float, seed: int, evals: int) -> None:
    name = f"L{layers}-lstm-lr{lr:g}-s{seed}"
    path = root / "synthetic" / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config(layers, lr, seed), sort_keys=False))
    test = outcome(rng, layers, lr)
    rows, best, curve = [], math.inf, []
    for i in range(1, evals + 1):
        step = 250 * i
        # the validation curve falls from the baseline to the final value
        val = test * (1 + 0.05 * rng.gauss(0, 1)) + (BASELINE - test) * math.exp(-4 * i / evals)
        best = min(best, val)
        curve.append((step, val))
        common = f"{step},{step * 64 / 10000},{{split}},{{v!r}},{{v!r}},{lr},{rng.uniform(0.1, 2)!r},{1.1 * step!r},"
        rows.append(common.format(split="train", v=val * 1.02) + f"{rng.uniform(2000, 3000)!r}")
        rows.append(common.format(split="val", v=val) + f"{rng.uniform(2000, 3000)!r}")
    rows.append(f"{250 * evals},{250 * evals * 64 / 10000},test,{test!r},{test!r},{lr},,{1.1 * 250 * evals!r},")
    (path / "metrics.csv").write_text(COLUMNS + "\n" + "\n".join(rows) + "\n")
    summary = {
        "format": 2, "status": "completed", "experiment": "synthetic", "run": name, "task": "adding",
        "model_type": "lstm", "layers": layers, "hidden_size": HIDDEN[layers], "params": 20218, "metric": "mse",
        "higher_is_better": False, "baseline": BASELINE, "baselines": {"analytic": 1 / 6, "trivial": BASELINE},
        "solve_threshold": THRESHOLD, "dataset": "adding-0123456789", "device": "cpu", "backend": "torch.nn",
        "steps": 3000, "step": 3000, "best_step": 3000, "best_val": {"loss": best, "mse": best},
        "final_val": {"loss": best, "mse": best}, "test": {"loss": test, "mse": test}, "test_metric": test,
        "solved": test <= THRESHOLD, "wall_s": rng.uniform(100, 300),
        "converged": converged(curve, higher_is_better=False),  # as train writes it (lstmlab.run.convergence)
    }
    (path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write <out>/synthetic/<run>/ into")
    parser.add_argument("--runs", type=int, default=10_000, help="number of run folders (default 10000)")
    parser.add_argument("--evals", type=int, default=12, help="evaluations per run in metrics.csv (default 12)")
    args = parser.parse_args()
    rng = random.Random(0)
    points = [(layers, lr) for layers in LAYERS for lr in LRS]
    for i in range(args.runs):
        layers, lr = points[i % len(points)]
        write_run(args.out, rng, layers, lr, seed=i // len(points), evals=args.evals)
    print(f"wrote {args.runs} run folders under {args.out / 'synthetic'}")


if __name__ == "__main__":
    main()
