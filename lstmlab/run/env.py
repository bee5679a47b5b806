"""Provenance: which software ran on which machine, in one place.

`environment()` is what a run folder's env.json holds; `device_name()` names the hardware for run folders
and benchmarks (the CPU's identity, shared with the C++ loop's build cache, is lstmlab.kernels.machine).
`pick_device()` turns train.device into a torch.device. torch is imported inside the functions that need
it, so importing this module stays cheap.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import lstmlab
from lstmlab.errors import UserError
from lstmlab.kernels.machine import cpuinfo_line


def environment(device, backend: str, argv: list[str] | None) -> dict[str, Any]:
    """What ran, where: enough to tell two runs' circumstances apart. `device` is a torch.device."""
    import torch

    source = Path(lstmlab.__file__).resolve().parent.parent
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lstmlab": lstmlab.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "device": str(device),
        "device_name": device_name(device),
        "backend": backend,
        "threads": torch.get_num_threads(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32 if device.type == "cuda" else None,
        "git_sha": git(source, "rev-parse", "HEAD"),
        "git_dirty": git_dirty(source),
        "argv": argv if argv is not None else sys.argv,
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }


def data_source(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Where a run's dataset came from, for env.json's `data`: the data dir (absolute), the dataset's folder
    name in it and the sha256 of its meta.json's content (which holds every file's sha256), so that
    `lstmlab sample` finds the data without --data-dir and can tell the same dataset from a remade one."""
    return {"dir": str(Path(folder).resolve().parent), "dataset": Path(folder).name,
            "meta_sha256": meta.get("meta_sha256")}


def pick_device(name: str):
    """train.device (auto | cpu | cuda) -> the torch.device a run trains on."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda was asked for but no CUDA device is available; valid here: auto, cpu")
    return torch.device(name)


def device_name(device) -> str:
    """The GPU's name for a CUDA device; the CPU's model name otherwise."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    model = cpuinfo_line("model name")
    return model.split(":", 1)[1].strip() if model else platform.processor() or platform.machine()


def git_dirty(cwd: Path) -> bool | None:
    """Whether tracked files differ from HEAD; None outside a git checkout."""
    if git(cwd, "rev-parse", "HEAD") is None:
        return None
    return bool(git(cwd, "status", "--porcelain", "--untracked-files=no"))


def git(cwd: Path, *args: str) -> str | None:
    """`git ARGS` in `cwd` (a checkout), its stdout stripped; None when git or the checkout is missing."""
    if not (cwd / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
