"""The arrays task: a user's .npz, .npy folder or CSV becomes a checked, checksummed dataset that trains
and beats its trivial baseline; a changed source file or a malformed one is refused, naming file and key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from lstmlab.cli import app
from lstmlab.errors import DataError
from lstmlab.tasks import get_task_class
from lstmlab.tasks.arrays import ArraysConfig, ArraysTask
from lstmlab.tasks.datasets import generate, load

runner = CliRunner()
TRAIN = {"steps": 150, "batch_size": 32, "eval_every": 50, "lr": 0.01, "threads": 1}


def task_of(path, kind, **keys) -> ArraysTask:
    return ArraysTask(ArraysConfig(path=str(path), kind=kind, **keys))


def signs(n: int = 600, T: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Is the sum of the inputs positive? (N, T, 1) floats -> (N,) classes."""
    x = np.random.default_rng(seed).normal(size=(n, T, 1)).astype(np.float32)
    return x, (x.sum(axis=(1, 2)) > 0).astype(np.int64)


def train_cli(tmp_path, task: dict, **model):
    cfg = {"experiment": "mine", "task": task, "model": {"type": "lstm", "hidden_size": 16, **model},
           "train": TRAIN}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return runner.invoke(app, ["train", str(path), "-q", "--runs-dir", str(tmp_path / "runs"),
                               "--data-dir", str(tmp_path / "data")])


def summary_of(tmp_path) -> dict:
    (run,) = (tmp_path / "runs" / "mine").iterdir()
    return json.loads((run / "summary.json").read_text())


# -- training end to end ---------------------------------------------------------------------------
def test_an_npz_of_classes_trains_and_beats_the_majority_class(tmp_path):
    x, y = signs()
    np.savez(tmp_path / "signs.npz", inputs=x, targets=y)
    result = train_cli(tmp_path, {"name": "arrays", "path": str(tmp_path / "signs.npz"), "kind": "sequence-class"})
    assert result.exit_code == 0, result.output
    summary = summary_of(tmp_path)
    assert summary["metric"] == "accuracy" and summary["higher_is_better"] is True
    assert summary["baseline"] == summary["baselines"]["majority"] < 0.6
    assert summary["test_metric"] > summary["baseline"] + 0.2


def test_a_folder_of_npy_files_for_regression_trains_and_beats_the_mean_predictor(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(600, 8, 2)).astype(np.float32)
    folder = tmp_path / "mine"
    folder.mkdir()
    np.save(folder / "inputs.npy", x)
    np.save(folder / "targets.npy", x[:, :, 0].mean(axis=1))  # (N,): one number per sequence
    result = train_cli(tmp_path, {"name": "arrays", "path": str(folder), "kind": "regression"})
    assert result.exit_code == 0, result.output
    summary = summary_of(tmp_path)
    assert summary["metric"] == "mse" and summary["baseline"] == summary["baselines"]["mean"]
    assert summary["test_metric"] < 0.5 * summary["baseline"]


# -- the source file is checked on every load --------------------------------------------------------
def test_a_changed_source_file_is_refused_naming_it(tmp_path):
    x, y = signs(100)
    source = tmp_path / "signs.npz"
    np.savez(source, inputs=x, targets=y)
    cfg = ArraysConfig(path=str(source), kind="sequence-class")
    folder = generate(cfg, tmp_path / "data")
    meta = json.loads((folder / "meta.json").read_text())
    assert list(meta["sources"]) == [str(source)] and len(meta["sources"][str(source)]) == 64
    np.savez(source, inputs=x, targets=1 - y)  # the user edits the file; the config is the same
    for attempt in (lambda: load(cfg, tmp_path / "data"), lambda: generate(cfg, tmp_path / "data")):
        with pytest.raises(DataError, match=f"source file {source} changed since dataset {folder}"):
            attempt()
    source.unlink()
    with pytest.raises(DataError, match=f"source file {source} of dataset {folder} is missing"):
        load(cfg, tmp_path / "data")
    result = train_cli(tmp_path, {"name": "arrays", "path": str(source), "kind": "sequence-class"})
    assert result.exit_code == 2 and str(source) in result.output and "Traceback" not in result.output


def test_charlm_text_sources_are_checked_too(tmp_path):
    text = tmp_path / "poem.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    cfg = get_task_class("charlm").Config(text=[str(text)], seq_len=10, n_train=20, n_val=5, n_test=5)
    folder = generate(cfg, tmp_path / "data")
    assert list(json.loads((folder / "meta.json").read_text())["sources"]) == [str(text)]
    load(cfg, tmp_path / "data")
    text.write_text(text.read_text().replace("fox", "cat"))
    with pytest.raises(DataError, match=f"source file {text} changed"):
        load(cfg, tmp_path / "data")


# -- splits ---------------------------------------------------------------------------------------------
def test_seeded_split_is_deterministic_and_partitions_the_rows(tmp_path):
    x, y = signs(50)
    x[:, 0, 0] = np.arange(50)  # tag each row to follow it
    np.savez(tmp_path / "d.npz", inputs=x, targets=y)
    splits, info = task_of(tmp_path / "d.npz", "sequence-class", n_val=7).generate()
    assert info["split"] == "seeded"
    tags = {s: splits[s]["inputs"][:, 0, 0].astype(int).tolist() for s in splits}
    assert [len(tags[s]) for s in ("train", "val", "test")] == [38, 7, 5]  # n_test: 10% of 50
    assert sorted(sum(tags.values(), [])) == list(range(50))
    for s in splits:
        np.testing.assert_array_equal(splits[s]["targets"], y[tags[s]])
    again, _ = task_of(tmp_path / "d.npz", "sequence-class", n_val=7).generate()
    assert all(np.array_equal(again[s]["inputs"], splits[s]["inputs"]) for s in splits)
    other, _ = task_of(tmp_path / "d.npz", "sequence-class", n_val=7, seed=5).generate()
    assert not np.array_equal(other["val"]["inputs"], splits["val"]["inputs"])
    a, b = generate(ArraysConfig(path=str(tmp_path / "d.npz"), kind="sequence-class"), tmp_path / "a"), \
        generate(ArraysConfig(path=str(tmp_path / "d.npz"), kind="sequence-class"), tmp_path / "b")
    assert {p.name: p.read_bytes() for p in a.iterdir()} == {p.name: p.read_bytes() for p in b.iterdir()}


def test_the_users_split_array_is_respected(tmp_path):
    x, y = signs(12)
    split = np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 4)
    np.savez(tmp_path / "d.npz", inputs=x, targets=y, split=split)
    splits, info = task_of(tmp_path / "d.npz", "sequence-class").generate()
    assert info["split"] == "file"
    for s, rows in (("train", slice(0, 6)), ("val", slice(6, 8)), ("test", slice(8, 12))):
        np.testing.assert_array_equal(splits[s]["inputs"], x[rows])
    with pytest.raises(DataError, match="task.n_val: .* gives its own val split"):
        task_of(tmp_path / "d.npz", "sequence-class", n_val=2).generate()
    np.savez(tmp_path / "c.npz", inputs=x, targets=y, split=np.array([0] * 10 + [2] * 2))  # no val: held out
    splits, info = task_of(tmp_path / "c.npz", "sequence-class", n_val=3).generate()
    assert info["split"] == "file; val seeded"
    assert [len(splits[s]["inputs"]) for s in ("train", "val", "test")] == [7, 3, 2]


def test_per_split_keys(tmp_path):
    x, y = signs(30)
    np.savez(tmp_path / "d.npz", train_inputs=x[:20], train_targets=y[:20], val_inputs=x[20:25],
             val_targets=y[20:25], test_inputs=x[25:], test_targets=y[25:])
    splits, info = task_of(tmp_path / "d.npz", "sequence-class", n_train=15).generate()
    np.testing.assert_array_equal(splits["train"]["inputs"], x[:15])
    np.testing.assert_array_equal(splits["test"]["targets"], y[25:])
    assert info["split"] == "file"


# -- kinds, shapes and baselines ---------------------------------------------------------------------------
def test_step_class_with_tokens_and_the_majority_baseline(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 5, size=(200, 6))
    targets = (tokens >= 3).astype(np.int32)  # (N, T): one class per step
    np.savez(tmp_path / "d.npz", inputs=tokens, targets=targets)
    task = task_of(tmp_path / "d.npz", "step-class")
    splits, info = task.generate()
    spec = task.spec(info)
    assert (spec.input_kind, spec.input_size, spec.output_size, spec.readout) == ("tokens", 5, 2, "every")
    assert splits["train"]["inputs"].dtype == np.int64 and splits["train"]["targets"].dtype == np.int64
    majority = int(np.bincount(splits["train"]["targets"].ravel()).argmax())
    expected = float(np.mean(splits["test"]["targets"] == majority))
    assert task.baselines(splits, info) == {"trivial": expected, "majority": expected}
    assert task.metric == "accuracy" and task.loss_kind == "cross_entropy" and task.higher_is_better


def test_per_step_regression_and_the_mean_predictor(tmp_path):
    x = np.random.default_rng(0).normal(size=(100, 5, 3))
    np.savez(tmp_path / "d.npz", inputs=x, targets=np.cumsum(x[:, :, :2], axis=1))  # (N, T, 2)
    task = task_of(tmp_path / "d.npz", "regression")
    splits, info = task.generate()
    spec = task.spec(info)
    assert (spec.input_kind, spec.input_size, spec.output_size, spec.readout) == ("real", 3, 2, "every")
    train, test = splits["train"]["targets"].astype(np.float64), splits["test"]["targets"].astype(np.float64)
    mean = train.reshape(-1, 2).mean(axis=0)
    assert task.baselines(splits, info)["trivial"] == pytest.approx(np.mean((test - mean) ** 2), rel=1e-12)
    assert task.metric == "mse" and not task.higher_is_better


# -- CSV time series -----------------------------------------------------------------------------------------
def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_csv_windows_segments_normalisation_and_persistence(tmp_path):
    t = np.arange(60, dtype=np.float64)
    values = np.c_[t, t**1.5, np.sin(t)]
    path = write_csv(tmp_path / "s.csv", ["step", "load", "wave"], values.tolist())
    task = task_of(path, "regression", seq_len=4, horizon=2, columns=["load", "wave"], target_columns=["load"],
                   n_val=5, n_test=6)
    splits, info = task.generate()
    span = 4 + 2 - 1
    assert [len(splits[s]["inputs"]) for s in ("train", "val", "test")] == [60 - 3 * span - 11, 5, 6]
    train_rows = values[: 60 - 3 * span - 11 + span]
    mean, std = train_rows.mean(axis=0), train_rows.std(axis=0)
    assert info["mean"]["load"] == pytest.approx(mean[1]) and info["std"]["wave"] == pytest.approx(std[2])
    z = (values - mean) / std
    test_start = len(train_rows) + 5 + span  # the test segment's first row
    np.testing.assert_allclose(splits["test"]["inputs"][2], z[test_start + 2 : test_start + 6, 1:], rtol=1e-6)
    np.testing.assert_allclose(splits["test"]["targets"][2], z[test_start + 6 : test_start + 8, 1], rtol=1e-6)
    last = splits["test"]["inputs"][:, -1, 0:1].astype(np.float64)
    persistence = np.mean((splits["test"]["targets"] - last) ** 2)
    baselines = task.baselines(splits, info)
    assert baselines["persistence"] == pytest.approx(persistence, rel=1e-12)
    assert baselines["trivial"] == min(baselines["persistence"], baselines["mean"])
    assert task.spec(info).output_size == 2 and task.spec(info).input_size == 2


@pytest.mark.parametrize("rows, keys, message", [
    ([[1, 2], [3, "x"]], {"seq_len": 1}, "row 3, column 'b' is not a number ('x')"),
    ([[1, 2], [3, ""]], {"seq_len": 1}, "row 3, column 'b' is empty"),
    ([[1, 2], [3, "nan"]], {"seq_len": 1}, "row 3, column 'b' is 'nan'"),
    ([[1, 2]] * 5, {"seq_len": 1, "columns": ["c"]}, "task.columns: .* has no column(s) ['c']"),
    ([[1, 2]] * 5, {}, "task.seq_len: set the input window length"),
    ([[1, 2]] * 5, {"seq_len": 3}, "5 rows cannot give"),
])
def test_bad_csv_files_are_refused(tmp_path, rows, keys, message):
    path = write_csv(tmp_path / "s.csv", ["a", "b"], rows)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        task_of(path, "regression", **keys).generate()


# -- bad .npz files: exit 2, naming the file and the key ----------------------------------------------------
GOOD_X, GOOD_Y = signs(20)
SEQ = "sequence-class"


@pytest.mark.parametrize("kind, arrays, message", [
    (SEQ, {"inputs": GOOD_X}, "key 'targets' is missing"),
    (SEQ, {"inputs": GOOD_X, "targets": GOOD_Y, "labels": GOOD_Y}, "unexpected key(s) 'labels'"),
    (SEQ, {"inputs": GOOD_X, "targets": GOOD_Y[:15]}, "the first axis .* inputs (20, 10, 1), targets (15,)"),
    (SEQ, {"inputs": GOOD_X[..., 0], "targets": GOOD_Y}, "key 'inputs' has shape (20, 10) and dtype float32"),
    (SEQ, {"inputs": GOOD_X, "targets": GOOD_Y.astype(float)}, "key 'targets' has shape (20,) and dtype float64"),
    ("step-class", {"inputs": GOOD_X, "targets": GOOD_Y}, "kind step-class needs integer classes of shape (20, 10)"),
    (SEQ, {"inputs": GOOD_X, "targets": GOOD_Y - 1}, "key 'targets' holds negative classes"),
    (SEQ, {"inputs": -np.ones((20, 4), int), "targets": GOOD_Y}, "key 'inputs' holds negative tokens"),
    ("regression", {"inputs": np.where(GOOD_X > 2, np.nan, GOOD_X), "targets": GOOD_Y},
     "key 'inputs' holds 1 NaN or infinite value.*first at index"),
    ("regression", {"inputs": GOOD_X, "targets": np.full((20, 3, 1), 0.5)}, "(N, T=10, D_out)"),
    (SEQ, {"inputs": GOOD_X, "targets": GOOD_Y, "split": np.array(["train"] * 19 + ["dev"])},
     "key 'split' holds ['dev']"),
    (SEQ, {"train_inputs": GOOD_X, "train_targets": GOOD_Y, "inputs": GOOD_X}, "not both"),
])
def test_bad_npz_files_are_refused(tmp_path, kind, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    pattern = message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(DataError, match=pattern) as error:
        task_of(path, kind).generate()
    assert str(path) in str(error.value)


def test_bad_files_exit_2_from_the_cli(tmp_path):
    np.savez(tmp_path / "bad.npz", inputs=GOOD_X, targets=GOOD_Y[:3])
    (tmp_path / "pickled.npz").write_bytes(b"not an archive")
    for name in ("bad.npz", "pickled.npz", "absent.npz"):
        result = runner.invoke(app, ["generate-data", "--task", "arrays", "--set", f"task.path={tmp_path / name}",
                                     "--set", "task.kind=sequence-class", "--data-dir", str(tmp_path / "data")])
        assert result.exit_code == 2, result.output
        assert name in result.output and "Traceback" not in result.output
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").glob("arrays-*"))


# -- hostile files: refused from their headers, before anything big is read --------------------------------
def npz_with(path, inputs_header: dict, data: bytes = b"\0" * 16, targets=GOOD_Y) -> None:
    """A .npz whose inputs.npy has the header `inputs_header` (descr, fortran_order, shape) over `data`."""
    import io
    import zipfile

    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"fortran_order": False, **inputs_header})
    member.write(data)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("inputs.npy", member.getvalue())
        buffer = io.BytesIO()
        np.save(buffer, targets)
        archive.writestr("targets.npy", buffer.getvalue())


@pytest.mark.parametrize("kind, arrays, message", [
    (SEQ, {"inputs": GOOD_X, "targets": np.where(GOOD_Y > 0, 2**40, 0)},
     "key 'targets' holds classes id 1099511627776; classes are ids 0..C-1"),
    (SEQ, {"inputs": np.full((20, 4), 2**64 - 1, np.uint64), "targets": GOOD_Y},
     "key 'inputs' holds tokens id 18446744073709551615"),
    ("step-class", {"inputs": np.zeros((20, 4), np.uint8), "targets": np.full((20, 4), 2**24, np.int32)},
     "key 'targets' holds classes id 16777216"),
    (SEQ, {"inputs": np.zeros((20, 0, 1), np.float32), "targets": GOOD_Y}, "key 'inputs' has shape (20, 0, 1)"),
    (SEQ, {"inputs": np.zeros((20, 10, 0), np.float32), "targets": GOOD_Y}, "key 'inputs' has shape (20, 10, 0)"),
    (SEQ, {"inputs": np.zeros((20, 0), np.int64), "targets": GOOD_Y}, "key 'inputs' has shape (20, 0)"),
    ("regression", {"inputs": GOOD_X, "targets": np.zeros((20, 0))}, "key 'targets' has shape (20, 0)"),
])
def test_ids_out_of_range_and_empty_axes_are_refused(tmp_path, kind, arrays, message):
    """Class 2^40 made the majority baseline allocate 2^40 counts; uint64 2^64-1 wrapped to -1."""
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        task_of(path, kind).generate()
    assert str(path) in str(error.value)


def test_a_header_claiming_373_gib_is_refused_from_the_header(tmp_path):
    path = tmp_path / "claims.npz"
    npz_with(path, {"descr": "<f4", "shape": (100_000, 1_000_000, 1)})
    with pytest.raises(DataError, match=r"key 'inputs.npy': its header declares shape \(100000, 1000000, 1\) "
                                        r"and dtype float32 \(372.5 GiB\), but 16 B of data is stored"):
        task_of(path, SEQ).generate()
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "inputs.npy", GOOD_X)
    np.save(folder / "targets.npy", GOOD_Y)
    (folder / "inputs.npy").write_bytes((folder / "inputs.npy").read_bytes()[:-8])  # truncated
    with pytest.raises(DataError, match=rf"{folder / 'inputs.npy'}: its header declares shape \(20, 10, 1\)"):
        task_of(folder, SEQ).generate()


def test_a_zip_bomb_is_refused_before_it_is_decompressed(tmp_path, monkeypatch):
    """256 MiB of zeros in a .npz of a few hundred KiB, with 64 MiB available: refused from its header,
    naming the file, while less than 8 MiB was ever allocated (it was decompressed in full before)."""
    import tracemalloc
    import zipfile

    from lstmlab import memory

    path = tmp_path / "bomb.npz"
    shape = (64, 2**20)  # float32: 256 MiB
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("inputs.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": shape})
            block = bytes(2**24)
            for _ in range(16):
                member.write(block)
        with archive.open("targets.npy", "w") as member:
            np.save(member, np.zeros(64, np.int64))
    assert path.stat().st_size < 2**20
    monkeypatch.setattr(memory, "available", lambda device: (64 * 2**20, "available in memory here"))
    tracemalloc.start()
    try:
        with pytest.raises(memory.TooBig, match=rf"task.path: {path} holds 256.0 MiB of arrays .* needs about"):
            task_of(path, "regression").generate()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak


@pytest.mark.parametrize("name", ["data.npz", "data.csv"])
def test_a_fifo_as_task_path_is_refused_at_once(tmp_path, name):
    """A FIFO named by task.path blocked the reader forever: a real `python -m lstmlab` with a deadline."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / name
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, "-m", "lstmlab", "generate-data", "--task", "arrays", "--set",
                             f"task.path={fifo}", "--set", "task.kind=regression", "--set", "task.seq_len=4",
                             "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"{fifo}: is a FIFO (named pipe), not a file" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
