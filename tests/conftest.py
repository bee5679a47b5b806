"""Shared fixtures: tiny configs so that end-to-end tests take seconds on 2 cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lstmlab.tasks import TASKS

TINY = {
    "experiment": "tiny",
    "task": {"name": "adding", "seq_len": 8, "n_train": 256, "n_val": 64, "n_test": 64},
    "model": {"type": "lstm", "layers": 1, "hidden_size": 8},
    # on the CPU even where a GPU is present: these tests assert the CPU's numbers; GPU tests set cuda themselves
    "train": {"steps": 20, "batch_size": 16, "eval_every": 10, "lr": 0.01, "threads": 1, "device": "cpu"},
}


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A tiny adding-problem config written to a file; returns its path."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    return path


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path



def _self_contained(task_class) -> bool:
    return all(not field.is_required() for field in task_class.Config.model_fields.values())


# tasks that make their data from their config alone (the arrays task reads a user's file: tests/test_arrays.py)
SYNTHETIC_TASKS = sorted(name for name, cls in TASKS.items() if _self_contained(cls))


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """Four completed runs (layers 1, 2 × seeds 0, 1) of the tiny config: runs/tiny/<run-name>/. Read only."""
    from typer.testing import CliRunner

    from lstmlab.cli import app

    root = tmp_path_factory.mktemp("study")
    result = CliRunner().invoke(app, ["train", str(write_config(root / "tiny.yaml", TINY)), "-q", "--sweep",
                                      "model.layers=1,2", "--sweep", "train.seed=0,1", "--runs-dir",
                                      str(root / "runs"), "--data-dir", str(root / "data")])
    assert result.exit_code == 0, result.output
    return root / "runs"


class Notifications:
    """A FIFO that runs write their test-hook notifications to (LSTMLAB_TEST_NOTIFY), read with a deadline.

    The test holds the FIFO open for reading and writing, so a run's write never blocks and a read never
    sees end-of-file: `wait` blocks in select() until lines arrive, without polling.
    """

    def __init__(self, path: Path):
        import os

        os.mkfifo(path)
        self.path = path
        self.fd = os.open(path, os.O_RDWR)
        self.buffer = b""

    def env(self, point: str, run: str | None = None) -> dict[str, str]:
        return {"LSTMLAB_TEST_NOTIFY": f"{self.path}@{point}" + (f"@{run}" if run else "")}

    def wait(self, n: int, timeout: float = 180.0) -> list[tuple[int, str, str]]:
        """The first `n` notifications as (pid, run name, point)."""
        import os
        import select
        import time

        deadline = time.monotonic() + timeout
        while self.buffer.count(b"\n") < n:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"{len(self.buffer.splitlines())} of {n} notifications within {timeout} s")
            self.buffer += os.read(self.fd, 65536)
        lines = self.buffer.decode().splitlines()[:n]
        return [(int(pid), run, point) for pid, run, point in (line.split(" ") for line in lines)]

    def close(self) -> None:
        import os

        os.close(self.fd)


@pytest.fixture
def notifications(tmp_path: Path):
    fifo = Notifications(tmp_path / "notify.fifo")
    yield fifo
    fifo.close()
