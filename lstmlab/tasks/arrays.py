"""Your own sequences: arrays from a .npz file (or a folder of .npy files), or a CSV time series.

`task.kind` says what the targets are:

    kind             inputs                         targets                          metric      readout
    sequence-class   (N, T, D) floats or (N, T)     (N,) integer classes             accuracy    last step
                     integer tokens
    step-class       the same                       (N, T) integer classes           accuracy    every step
    regression       the same                       (N,) or (N, D_out) floats        mse         last step
                                                    (N, T, D_out) floats             mse         every step

A .npz (`np.savez("walks.npz", inputs=x, targets=y)`) or a folder holding `inputs.npy` and
`targets.npy` gives all N sequences; the split is then seeded by `task.seed`: a random `n_val`
sequences for validation, `n_test` for test (each 10% of N by default), the rest for training. Your
own split takes either form:

    split                     (N,) "train" | "val" | "test" (or 0 | 1 | 2) beside inputs and targets
    train_inputs, train_targets, val_inputs, val_targets, test_inputs, test_targets
                              one pair per split (a missing val or test pair is held out of train, seeded)

Any other key is refused, as are NaN or infinite values, negative tokens or classes, float tokens, and
arrays whose first axes disagree: the message names the file and the key. One example, sequence-class
with D = 1, T = 4: inputs [[0.3], [-1.2], [0.8], [0.1]], target 1 (say, "the sum is positive").

A .csv is a time series forecast from its own past (kind regression): a header row of column names,
then one row per time step, every cell a number. The rows are cut into three contiguous segments, train
then val then test (never shuffled: neighbouring windows overlap, so a random split would leak), each
column is z-scored by the train segment's mean and std (`normalize`, recorded in meta.json), and windows
slide by one step inside a segment: inputs are `seq_len` rows of `columns` (N, T, D), targets the next
`horizon` rows of `target_columns`, flattened step-major to (N, horizon · len(target_columns)).

The file is the task's source: its sha256 is recorded in meta.json and checked on every load, so a
dataset whose file changed since it was made is refused (delete the dataset folder to make it anew).
A relative `path` is read from the current folder.

Baselines ("trivial" is the one a run must beat): majority class — the most frequent training class,
at every step for step-class — scored as accuracy on the test split; mean predictor — the training
targets' mean — as test MSE; and for a CSV, persistence — the last input value of each target column
for every horizon step — with "trivial" the better of mean and persistence.
Solved: the default rule of every task — accuracy within 10% of the way from the baseline to 1, or MSE
below a tenth of the baseline's.
"""

from __future__ import annotations

import csv
import math
import zipfile
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lstmlab import files, memory
from lstmlab.errors import DataError
from lstmlab.tasks.base import SPLITS, Splits, Task, TaskConfig, TaskSpec

KINDS = ("sequence-class", "step-class", "regression")
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
HELD_OUT = 0.1  # default share of N (or of the CSV's windows) for each of val and test


class ArraysConfig(TaskConfig):
    name: Literal["arrays"] = "arrays"
    path: str = Field(description="Your data: a .npz file, a folder of .npy files (inputs.npy, targets.npy, ...) "
                                  "or a .csv time series. Relative paths are read from the current folder.")
    kind: Literal["sequence-class", "step-class", "regression"] = Field(
        description="What the targets are: one class per sequence, one class per step, or real values "
                    "(a CSV is always regression: forecasting).")
    n_train: int | None = Field(None, ge=1, description="Training sequences to keep (after the seeded shuffle; "
                                "for a CSV the windows nearest the validation segment). null: all.")
    n_val: int | None = Field(None, ge=1, description="Validation sequences (CSV: windows) held out when the file "
                              "has no split of its own. null: 10% of N.")
    n_test: int | None = Field(None, ge=1, description="Test sequences (CSV: windows) held out when the file has "
                               "no split of its own. null: 10% of N.")
    seq_len: int | None = Field(None, ge=1, description="CSV only: rows per input window (T).")
    horizon: int = Field(1, ge=1, description="CSV only: rows to forecast after each window.")
    columns: list[str] | None = Field(None, description="CSV only: the input columns. null: every column.")
    target_columns: list[str] | None = Field(
        None, description="CSV only: the columns to forecast. null: the input columns.")
    normalize: bool = Field(True, description="CSV only: z-score each column by the train segment's mean and std.")


class ArraysTask(Task):
    name = "arrays"
    Config = ArraysConfig
    # metric, higher_is_better and loss_kind follow task.kind (set per instance)

    cfg: ArraysConfig

    def __init__(self, cfg: ArraysConfig):
        super().__init__(cfg)
        classes = cfg.kind != "regression"
        self.metric = "accuracy" if classes else "mse"
        self.higher_is_better = classes
        self.loss_kind = "cross_entropy" if classes else "mse"

    # -- reading ------------------------------------------------------------------------------------
    def generate(self) -> tuple[Splits, dict[str, Any]]:
        path = Path(self.cfg.path)
        if not path.exists():
            raise DataError(f"task.path: {path} does not exist (a .npz file, a folder of .npy files or a .csv)")
        if path.suffix.lower() == ".csv":
            return CsvSeries(self.cfg).generate()
        splits, how = self._split(read_arrays(path), path)
        return splits, describe(splits, self.cfg.kind, path, how)

    def sources(self, info: dict[str, Any]) -> list[Path]:
        path = Path(self.cfg.path)
        return sorted(path.glob("*.npy")) if path.is_dir() else [path]

    def _split(self, arrays: dict[str, np.ndarray], path: Path) -> tuple[Splits, str]:
        """Checked inputs and targets of every split, and how the split was made (file, seeded or both)."""
        cfg = self.cfg
        out: Splits = {}
        if "inputs" not in arrays and "targets" not in arrays:  # one pair of keys per split
            for s in SPLITS:
                if f"{s}_inputs" in arrays or f"{s}_targets" in arrays:
                    pair = {k: _need(arrays, f"{s}_{k}", path) for k in ("inputs", "targets")}
                    out[s] = check_pair(pair, cfg.kind, path, f"{s}_")
            if "train" not in out:
                raise DataError(f"{path}: key 'train_inputs' is missing (found {', '.join(sorted(arrays))}); give "
                                "inputs and targets, or train_inputs and train_targets")
        else:
            pair = check_pair({k: _need(arrays, k, path) for k in ("inputs", "targets")}, cfg.kind, path)
            n = len(pair["inputs"])
            codes = split_codes(arrays["split"], n, path) if "split" in arrays else np.zeros(n, dtype=np.int64)
            out = {s: {k: v[codes == c] for k, v in pair.items()} for s, c in SPLIT_CODES.items() if (codes == c).any()}
            if "train" not in out:
                raise DataError(f"{path}: key 'split' marks no sequence as train")
        for s in ("val", "test"):
            if s in out and getattr(cfg, f"n_{s}") is not None:
                raise DataError(f"task.n_{s}: {path} gives its own {s} split, so leave task.n_{s} null")
        # held-out splits the file does not give: one seeded shuffle of train, held-out rows first
        train = out["train"]
        n = len(train["inputs"])
        order = np.random.default_rng(cfg.seed).permutation(n)
        wanted = {s: getattr(cfg, f"n_{s}") or max(1, round(HELD_OUT * n)) for s in ("val", "test") if s not in out}
        if sum(wanted.values()) >= n:
            raise DataError(f"{path}: {n} training sequences cannot give {' + '.join(map(str, wanted.values()))} "
                            "held-out ones and keep one for training; lower task.n_val / task.n_test")
        start = 0
        for s, count in wanted.items():
            out[s] = {k: v[order[start : start + count]] for k, v in train.items()}
            start += count
        rest = order[start:] if wanted else np.arange(n)  # a split given in full keeps the file's order
        out["train"] = {k: v[rest[: cfg.n_train]] for k, v in train.items()}
        given = len(out) - len(wanted) > 1
        how = "file" if not wanted else ("seeded" if not given else f"file; {' and '.join(wanted)} seeded")
        return {s: out[s] for s in SPLITS}, how

    # -- what the model sees, and what it must beat --------------------------------------------------
    def spec(self, info: dict[str, Any]) -> TaskSpec:
        return TaskSpec(input_kind=info["input_kind"], input_size=info["input_size"],
                        output_size=info["output_size"], readout=info["readout"])

    def baselines(self, splits: Splits, info: dict[str, Any]) -> dict[str, float]:
        train, test = splits["train"]["targets"], splits["test"]["targets"]
        if self.cfg.kind != "regression":
            majority = int(np.bincount(train.reshape(-1)).argmax())
            accuracy = float(np.mean(test == majority))
            return {"trivial": accuracy, "majority": accuracy}
        axes = tuple(range(train.ndim - 1))  # every axis but the outputs'
        mean = train.astype(np.float64).mean(axis=axes)
        baselines = {"mean": float(np.mean((test.astype(np.float64) - mean) ** 2))}
        if info.get("persistence_columns") is not None:
            last = splits["test"]["inputs"][:, -1, info["persistence_columns"]].astype(np.float64)  # (N, C)
            guess = np.tile(last, (1, self.cfg.horizon))  # the same value for every horizon step
            baselines["persistence"] = float(np.mean((test.astype(np.float64) - guess) ** 2))
        baselines["trivial"] = min(baselines.values())
        return baselines

    def solve_threshold(self, baselines: dict[str, float]) -> float | None:
        """None: what counts as solving a user's data is the user's to say (`task.solve_threshold`)."""
        return None


# -- .npz and .npy files -------------------------------------------------------------------------------

ALLOWED_KEYS = {"inputs", "targets", "split"} | {f"{s}_{k}" for s in SPLITS for k in ("inputs", "targets")}


MAX_IDS = 2**24  # tokens and classes are ids 0..V-1 with V at most this: an embedding or head of V rows
READ_PEAK_ITEMSIZE = 8  # reading holds the file's arrays, then each element twice more at up to 8 bytes:
                        # converted (int64 ids, float32 values) and again in its split


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz file, or of the .npy files in a folder, by key (file name without .npy).

    Before any array is read, its header is (the .npz members' without decompressing them): its dtype must
    hold no Python objects, the size it declares must be the size stored (a truncated file, or a header
    claiming 373 GiB in a small file, is refused), and the arrays with their converted copies must fit in
    the memory available (a zip bomb is refused before it is decompressed)."""
    try:
        if path.is_dir():
            members = sorted(path.glob("*.npy"))
            if not members:
                raise DataError(f"task.path: folder {path} holds no .npy files (expected inputs.npy and targets.npy)")
            headers = {}
            for member in members:
                size = files.check_regular(member).st_size
                with open(member, "rb") as f:
                    headers[member.stem] = npy_header(f, size, member)
            check_memory(path, headers)
            arrays = {p.stem: np.load(p, allow_pickle=False) for p in members}
        else:
            files.check_regular(path)  # a FIFO or a device is refused, not read forever
            with zipfile.ZipFile(path) as archive:
                headers = {}
                for info in archive.infolist():
                    with archive.open(info) as f:
                        headers[info.filename.removesuffix(".npy")] = npy_header(f, info.file_size,
                                                                                 f"{path}: key {info.filename!r}")
            check_memory(path, headers)
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
    except (DataError, memory.TooBig):
        raise
    except files.UnreadableFile as e:
        raise DataError(f"task.path: {e}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path} cannot be read as NumPy arrays ({type(e).__name__}: {e}); save them with "
                        "np.savez(path, inputs=..., targets=...) (no object arrays)") from None
    extra = sorted(set(arrays) - ALLOWED_KEYS)
    if extra:
        raise DataError(f"{path}: unexpected key(s) {', '.join(map(repr, extra))}; valid keys: inputs, targets, "
                        "split, or train_/val_/test_ inputs and targets")
    if {"inputs", "targets", "split"} & set(arrays) and set(arrays) - {"inputs", "targets", "split"}:
        raise DataError(f"{path}: give either inputs/targets (with an optional split) or train_inputs/... per "
                        "split, not both")
    return arrays


def npy_header(f, stored: int, where) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy header read off `f` (the first bytes only), checked against the `stored`
    size of the whole .npy: header plus prod(shape)·itemsize bytes."""
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
        raise DataError(f"{where}: .npy format version {version} is not one lstmlab reads (1.0 or 2.0)")
    shape, _, dtype = read(f, max_header_size=10_000)
    if dtype.hasobject:
        raise DataError(f"{where}: dtype {dtype} holds Python objects; save numbers (no object arrays)")
    data = math.prod(shape) * dtype.itemsize
    header = f.tell() if hasattr(f, "tell") else None
    if header is not None and header + data != stored:
        raise DataError(f"{where}: its header declares shape {shape} and dtype {dtype} ({memory.human(data)}), but "
                        f"{memory.human(max(0, stored - header))} of data is stored: a truncated or damaged file")
    return shape, dtype


def check_memory(path: Path, headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """memory.TooBig naming `path` when reading its arrays would need more memory than is available:

        need = Σ bytes as stored + 2 · Σ elements · READ_PEAK_ITEMSIZE   (the arrays, converted, then split)
    """
    stored = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
    need = stored + 2 * READ_PEAK_ITEMSIZE * sum(math.prod(shape) for shape, _ in headers.values())
    free, where = memory.available(None)
    if free is not None and need > free:
        shapes = ", ".join(f"{key} {shape} {dtype}" for key, (shape, dtype) in headers.items())
        raise memory.TooBig(f"task.path: {path} holds {memory.human(stored)} of arrays ({shapes}); reading them "
                            f"needs about {memory.human(need)}, but {memory.human(free)} is {where}; use fewer or "
                            "shorter sequences")


def _need(arrays: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    if key not in arrays:
        raise DataError(f"{path}: key {key!r} is missing (found {', '.join(sorted(arrays)) or 'no arrays'})")
    return arrays[key]


def _same_n(path: Path, arrays: dict[str, np.ndarray]) -> None:
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in arrays.items()}
    if len(set(sizes.values())) > 1 or None in sizes.values():
        shapes = ", ".join(f"{k} {arrays[k].shape}" for k in arrays)
        raise DataError(f"{path}: the first axis (N, one row per sequence) must agree: {shapes}")


def split_codes(split: np.ndarray, n: int, path: Path) -> np.ndarray:
    """The `split` array as 0 (train), 1 (val), 2 (test)."""
    if split.shape != (n,):
        raise DataError(f"{path}: key 'split' has shape {split.shape}, expected ({n},): one entry per sequence")
    if split.dtype.kind in "US":
        names = split.astype(str)
        bad = sorted(set(names.tolist()) - set(SPLIT_CODES))
        codes = np.array([SPLIT_CODES.get(s, -1) for s in names.tolist()])
    elif split.dtype.kind in "iu":
        bad = sorted(set(split.tolist()) - set(SPLIT_CODES.values()))
        codes = split.astype(np.int64)
    else:
        raise DataError(f"{path}: key 'split' has dtype {split.dtype}; use strings train/val/test or integers 0/1/2")
    if bad:
        raise DataError(f"{path}: key 'split' holds {bad[:5]}; valid values: train, val, test (or 0, 1, 2)")
    return codes


def check_pair(arrays: dict[str, np.ndarray], kind: str, path: Path, prefix: str = "") -> dict[str, np.ndarray]:
    """Validate one split's inputs and targets for `kind`; return them as the dtypes training reads."""
    inputs, targets = arrays["inputs"], arrays["targets"]
    ik, tk = f"{prefix}inputs", f"{prefix}targets"
    _same_n(path, {ik: inputs, tk: targets})
    if len(inputs) == 0:
        raise DataError(f"{path}: key {ik!r} holds no sequences")
    if inputs.ndim in (2, 3) and 0 in inputs.shape[1:]:
        raise DataError(f"{path}: key {ik!r} has shape {inputs.shape}: every sequence needs at least one step (T) "
                        "and one feature (D)")
    if inputs.dtype.kind in "biu" and inputs.ndim == 2:
        _ids(path, ik, inputs, "tokens", "V")
        inputs = inputs.astype(np.int64)
    elif inputs.dtype.kind in "biuf" and inputs.ndim == 3:
        _finite(path, ik, inputs)
        inputs = inputs.astype(np.float32)
    else:
        raise DataError(f"{path}: key {ik!r} has shape {inputs.shape} and dtype {inputs.dtype}; expected (N, T, D) "
                        "numbers, or (N, T) integer tokens (real values at one feature per step: x[..., None])")
    N, T = inputs.shape[:2]
    if kind in ("sequence-class", "step-class"):
        expected = (N,) if kind == "sequence-class" else (N, T)
        if targets.shape != expected or targets.dtype.kind not in "biu":
            raise DataError(f"{path}: key {tk!r} has shape {targets.shape} and dtype {targets.dtype}; kind {kind} "
                            f"needs integer classes of shape {expected}")
        _ids(path, tk, targets, "classes", "C")
        targets = targets.astype(np.int64)
    else:
        if targets.dtype.kind not in "biuf" or targets.ndim not in (1, 2, 3) or (
            targets.ndim == 3 and targets.shape[1] != T
        ):
            raise DataError(f"{path}: key {tk!r} has shape {targets.shape} and dtype {targets.dtype}; kind "
                            f"regression needs numbers of shape (N,), (N, D_out) or (N, T={T}, D_out)")
        if targets.ndim > 1 and targets.shape[-1] == 0:
            raise DataError(f"{path}: key {tk!r} has shape {targets.shape}: no output values (D_out is 0)")
        _finite(path, tk, targets)
        targets = targets.astype(np.float32).reshape(N, 1) if targets.ndim == 1 else targets.astype(np.float32)
    return {"inputs": inputs, "targets": targets}


def _ids(path: Path, key: str, array: np.ndarray, what: str, count: str) -> None:
    """Integer ids (tokens, classes) are 0..V-1 with V ≤ MAX_IDS; checked before the int64 conversion, so a
    uint64 2^64 - 1 is refused rather than wrapped to -1."""
    low, high = int(array.min()), int(array.max())  # Python ints: exact for every integer dtype
    if low < 0:
        raise DataError(f"{path}: key {key!r} holds negative {what} (min {low}); {what} are ids 0..{count}-1")
    if high >= MAX_IDS:
        raise DataError(f"{path}: key {key!r} holds {what} id {high}; {what} are ids 0..{count}-1, and lstmlab "
                        f"takes {count} up to {MAX_IDS:,} (each id is a row of the model's embedding or head)")


def _finite(path: Path, key: str, array: np.ndarray) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{path}: key {key!r} holds {int(bad.sum())} NaN or infinite value(s), the first at index "
                        f"{where}; fill or drop them first")


def describe(splits: Splits, kind: str, path: Path, how: str) -> dict[str, Any]:
    """The task info: sizes the model needs, checked to agree across splits."""
    first = splits["train"]
    tokens = first["inputs"].ndim == 2
    for split, arrays in splits.items():
        inputs, targets = arrays["inputs"], arrays["targets"]
        if (inputs.ndim == 2) != tokens or (not tokens and inputs.shape[2] != first["inputs"].shape[2]):
            raise DataError(f"{path}: {split} inputs {inputs.shape} {inputs.dtype} do not match train inputs "
                            f"{first['inputs'].shape} {first['inputs'].dtype}")
        if kind == "regression" and (targets.ndim, targets.shape[-1]) != (first["targets"].ndim,
                                                                          first["targets"].shape[-1]):
            raise DataError(f"{path}: {split} targets {targets.shape} do not match train targets "
                            f"{first['targets'].shape} (the same outputs per sequence or per step)")
    every = kind == "step-class" or (kind == "regression" and first["targets"].ndim == 3)
    if kind == "regression":
        output_size = int(first["targets"].shape[-1])
    else:
        output_size = int(max(a["targets"].max() for a in splits.values())) + 1
    input_size = (int(max(a["inputs"].max() for a in splits.values())) + 1 if tokens
                  else int(first["inputs"].shape[2]))
    return {
        "kind": kind, "file": path.as_posix(), "split": how, "input_kind": "tokens" if tokens else "real",
        "input_size": input_size, "output_size": output_size, "readout": "every" if every else "last",
    }


# -- CSV time series -----------------------------------------------------------------------------------


class CsvSeries:
    """A CSV file's rows as windows for forecasting (see the module docstring)."""

    def __init__(self, cfg: ArraysConfig):
        self.cfg = cfg
        self.path = Path(cfg.path)

    def generate(self) -> tuple[Splits, dict[str, Any]]:
        cfg, path = self.cfg, self.path
        if cfg.kind != "regression":
            raise DataError(f"task.kind: a CSV time series is forecast (kind regression), not {cfg.kind}")
        if cfg.seq_len is None:
            raise DataError(f"task.seq_len: set the input window length (rows) for the CSV file {path}")
        header, table = read_csv(path)
        columns = cfg.columns or header
        targets = cfg.target_columns or columns
        for key, names in (("task.columns", columns), ("task.target_columns", targets)):
            missing = [c for c in names if c not in header]
            if missing:
                raise DataError(f"{key}: {path} has no column(s) {missing}; its columns: {', '.join(header)}")
        used = list(dict.fromkeys(columns + targets))
        values = np.stack([column_values(table, header, name, path) for name in used], axis=1)  # (rows, C)
        span = cfg.seq_len + cfg.horizon - 1  # rows of a window beyond its first
        windows = len(values) - span
        n_val = cfg.n_val or max(1, round(HELD_OUT * windows))
        n_test = cfg.n_test or max(1, round(HELD_OUT * windows))
        n_train = len(values) - 3 * span - n_val - n_test
        if n_train < 1:
            raise DataError(f"{path}: {len(values)} rows cannot give {n_val} validation and {n_test} test windows of "
                            f"seq_len {cfg.seq_len} + horizon {cfg.horizon} and one training window; lower "
                            "task.seq_len, task.horizon, task.n_val or task.n_test")
        lengths = {"train": n_train + span, "val": n_val + span, "test": n_test + span}
        cuts = np.cumsum([0] + [lengths[s] for s in SPLITS])
        segments = {s: values[cuts[i] : cuts[i + 1]] for i, s in enumerate(SPLITS)}
        mean = segments["train"].mean(axis=0) if cfg.normalize else np.zeros(values.shape[1])
        std = segments["train"].std(axis=0) if cfg.normalize else np.ones(values.shape[1])
        flat = [name for name, s in zip(used, std, strict=True) if s == 0]
        if flat:
            raise DataError(f"{path}: column(s) {flat} are constant over the train segment and cannot be normalised; "
                            "drop them from task.columns or set task.normalize: false")
        inputs_at = [used.index(c) for c in columns]
        targets_at = [used.index(c) for c in targets]
        splits = {s: self._windows((seg - mean) / std, inputs_at, targets_at) for s, seg in segments.items()}
        if cfg.n_train is not None:
            splits["train"] = {k: v[-cfg.n_train :] for k, v in splits["train"].items()}
        persistence = [columns.index(c) for c in targets] if all(c in columns for c in targets) else None
        info = {
            "kind": "regression", "file": path.as_posix(), "split": "time-ordered", "input_kind": "real",
            "input_size": len(columns), "output_size": cfg.horizon * len(targets), "readout": "last",
            "columns": columns, "target_columns": targets, "rows": len(values),
            "mean": {c: float(m) for c, m in zip(used, mean, strict=True)},
            "std": {c: float(s) for c, s in zip(used, std, strict=True)},
            "persistence_columns": persistence,
        }
        return splits, info

    def _windows(self, segment: np.ndarray, inputs_at: list[int], targets_at: list[int]) -> dict[str, np.ndarray]:
        T, H = self.cfg.seq_len, self.cfg.horizon
        n = len(segment) - T - H + 1
        starts = np.arange(n)[:, None]
        inputs = segment[starts + np.arange(T)[None, :]][:, :, inputs_at]  # (N, T, D)
        future = segment[starts + T + np.arange(H)[None, :]][:, :, targets_at]  # (N, H, C)
        return {"inputs": inputs.astype(np.float32), "targets": future.reshape(n, -1).astype(np.float32)}


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        files.check_regular(path)  # a FIFO or a device is refused, not read forever
    except files.UnreadableFile as e:
        raise DataError(f"task.path: {e}") from None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} cannot be read as CSV ({type(e).__name__}: {e})") from None
    if len(rows) < 2:
        raise DataError(f"{path}: expected a header row of column names, then one row per time step")
    header = [name.strip() for name in rows[0]]
    if len(set(header)) != len(header) or "" in header:
        raise DataError(f"{path}: the header row needs distinct, non-empty column names (found {header})")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: row {i} has {len(row)} cells, the header {len(header)}")
    return header, rows[1:]


def column_values(table: list[list[str]], header: list[str], name: str, path: Path) -> np.ndarray:
    j = header.index(name)
    out = np.empty(len(table))
    for i, row in enumerate(table):
        if not row[j].strip():
            raise DataError(f"{path}: row {i + 2}, column {name!r} is empty; fill or drop missing values first")
        try:
            out[i] = float(row[j])
        except ValueError:
            raise DataError(f"{path}: row {i + 2}, column {name!r} is not a number ({row[j]!r}); list the numeric "
                            "columns in task.columns") from None
        if not math.isfinite(out[i]):
            raise DataError(f"{path}: row {i + 2}, column {name!r} is {row[j]!r}; fill or drop missing values first")
    return out
