"""Dataset folders: writing them deterministically and refusing ones that were changed.

Layout of one dataset, `<data-dir>/<task>-<hash>/`, where <hash> is the first 10 hex digits of the
sha256 of the task config (canonical JSON):

    train-inputs.npy  train-targets.npy  val-...  test-...   one .npy per split and array
    meta.json         task config, sizes, sha256 of every file, baselines, metric, task info, the
                      sha256 of every source file the task read (`Task.sources`: a user's data, a
                      text corpus), and meta_sha256: the sha256 of meta.json's own content (canonical
                      JSON without that key), so that an edit to meta.json — a baseline, a checksum — is
                      caught too

The same task config gives byte-identical files: arrays come from the config's seed alone, .npy holds
no timestamps, and meta.json is written with sorted keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstmlab import files, memory
from lstmlab.errors import DataError
from lstmlab.tasks import SPLITS, TaskConfig, TaskSpec, make_task
from lstmlab.tasks.base import data_config

FORMAT_VERSION = 2  # 2: meta.json carries meta_sha256


def config_hash(cfg: TaskConfig) -> str:
    canonical = json.dumps(data_config(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def dataset_dir(cfg: TaskConfig, data_dir: str | Path) -> Path:
    return Path(data_dir) / f"{cfg.name}-{config_hash(cfg)}"


def _sha256(path: Path) -> str:
    files.check_regular(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise files.UnreadableFile(path, f"cannot be read ({files.os_problem(e)})") from None
    return digest.hexdigest()


def _meta_checksum(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def regenerate_hint(cfg: TaskConfig, folder: Path) -> str:
    defaults = {k: f.default for k, f in type(cfg).model_fields.items() if not f.is_required()}
    sets = " ".join(f"--set task.{k}={v if isinstance(v, str) else json.dumps(v)}"  # YAML reads JSON's null, [..]
                    for k, v in data_config(cfg).items() if k != "name" and v != defaults.get(k, ...))
    return (
        f"delete {folder} and regenerate it with `lstmlab generate-data --task {cfg.name} {sets} "
        f"--data-dir {folder.parent}`"
    )


def generate(cfg: TaskConfig, data_dir: str | Path, *, force: bool = False, log=None) -> Path:
    """Write the dataset of `cfg` under `data_dir` and return its folder (`log`: a callable told when
    generation starts).

    An existing complete folder is verified and kept; a changed one raises DataError (never overwritten
    unless `force`). The folder appears whole or not at all: it is written beside and renamed in place.
    Processes generating the same dataset take turns (a lock file beside the folder); the first writes it,
    the others find it written. Staging folders left by a generation that was killed are removed.
    """
    folder = dataset_dir(cfg, data_dir)
    if folder.exists() and not force:
        verify(cfg, folder)
        return folder
    files.make_folder(folder.parent, "--data-dir")
    try:
        with _generation_lock(folder):
            if folder.exists() and not force:  # another process wrote it while this one waited
                verify(cfg, folder)
                return folder
            if force and (folder.exists() or folder.is_symlink()):
                check_replaceable(folder)  # --force deletes a dataset, never a folder of something else
            for leftover in folder.parent.glob(f".{folder.name}-*"):  # no generation of it runs but this one
                if leftover.is_symlink():
                    leftover.unlink()  # a link's target is not ours to remove
                else:
                    shutil.rmtree(leftover, ignore_errors=True)
            memory.check_dataset(cfg)
            if log is not None:
                log(f"generating dataset {folder} ...")
            _write(cfg, folder)
    except OSError as e:  # a full disk, a name too long for the file system, ...
        raise files.UnwritableFolder(f"cannot write the dataset {folder}: {files.os_problem(e)}") from None
    return folder


def check_replaceable(folder: Path) -> None:
    """DataError unless `folder` is a dataset that `--force` may delete: a real folder (not a link) of files
    only, with a meta.json that a dataset writes (its task, config and files). Runs and data sharing one
    folder, an experiment named like a dataset folder would otherwise be deleted with its runs."""
    meta_path = folder / "meta.json"
    problem = None
    if folder.is_symlink() or not folder.is_dir():
        problem = "is a symbolic link or not a folder"
    elif any(entry.is_dir() or entry.is_symlink() for entry in folder.iterdir()):
        problem = "holds folders or links (a dataset holds only its files)"
    else:
        try:
            meta = files.read_json(meta_path)
        except files.UnreadableFile as e:
            problem = f"has an unreadable meta.json ({e.problem})" if meta_path.exists() else "has no meta.json"
        else:
            if not (isinstance(meta, dict) and {"task", "config", "files"} <= set(meta)):
                problem = "has a meta.json that is not a dataset's (no task, config and files)"
    if problem:
        raise DataError(f"{folder} {problem}, so --force does not delete it: lstmlab deletes only dataset folders. "
                        "If something else lives there (runs sharing --data-dir?), give the data another "
                        "--data-dir; if it is a damaged dataset, delete it yourself and generate again")


@contextlib.contextmanager
def _generation_lock(folder: Path):
    """An exclusive lock on `.<folder name>.lock` beside the folder, waited for; released when the holder dies.
    Opened without following a link planted there (files.open_for_writing)."""
    import fcntl

    fd = files.open_for_writing(folder.parent / f".{folder.name}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(cfg: TaskConfig, folder: Path) -> None:
    """Generate the splits into a staging folder beside `folder` (permissions as the umask says), then
    rename it into place."""
    task = make_task(cfg)
    splits, info = task.generate()
    staging = folder.parent / f".{folder.name}-staging-{os.getpid()}"
    staging.mkdir()  # mode 0o777 minus the umask, as any folder the user makes ...
    mode = staging.stat().st_mode & 0o7777
    os.chmod(staging, 0o700)  # ... but only this user's while it is written: no one else plants a link in it
    try:
        files = {}
        for split in SPLITS:
            for array_name, array in sorted(splits[split].items()):
                name = f"{split}-{array_name}.npy"
                np.save(staging / name, np.ascontiguousarray(array), allow_pickle=False)
                files[name] = _sha256(staging / name)
        baselines = task.baselines(splits, info)
        meta = {
            "format": FORMAT_VERSION,
            "task": cfg.name,
            "config": data_config(cfg),
            "config_hash": config_hash(cfg),
            "seq_len": getattr(cfg, "seq_len", None),
            "sizes": {split: int(len(splits[split]["inputs"])) for split in SPLITS},
            "files": files,
            "metric": task.metric,
            "higher_is_better": task.higher_is_better,
            "baselines": baselines,
            "solve_threshold": task.solve_threshold(baselines),
            "info": info,
            "sources": {str(path): _sha256(path) for path in task.sources(info)},
        }
        meta["meta_sha256"] = _meta_checksum(meta)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.chmod(staging, mode)
        if folder.exists():  # force: replace the old folder (checked to be a dataset) once the new one is complete
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def verify(cfg: TaskConfig, folder: Path) -> dict[str, Any]:
    """Check a dataset folder against its meta.json and the expected config; return the meta."""
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise DataError(
            f"dataset {folder} has no meta.json: it is not a dataset, or an incomplete one. If something else lives "
            f"there (runs sharing --data-dir?), give the data another --data-dir; else {regenerate_hint(cfg, folder)}"
        )
    try:
        meta = files.read_json(meta_path)
    except files.UnreadableFile as e:
        raise DataError(f"{e}; {regenerate_hint(cfg, folder)}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(
            f"{meta_path} has dataset format {found!r}, this lstmlab reads format {FORMAT_VERSION}; "
            f"{regenerate_hint(cfg, folder)}"
        )
    if meta.get("meta_sha256") != _meta_checksum(meta):
        raise DataError(
            f"{meta_path} was changed (its content no longer matches its meta_sha256); {regenerate_hint(cfg, folder)}"
        )
    if meta.get("config") != data_config(cfg):
        raise DataError(f"{meta_path} was written for another task config; {regenerate_hint(cfg, folder)}")
    for name, expected in sorted(meta.get("files", {}).items()):
        path = folder / name
        if not path.exists():
            raise DataError(f"dataset file {path} is missing; {regenerate_hint(cfg, folder)}")
        if _checked_sha256(cfg, folder, path) != expected:
            raise DataError(
                f"dataset file {path} was changed or truncated (sha256 differs from meta.json); "
                f"{regenerate_hint(cfg, folder)}"
            )
    for name, expected in sorted(meta.get("sources", {}).items()):
        path = Path(name)
        if not path.is_file():
            raise DataError(f"source file {path} of dataset {folder} is missing (the dataset was made from it; "
                            f"a relative path is read from the current folder); {regenerate_hint(cfg, folder)}")
        if _checked_sha256(cfg, folder, path) != expected:
            raise DataError(f"source file {path} changed since dataset {folder} was made from it (sha256 differs "
                            f"from meta.json); {regenerate_hint(cfg, folder)}")
    return meta


def _checked_sha256(cfg: TaskConfig, folder: Path, path: Path) -> str:
    try:
        return _sha256(path)
    except files.UnreadableFile as e:
        raise DataError(f"{e}; {regenerate_hint(cfg, folder)}") from None


@dataclass
class Dataset:
    folder: Path
    meta: dict[str, Any]
    spec: TaskSpec
    splits: dict[str, dict[str, np.ndarray]]

    @property
    def nbytes(self) -> int:
        """Bytes of every split's arrays."""
        return sum(array.nbytes for arrays in self.splits.values() for array in arrays.values())


def load(cfg: TaskConfig, data_dir: str | Path, *, generate_missing: bool = True, log=print) -> Dataset:
    """Load (generating first if missing and allowed) and verify the dataset of `cfg`."""
    folder = dataset_dir(cfg, data_dir)
    if not folder.exists():
        if not generate_missing:
            raise DataError(f"dataset {folder} does not exist; generate it with `lstmlab generate-data`")
        generate(cfg, data_dir, log=log)
    meta = verify(cfg, folder)
    splits: dict[str, dict[str, np.ndarray]] = {split: {} for split in SPLITS}
    for name in meta["files"]:
        split, array_name = name.removesuffix(".npy").split("-", 1)
        try:
            splits[split][array_name] = files.load_npy(folder / name)
        except files.UnreadableFile as e:
            raise DataError(f"{e}; {regenerate_hint(cfg, folder)}") from None
    task = make_task(cfg)
    meta["solve_threshold"] = task.threshold(meta["baselines"])  # the user's task.solve_threshold, when set
    spec = task.spec(meta["info"])
    return Dataset(folder=folder, meta=meta, spec=spec, splits=splits)
