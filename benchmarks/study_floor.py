"""Where a training step's time goes at a study's sizes, and how far packing alone can take a study.

    python benchmarks/study_floor.py CONFIG [--pack K] [--steps N] [--set KEY=VALUE ...]

For each model.layers value of CONFIG's sweep it trains a pack of K seeds and three of those seeds alone, with
their own steps and evaluations as the study runs them, on the CPU with one thread (as each worker of
`--jobs 2` does), the C++ layer loops timed. Per member step it prints the whole step, the part inside the
layer loops and the rest, and the loops' rate in GFLOP/s against this core's large-GEMM rate (torch.mm,
2048², one thread). Then, for the study (the depths weighted
alike, as a sweep over seeds weights them):

- packed / alone: what `lstmlab bench --study` measures end to end, here from the steps alone;
- zero-overhead floor = loops / alone: a pack whose members cost nothing but their own layer loops, the one
  part of a step that packing cannot share;
- the loop rate a target ratio R needs: a packed member step costs L + o_p against L + o_a alone (L the loops,
  o_p and o_a the rest of a step packed and alone; the loops cost what they cost alone), so R needs
  L <= (R o_a - o_p) / (1 - R), the loops at F / L GFLOP/s; no loop speed reaches R while o_p >= R o_a. Printed
  for the rest as it is today and as if it were cut to 0.2, 0.1 or none of an alone step's rest.

FLOPs of one member step, layer l with I inputs and H units, T steps of B sequences: forward 2TB·4H(I + H)
(input projection and recurrent GEMM); backward 2TB·4H(I + H) (dW_ih, dW_hh), 2(T-1)B·4H·H (dh_{t-1}; h_0 needs
no gradient) and, above the first layer, 2TB·4H·I (dx) — the GEMMs autograd runs through the reference layer.
Pointwise work (σ, tanh) is not counted: the rates are GEMM-equivalent rates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch

from lstmlab.config import load_config
from lstmlab.kernels import fused
from lstmlab.run.train import train_pack

LOOP_SECONDS: dict[str, float] = defaultdict(float)


def time_the_loops() -> None:
    """Add the wall time of every C++ layer loop call (forward, backward) to LOOP_SECONDS["loops"]."""

    def timed(method):
        def wrapper(*args, **kwargs):
            tic = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                LOOP_SECONDS["loops"] += time.perf_counter() - tic

        return wrapper

    fused.CppLoops.forward = timed(fused.CppLoops.forward)
    fused.CppLoops.backward = timed(fused.CppLoops.backward)


def gemm_rate() -> float:
    """GFLOP/s of a large float32 torch.mm on one thread: this core's practical peak."""
    n = 2048
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    times = []
    for _ in range(7):
        tic = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - tic)
    return 2 * n**3 / statistics.median(times[2:]) / 1e9


def step_flops(weights: dict[str, torch.Tensor], seq_len: int, batch: int) -> float:
    """GEMM FLOPs of one training step of an LSTM's layers, from the shapes of its weight_ih_l*, weight_hh_l*
    (a state dict's keys, with or without a prefix such as a SequenceModel's "core.")."""
    shapes = {key.rsplit(".", 1)[-1]: tuple(value.shape) for key, value in weights.items()}
    flops, layer = 0.0, 0
    while f"weight_ih_l{layer}" in shapes:
        gates, fan_in = shapes[f"weight_ih_l{layer}"]  # (4H, I)
        hidden = shapes[f"weight_hh_l{layer}"][1]
        per_column = 2 * seq_len * batch * gates
        flops += per_column * (fan_in + hidden)  # forward: x_t W_ihᵀ + h_{t-1} W_hhᵀ
        flops += per_column * (fan_in + hidden)  # backward: dW_ih, dW_hh
        flops += per_column * hidden * (seq_len - 1) / seq_len  # dh_{t-1}, t ≥ 1 (h_0 needs none)
        flops += per_column * fan_in if layer else 0  # dx, above the first layer
        layer += 1
    return flops


def timed_train(points, runs_dir: Path, data_dir: Path) -> tuple[float, float]:
    """(wall seconds, seconds in the layer loops) of training `points` as one pack."""
    LOOP_SECONDS.clear()
    tic = time.perf_counter()
    train_pack(points, runs_dir=runs_dir, data_dir=data_dir, quiet=True, log=lambda _: None)
    return time.perf_counter() - tic, LOOP_SECONDS["loops"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--pack", type=int, default=10)
    parser.add_argument("--steps", type=int, help="train.steps of every run (default: the config's)")
    parser.add_argument("--alone", type=int, default=3, help="runs trained alone per depth")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], dest="sets")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    time_the_loops()
    rate = gemm_rate()
    print(f"this core's large-GEMM rate: {rate:.0f} GFLOP/s float32 (torch.mm 2048², one thread)")
    base = load_config(args.config, args.sets, [])
    depths = sorted({point.model.layers for point in base.runs()})
    tmp = Path(tempfile.mkdtemp(prefix="study-floor-"))
    data_dir = tmp / "data"
    totals: dict[str, float] = defaultdict(float)
    for layers in depths:
        sets = [*args.sets, f"model.layers={layers}", "train.threads=1", "train.device=cpu"]
        sets += [f"train.steps={args.steps}"] if args.steps else []
        seeds = ",".join(str(s) for s in range(args.pack))
        points = list(load_config(args.config, sets, [f"train.seed={seeds}"]).runs())
        steps = points[0].train.steps
        train_pack(points[:1], runs_dir=tmp / "warm", data_dir=data_dir, quiet=True, log=lambda _: None)
        packed, packed_loops, alone, alone_loops = [], [], [], []
        for rep in range(args.reps):  # interleaved: packed, then alone, each rep
            wall, loops = timed_train(points, tmp / f"packed{layers}-{rep}", data_dir)
            packed.append(wall / (args.pack * steps))
            packed_loops.append(loops / (args.pack * steps))
            wall = loops = 0.0
            for point in points[: args.alone]:
                w, lo = timed_train([point], tmp / f"alone{layers}-{rep}", data_dir)
                wall, loops = wall + w, loops + lo
            alone.append(wall / (args.alone * steps))
            alone_loops.append(loops / (args.alone * steps))
        p, pl, a, al = (statistics.median(v) * 1e3 for v in (packed, packed_loops, alone, alone_loops))
        run = next((tmp / "warm").rglob(f"L{layers}-*/summary.json")).parent
        weights = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
        flops = step_flops(weights, points[0].task.seq_len, points[0].train.batch_size)
        hidden = json.loads((run / "summary.json").read_text())["hidden_size"]
        print(
            f"{layers} layer(s), H {hidden}: per member step "
            f"packed {p:.3f} ms (loops {pl:.3f}, rest {p - pl:.3f}), alone {a:.3f} ms (loops {al:.3f}, "
            f"rest {a - al:.3f}); loops {flops / 1e6:.1f} MFLOP at {flops / al / 1e6:.0f} GFLOP/s alone, "
            f"{flops / pl / 1e6:.0f} packed; packed/alone {p / a:.2f}, zero-overhead floor {al / a:.2f}"
        )
        for key, value in (
            ("packed", p),
            ("packed_loops", pl),
            ("alone", a),
            ("alone_loops", al),
            ("flops", flops / 1e6),
        ):
            totals[key] += value
    p, pl, a, al, flops = (totals[k] for k in ("packed", "packed_loops", "alone", "alone_loops", "flops"))
    o_p, o_a = p - pl, a - al
    print(
        f"study ({len(depths)} depths alike): packed/alone {p / a:.2f}; zero-overhead floor {al / a:.2f}; "
        f"the rest of a step packed is {o_p / o_a:.2f} of the rest alone"
    )
    for target in (0.5, 1 / 3):
        print(f"ratio {target:.2f}:")
        for label, rest in (
            ("as today", o_p),
            ("cut to 0.2 of an alone step's", 0.2 * o_a),
            ("cut to 0.1 of an alone step's", 0.1 * o_a),
            ("cut to nothing", 0.0),
        ):
            room = (target * o_a - rest) / (1 - target)  # the loops' time per member step that ratio leaves
            if room <= 0:
                print(
                    f"  the rest of a packed step {label}: out of reach at any loop speed "
                    f"(it is {rest / o_a:.2f} of an alone step's rest, over the ratio)"
                )
            else:
                print(
                    f"  the rest of a packed step {label}: needs the loops at {flops / room:.0f} "
                    f"GFLOP/s ({al / room:.1f}x today's, {flops / room / rate:.2f} of this core's GEMM rate)"
                )


if __name__ == "__main__":
    main()
