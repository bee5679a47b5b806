"""Forecasting the Mackey–Glass chaotic series (Mackey & Glass 1977; τ = 17, as in Gers et al. 2001).

The series solves the delay differential equation

    dx/dt = β x(t − τ) / (1 + x(t − τ)^n) − γ x(t),     β = 0.2, γ = 0.1, n = 10, τ = `tau` (17)

integrated by classical 4th-order Runge–Kutta with a fixed step dt = 0.1: the delayed term at t and
t + dt comes from the stored history, and at the half step t + dt/2 from the mean of those two (linear
interpolation). The history on [−τ, 0] is constant, x0 drawn from U[0.5, 1.5] by the task seed; the
first 1000 time units are discarded as transient, then the series is sampled every `sample_every` time
units and cut into three contiguous segments, train then val then test. Values are normalised by the
train segment's mean and standard deviation (recorded in `info`), so every split is on the same scale.

Windows slide by one sample inside a segment: the inputs are `seq_len` consecutive values (N, T, 1) and
the target, read at the last step, the `horizon` values after them (N, horizon). One example, seq_len = 4,
horizon = 2 (normalised values):

    inputs   0.91  1.02  1.10  1.15
    targets  1.17  1.16

Baselines: "trivial" is persistence — predict the last input value for every horizon step — whose MSE
is small at short horizons because the series is smooth; "variance" predicts the train mean (0), whose
MSE is about the series variance, 1. Solved: test MSE below 1% of persistence's (see `solve_threshold`).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from lstmlab.tasks.base import Splits, Task, TaskConfig, TaskSpec

BETA, GAMMA, POWER = 0.2, 0.1, 10
DT = 0.1  # integration step (time units)
STEPS_PER_UNIT = 10  # 1 / DT
TRANSIENT = 1000  # time units discarded before sampling


def mackey_glass(n_units: int, tau: int, x0: float) -> np.ndarray:
    """x(t) at t = 0, dt, 2 dt, ... for `n_units` time units (RK4, dt = 0.1, constant history x0)."""
    lag = tau * STEPS_PER_UNIT
    n = n_units * STEPS_PER_UNIT
    x = np.empty(lag + n + 1)
    x[: lag + 1] = x0  # history on [-tau, 0]

    def f(x_now: float, x_lag: float) -> float:
        return BETA * x_lag / (1.0 + x_lag**POWER) - GAMMA * x_now

    for i in range(lag, lag + n):  # x[i] is x(t), x[i - lag] is x(t - tau)
        lag0, lag1 = x[i - lag], x[i - lag + 1]
        lag_half = 0.5 * (lag0 + lag1)
        xi = x[i]
        k1 = f(xi, lag0)
        k2 = f(xi + 0.5 * DT * k1, lag_half)
        k3 = f(xi + 0.5 * DT * k2, lag_half)
        k4 = f(xi + DT * k3, lag1)
        x[i + 1] = xi + DT / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x[lag:]


class MackeyGlassConfig(TaskConfig):
    name: Literal["mackey-glass"] = "mackey-glass"
    seq_len: int = Field(50, ge=1, description="Input window: past samples the model reads (T).")
    horizon: int = Field(1, ge=1, le=1000, description="Future samples to predict after each window.")
    sample_every: int = Field(1, ge=1, le=100, description="Time units between samples (integration step is 0.1).")
    tau: int = Field(17, ge=1, le=200, description="Delay τ of the equation (17: mildly chaotic; 30: more).")


class MackeyGlassTask(Task):
    name = "mackey-glass"
    Config = MackeyGlassConfig
    metric = "mse"
    higher_is_better = False
    loss_kind = "mse"

    cfg: MackeyGlassConfig

    def generate(self) -> tuple[Splits, dict[str, Any]]:
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        x0 = float(rng.uniform(0.5, 1.5))
        span = cfg.seq_len + cfg.horizon - 1  # samples per window beyond its first
        lengths = {split: n + span for split, n in cfg.sizes().items()}
        n_samples = sum(lengths.values())
        series = mackey_glass(TRANSIENT + n_samples * cfg.sample_every, cfg.tau, x0)
        samples = series[TRANSIENT * STEPS_PER_UNIT :: cfg.sample_every * STEPS_PER_UNIT][:n_samples]
        cuts = np.cumsum([0] + [lengths[s] for s in ("train", "val", "test")])
        segments = {s: samples[cuts[i] : cuts[i + 1]] for i, s in enumerate(("train", "val", "test"))}
        mean, std = float(segments["train"].mean()), float(segments["train"].std())
        splits = {s: self._windows((seg - mean) / std) for s, seg in segments.items()}
        info = {"x0": x0, "mean": mean, "std": std, "dt": DT, "transient": TRANSIENT, "integrator": "rk4"}
        return splits, info

    def _windows(self, segment: np.ndarray) -> dict[str, np.ndarray]:
        T, H = self.cfg.seq_len, self.cfg.horizon
        n = len(segment) - T - H + 1
        starts = np.arange(n)[:, None]
        inputs = segment[starts + np.arange(T)[None, :]][..., None].astype(np.float32)  # (N, T, 1)
        targets = segment[starts + T + np.arange(H)[None, :]].astype(np.float32)  # (N, H)
        return {"inputs": inputs, "targets": targets}

    def spec(self, info: dict[str, Any]) -> TaskSpec:
        return TaskSpec(input_kind="real", input_size=1, output_size=self.cfg.horizon, readout="last")

    def baselines(self, splits: Splits, info: dict[str, Any]) -> dict[str, float]:
        test = splits["test"]
        targets = test["targets"].astype(np.float64)
        last = test["inputs"][:, -1, :].astype(np.float64)  # (N, 1), broadcast over the horizon
        return {
            "trivial": float(np.mean((targets - last) ** 2)),  # persistence
            "variance": float(np.mean(targets**2)),  # predict the train mean, 0 after normalising
        }

    def solve_threshold(self, baselines: dict[str, float]) -> float:
        return 0.01 * baselines["trivial"]
