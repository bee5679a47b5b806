"""Which CPU this is: the key of the C++ loop's build cache (a loop built for one CPU's features must not
be loaded on another) and the name env.json and benchmarks give the hardware (lstmlab.run.env)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name and feature flags, as /proc/cpuinfo writes them (virtual machines often share
    one generic model name, so the flags tell their CPUs apart); `platform.processor()` elsewhere."""
    model, flags = cpuinfo_line("model name"), cpuinfo_line("flags")
    return f"{model}\n{flags}" if model or flags else platform.processor()


def cpuinfo_line(key: str) -> str:
    """The first line of /proc/cpuinfo that starts with `key` (Linux); "" elsewhere or when unreadable."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line for line in lines if line.startswith(key)), "")
