"""What is in a runs folder: one line per run folder, by experiment (`lstmlab runs [PATH]`).

    list_runs(paths) -> [RunLine]        every run folder at or below the paths, by experiment then name
    render(lines, "table" | "json")      a table per experiment with its count line, or a JSON list

Each line says, from the folder's own files (nothing is written, no lock is taken):

    experiment, name   config.yaml's experiment (else the parent folder's name), the folder's name
    status             summary.json's: completed | running | failed | interrupted; `stale` for a run whose
                       summary says running but whose lock no live process holds (killed with -9, or its
                       machine went down: `lstmlab train` again resumes it); `unknown` for a folder whose
                       summary is missing or unreadable (with the reason)
    step, steps        the step reached (the last evaluation in metrics.csv, or summary.json's step) of
                       train.steps
    metric             the task metric's name, the best validation value so far (summary.json's best_val
                       when completed, else the best val row in metrics.csv) and the test value (completed runs)

Whether a lock is held: a run folder's `.lock` is held with flock(2) by the process that trains it
(lstmlab.run.folder), and the kernel drops it when that process dies however it dies. On Linux
/proc/locks lists every lock held on this machine by inode, so looking there tells a live holder from a
stale file without taking the lock (taking it, even for a moment, could make a trainer starting at that
moment skip the run). The lock file's content names the holder's pid and host, and the holder empties it
when it ends: a lock /proc/locks does not list (or a machine without /proc/locks) still counts as held
while the pid it names is alive. A holder on another host cannot be seen from here: its run is shown as
`running` on that host's word, with a note.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lstmlab.errors import UserError
from lstmlab.run.folder import LOCK, RunFolder, find_runs

FORMATS = ("table", "json")
STALE = "stale"  # summary.json says running, but no live process holds the run's lock


@dataclass
class RunLine:
    experiment: str
    name: str
    path: str
    status: str  # completed | running | failed | interrupted | stale | unknown
    step: int | None  # the step reached
    steps: int | None  # the budget, train.steps
    metric: str | None  # the task metric's name
    higher_is_better: bool | None
    best_val: float | None  # best validation value of the metric so far
    test: float | None  # test value of the metric (completed runs)
    holder: str | None = None  # "pid N on host H" while a process holds the lock (or its lock names another host)
    note: str = ""  # why a status is stale or unknown


def list_runs(paths: list[str | Path]) -> list[RunLine]:
    """A RunLine per run folder at or below `paths`, sorted by experiment then by name (numbers in names
    compare as numbers: L2 before L10). UserError when a path does not exist or holds no run folder."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise UserError(f"no such path: {', '.join(missing)}")
    folders = find_runs(list(paths))
    if not folders:
        raise UserError(f"no run folders under {', '.join(map(str, paths))}: a run folder holds a config.yaml "
                        "(`lstmlab train CONFIG --runs-dir DIR` makes them)")
    lines = [read_line(folder) for folder in folders]
    return sorted(lines, key=lambda line: (natural(line.experiment), natural(line.name)))


def read_line(folder: RunFolder) -> RunLine:
    """One run folder's line; a file that cannot be read makes its fields None and says so in `note`."""
    notes = []
    config: dict[str, Any] = {}
    try:
        config = folder.config()
    except UserError as e:
        notes.append(str(e))
    summary: dict[str, Any] = {}
    try:
        summary = folder.summary() or {}
    except UserError as e:
        notes.append(str(e))
    rows: list[dict[str, Any]] = []
    try:
        rows = folder.metrics()
    except UserError as e:
        notes.append(str(e))

    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    experiment = config.get("experiment") if isinstance(config.get("experiment"), str) else None
    metric = summary.get("metric") if isinstance(summary.get("metric"), str) else None
    higher = summary.get("higher_is_better") if isinstance(summary.get("higher_is_better"), bool) else None
    steps = _int(summary.get("steps")) if _int(summary.get("steps")) is not None else _int(train.get("steps"))
    evaluated = [row["step"] for row in rows if isinstance(row.get("step"), int)]
    step = max(evaluated) if evaluated else _int(summary.get("step"))

    status = summary.get("status") if isinstance(summary.get("status"), str) else "unknown"
    state, holder = lock_state(folder.path)
    if status == "running" and state == "free":
        status = STALE
        notes.append("summary.json says running, but no process holds its lock (killed, or its machine went "
                     "down); `lstmlab train` with its config resumes it from its checkpoint")
    if status == "unknown" and state != "free":
        status = "running"  # it holds its lock before its first summary.json write
    elif status == "unknown" and not notes:
        notes.append("no summary.json and no process holds its lock: the run never got past its start")
    if state == "elsewhere":
        notes.append(f"its lock names another host ({holder}), which cannot be checked from here")

    return RunLine(
        experiment=experiment or folder.path.parent.name, name=folder.path.name, path=str(folder.path),
        status=status, step=step, steps=steps, metric=metric, higher_is_better=higher,
        best_val=best_val(summary, rows, metric, higher), test=test_value(summary, metric),
        holder=holder, note="; ".join(notes),
    )  # fmt: skip


def best_val(summary: dict[str, Any], rows: list[dict[str, Any]], metric: str | None,
             higher: bool | None) -> float | None:
    """The best validation value of the metric: summary.json's best_val once written, else the best val row."""
    if metric is None:
        return None
    saved = summary.get("best_val")
    if isinstance(saved, dict) and _number(saved.get(metric)) is not None:
        return _number(saved.get(metric))
    values = [v for v in (_number(row.get(metric)) for row in rows if row.get("split") == "val") if v is not None]
    if not values:
        return None
    return max(values) if higher else min(values)


def test_value(summary: dict[str, Any], metric: str | None) -> float | None:
    if _number(summary.get("test_metric")) is not None:
        return _number(summary.get("test_metric"))
    test = summary.get("test")
    return _number(test.get(metric)) if isinstance(test, dict) and metric else None


# -- the lock: held by a live process, or stale -----------------------------------------------------------


def lock_state(folder: Path) -> tuple[str, str | None]:
    """("held", "pid N on host H") while a live process on this machine holds the run folder's lock,
    ("free", None) when none does, ("elsewhere", "pid N on host H") when the lock names another host (its
    holder cannot be seen from here)."""
    path = folder / LOCK
    try:
        content = path.read_text(errors="replace").strip()
        stat = os.stat(path)
    except OSError:  # no lock file: no process has trained the run here (or it cannot be read)
        return "free", None
    named = re.fullmatch(r"pid (\d+) on host (.+)", content)
    if named and named[2] != socket.gethostname():
        return "elsewhere", content
    held = locked_inodes()
    if held is not None and (os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino) in held:
        return "held", content or "pid unknown: it is starting"
    # not listed (or no /proc/locks): the holder truncates the file when it ends, so a pid left in it is
    # either a live holder on a file system /proc/locks names differently, or one that was killed
    if named and pid_alive(int(named[1])):
        return "held", content
    return "free", None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def locked_inodes() -> set[tuple[int, int, int]] | None:
    """(major, minor, inode) of every file locked on this machine, from /proc/locks; None where there is none.

    A line reads `1: FLOCK  ADVISORY  WRITE 1234 00:2a:56789 0 EOF` (a waiter's adds `->` after the index:
    its file is locked too)."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    held = set()
    for line in text.splitlines():
        for field in line.split():
            parts = field.split(":")
            if len(parts) == 3 and all(re.fullmatch(r"[0-9a-fA-F]+", p) for p in parts):
                major, minor, inode = parts
                held.add((int(major, 16), int(minor, 16), int(inode)))
                break
    return held


# -- rendering --------------------------------------------------------------------------------------------


def counts(lines: list[RunLine]) -> dict[str, dict[str, int]]:
    """Per experiment, runs per status (in STATUS_ORDER)."""
    out: dict[str, dict[str, int]] = {}
    for line in lines:
        out.setdefault(line.experiment, {}).setdefault(line.status, 0)
        out[line.experiment][line.status] += 1
    return {e: {s: by[s] for s in sorted(by, key=status_rank)} for e, by in out.items()}


STATUS_ORDER = ("completed", "running", "interrupted", STALE, "failed", "unknown")


def status_rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


def render(lines: list[RunLine], fmt: str = "table") -> str:
    """`table`: per experiment a count line, then one line per run; `json`: a list of objects (RunLine's fields)."""
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps([asdict(line) for line in lines], indent=2)
    out = []
    for experiment, by_status in counts(lines).items():
        runs = [line for line in lines if line.experiment == experiment]
        total = sum(by_status.values())
        out.append(f"{experiment}: {total} run{'s' if total != 1 else ''} — "
                   + ", ".join(f"{n} {status}" for status, n in by_status.items()))
        table = [("run", "status", "step", "metric", "best val", "test")]
        for line in runs:
            step = f"{_text(line.step)}/{_text(line.steps)}"
            table.append((line.name, line.status, step, line.metric or "—", _fmt(line.best_val), _fmt(line.test)))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            out.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        for line in runs:
            if line.status in (STALE, "unknown") and line.note:
                out.append(f"  {line.name}: {line.note}")
    return "\n".join(out)


def natural(text: str) -> tuple:
    """Sort key: digit runs compare as numbers (L2-lstm-s10 after L2-lstm-s9)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _text(value: Any) -> str:
    return "?" if value is None else str(value)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"
