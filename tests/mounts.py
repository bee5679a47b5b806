"""Real small or read-only file systems for tests: a tmpfs or a read-only bind mount in a private mount
namespace (`unshare -m`, as root), seen only by the one command run inside it; nothing outside changes."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys

import pytest


@functools.cache
def unavailable() -> str | None:
    """Why a private mount namespace cannot be made here (None when it can)."""
    if shutil.which("unshare") is None:
        return "no unshare(1) here"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"no private mount namespace with a tmpfs here (needs root): {probe.stderr.strip()}"
    return None


def need_mounts() -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)


def lstmlab_in(setup: str, *args: str, cwd=None, env=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m lstmlab ARGS` in a private mount namespace after the shell commands `setup` (mounts)."""
    need_mounts()
    script = f'set -e\n{setup}\nexec "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "lstmlab", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def tmpfs(folder, size: str) -> str:
    """Shell: a tmpfs of `size` (e.g. 64k) mounted on `folder`."""
    return f"mount -t tmpfs -o size={size} tmpfs '{folder}'"


def read_only(folder) -> str:
    """Shell: `folder` made read-only (a read-only bind mount of itself)."""
    return f"mount --bind '{folder}' '{folder}'\nmount -o remount,bind,ro '{folder}'"


def shell_in(script: str, *, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """A shell `script` in a private mount namespace ($PYTHON is this interpreter)."""
    need_mounts()
    return subprocess.run(["unshare", "-m", "sh", "-c", f"PYTHON='{sys.executable}'\n{script}"],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)
