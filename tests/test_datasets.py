"""Dataset folders: the same config gives the same bytes; a changed folder is refused, never repaired."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SYNTHETIC_TASKS

from lstmlab.errors import DataError
from lstmlab.tasks import get_task_class
from lstmlab.tasks.datasets import dataset_dir, generate, load, verify

SMALL = {"n_train": 40, "n_val": 8, "n_test": 8}


def small_config(name: str, **keys):
    return get_task_class(name).Config(**{**SMALL, **keys})


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("name", SYNTHETIC_TASKS)
def test_same_config_gives_byte_identical_files(name, tmp_path):
    cfg = small_config(name)
    first, second = generate(cfg, tmp_path / "a"), generate(cfg, tmp_path / "b")
    assert first.name == second.name == dataset_dir(cfg, ".").name
    files = snapshot(first)
    assert "meta.json" in files and "test-inputs.npy" in files
    assert files == snapshot(second)


@pytest.mark.parametrize("name", SYNTHETIC_TASKS)
def test_load_gives_back_what_the_task_generated(name, tmp_path):
    cfg = small_config(name)
    dataset = load(cfg, tmp_path, log=lambda _: None)
    task = get_task_class(name)(cfg)
    splits, info = task.generate()
    for split, arrays in splits.items():
        assert sorted(dataset.splits[split]) == sorted(arrays)
        for key, array in arrays.items():
            np.testing.assert_array_equal(dataset.splits[split][key], array)
            assert dataset.splits[split][key].dtype == array.dtype
    meta = dataset.meta
    assert meta["metric"] == task.metric and meta["higher_is_better"] == task.higher_is_better
    assert meta["baselines"] == task.baselines(splits, info)
    assert meta["solve_threshold"] == task.solve_threshold(meta["baselines"])
    assert dataset.spec == task.spec(info)


def test_another_config_gets_another_folder(tmp_path):
    a = generate(small_config("copy", seq_len=5), tmp_path)
    b = generate(small_config("copy", seq_len=6), tmp_path)
    assert a != b and a.parent == b.parent


# -- tampering: a DataError that names the file, and the folder left exactly as the user left it ------
def tampered(tmp_path, change) -> tuple:
    cfg = small_config("copy", seq_len=5)
    folder = generate(cfg, tmp_path)
    change(folder)
    before = snapshot(folder)
    return cfg, folder, before


def flip_a_byte(folder):
    path = folder / "test-targets.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def truncate(folder):
    path = folder / "test-targets.npy"
    path.write_bytes(path.read_bytes()[:-7])


def remove(folder):
    (folder / "test-targets.npy").unlink()


def edit_baseline(folder):
    meta = json.loads((folder / "meta.json").read_text())
    meta["baselines"]["trivial"] = 0.01
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def edit_a_checksum(folder):
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"]["test-targets.npy"] = "0" * 64
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def break_json(folder):
    (folder / "meta.json").write_text("{ not json")


def remove_meta(folder):
    (folder / "meta.json").unlink()


@pytest.mark.parametrize(
    "change,named,why",
    [
        (flip_a_byte, "test-targets.npy", "changed or truncated"),
        (truncate, "test-targets.npy", "changed or truncated"),
        (remove, "test-targets.npy", "missing"),
        (edit_baseline, "meta.json", "changed"),
        (edit_a_checksum, "meta.json", "changed"),
        (break_json, "meta.json", "invalid JSON"),
        (remove_meta, "meta.json", "no meta.json"),
    ],
)
def test_a_changed_folder_is_refused_and_left_alone(tmp_path, change, named, why):
    cfg, folder, before = tampered(tmp_path, change)
    for attempt in (lambda: verify(cfg, folder), lambda: load(cfg, tmp_path), lambda: generate(cfg, tmp_path)):
        with pytest.raises(DataError) as error:
            attempt()
        message = str(error.value)
        assert named in message and why in message
        assert "regenerate" in message and "lstmlab generate-data --task copy" in message
        assert snapshot(folder) == before, "nothing may be overwritten"


def test_a_folder_for_another_config_is_refused(tmp_path):
    cfg = small_config("copy", seq_len=5)
    folder = generate(cfg, tmp_path)
    with pytest.raises(DataError, match="another task config"):
        verify(small_config("copy", seq_len=6), folder)


def test_force_regenerates_a_changed_folder(tmp_path):
    cfg, folder, _ = tampered(tmp_path, flip_a_byte)
    generate(cfg, tmp_path, force=True)
    assert snapshot(folder) == snapshot(generate(cfg, tmp_path / "fresh"))
