"""Run folders: one per trained run, written so that a crash never leaves a half-written file behind,
and locked so that two processes never train one run side by side.

    <runs-dir>/<experiment>/<run-name>/
      config.yaml    resolved config of this run (pass it back to `lstmlab train` to run it again)
      env.json       versions, device, kernel backend, git sha + dirty flag, argv, host
      metrics.csv    one row per evaluation and split; rows are appended whole and flushed to disk
      summary.json   status (running | completed | failed | interrupted), params, metrics, baseline, and
                     "format": the run folder's format version (FORMAT, below)
      checkpoint.pt  model + optimizer + scheduler + RNG state + step + the sha256 of the resolved config
      diagnostics.csv  optional (train.diagnostics_every): gradient flow and gate statistics every N steps,
                     written like metrics.csv (lstmlab.run.diagnostics)
      .lock          the run's lock file (its content: the pid and host of the process that holds it)

Files that are replaced (config, env, summary, checkpoint) are written to a temporary file and renamed
over the old one, so a reader sees the old or the new file, never a mix.

How a trainer uses a folder (every guarantee below lives here, not in the training loop):

    run = RunFolder(path)
    with run.lock():                       # RunBusy when another process holds it: skip the run
        state = run.prepare(config, restart=restart)   # "new" | "resume" | "completed", or RunRefused
        if state == "resume":
            ckpt = run.load_checkpoint(config=config)  # RunRefused when it belongs to another config
        run.truncate_metrics(ckpt_step)                  # rows the resumed run will redo go, and any test row
        ... run.save_checkpoint(state, config=config) at each evaluation ...
        run.complete(test_row, columns, summary)        # the one transition to `completed`

- The lock is `fcntl.flock` on `.lock`: the kernel releases it when its holder exits, however it exits
  (kill -9 included), so a stale lock never blocks a rerun. It is held for the whole run; a pack of runs
  trained together holds one lock per member (`contextlib.ExitStack`).
- `prepare` refuses a folder that holds another run: files without a config.yaml, or a config.yaml of
  another config (unless `restart`, which clears the folder first). A checkpoint records the sha256 of the
  resolved config it was saved under; `load_checkpoint(config=...)` refuses one saved under another.
- A run is completed when, and only when, summary.json says `completed`: `complete` appends the test row
  and then replaces summary.json, and that rename is the commit point. A test row found in a folder whose
  summary is not `completed` is left over from a run killed between the two writes; `truncate_metrics`
  (called on every resume) discards it, so the rerun writes exactly one.

Formats (summary.json's "format"; every summary this module writes says FORMAT, the current one):
  1  folders without "format": those written before it existed. Their summaries hold what their version
     wrote; a reader derives what is missing (the metric and its direction from the task registry, the test
     metric from metrics.csv's test row, the best validation metric from its val rows, `solved` from the
     solve threshold), and a checkpoint may lack best weights.
  2  "format": 2. A completed summary always holds task, metric, higher_is_better, params, best_val,
     test_metric and solved, and every checkpoint saved after the first evaluation holds the best weights
     so far (one saved before it, when a run is stopped early, says so: its best step is null): a reader
     takes them as written, and a file that lacks one is damaged, not old. A later format only adds fields.
Reading (a read-only view for compare, inspect, sample and the exporters) is lstmlab.run.reader.

Test hooks (for deterministic kill and Ctrl-C tests; inert unless the variables are set):
  LSTMLAB_TEST_NOTIFY=<file>@<point>[@<run name>]   appends "<pid> <run name> <point>" to a file (or
                                                    FIFO) at that point
  LSTMLAB_TEST_SIGNAL=<INT|TERM|KILL|STOP>@<point>[@<run name>]   then the process signals itself
  Points: `step=N` (the step boundary after N optimizer steps) and `complete` (after the test row is
  appended, before summary.json says completed).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import secrets
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lstmlab import files
from lstmlab.config import get_dotted
from lstmlab.errors import UserError

if TYPE_CHECKING:
    from lstmlab.config import ExperimentConfig

STATUSES = ("running", "completed", "failed", "interrupted")
CONFIG, ENV, METRICS, SUMMARY, CHECKPOINT = "config.yaml", "env.json", "metrics.csv", "summary.json", "checkpoint.pt"
DIAGNOSTICS = "diagnostics.csv"  # a second table of rows by step, read and written like metrics.csv
LOCK = ".lock"
RUN_FILES = (CONFIG, ENV, METRICS, SUMMARY, CHECKPOINT, DIAGNOSTICS)
FORMAT = 2  # the run folder format this version writes (summary.json "format"); see the module docstring
FORMAT_UNMARKED = 1  # the format of a folder whose summary.json has no "format"
NOT_SCALARS = ("step", "split")  # metrics.csv columns that place a row rather than measure something


if hasattr(yaml, "CSafeLoader"):
    class _RunConfigLoader(yaml.cyaml.CParser, files._Loader):
        """lstmlab's YAML rules (files: YAML 1.2 floats, no key twice) on libyaml's parser, about eight times
        faster than the pure-Python one: compare reads thousands of config.yaml files, and that parse was
        most of its time. User configs keep the pure-Python parser, whose error messages say more."""

        def __init__(self, stream):
            yaml.cyaml.CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
else:  # PyYAML without libyaml
    _RunConfigLoader = files._Loader


def run_name(cfg: ExperimentConfig, swept_keys: tuple[str, ...] = ()) -> str:
    """`L2-scratch-lstm-s0`, plus `-<key><value>` for every other swept key."""
    name = f"L{cfg.model.layers}-{cfg.model.type}-s{cfg.train.seed}"
    raw = cfg.model_dump(mode="json")
    for key in swept_keys:
        if key in ("model.layers", "model.type", "train.seed"):
            continue
        name += f"-{key.split('.')[-1]}{get_dotted(raw, key)}"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


class RunBusy(Exception):
    """Another live process holds this run folder's lock: the run is being trained there."""

    def __init__(self, path: Path, owner: str):
        super().__init__(f"{path} is being trained by another process ({owner}); skipped")
        self.path = path


class RunInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM stopped a run, or a sweep; `signal` is the signal's name ("SIGTERM")."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal = signal_name


class RunRefused(UserError):
    """The folder holds another run (no config.yaml, another config, or a checkpoint of another config)."""


def config_sha256(config: dict[str, Any]) -> str:
    """sha256 of a resolved config (a `model_dump(mode="json")` dict) in canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a new file beside `path`, then rename it over `path`: a reader sees the old file or the
    new one, never half of one. The new file gets the mode any file the user makes gets (0o666 minus the
    umask), so a run folder in a shared runs dir is as readable as the user's umask allows; mkstemp's 0o600
    would hide config.yaml and summary.json from the others that compare the study."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)  # the umask applies
    try:
        with files.naming(path), os.fdopen(fd, "wb") as f:  # ENOSPC names the file
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- claiming the folder for a run --------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[RunFolder]:
        """Hold this folder's lock until the block ends (creating the folder); RunBusy when another
        process, or another block of this one, holds it. The kernel drops the lock if this process dies."""
        import fcntl

        files.make_folder(self.path, "--runs-dir")
        fd = files.open_for_writing(self.path / LOCK, os.O_RDWR | os.O_CREAT)  # never through a planted link
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "pid unknown: it is starting"
                raise RunBusy(self.path, owner) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}".encode(), 0)
            try:
                yield self
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the file releases the lock

    def prepare(self, config: dict[str, Any], *, restart: bool = False) -> str:
        """With the lock held: may `config` run here? Returns "new", "resume" (a checkpoint to load) or
        "completed"; raises RunRefused when the folder holds another run. `restart` clears it first.
        Temporary files left by a writer that was killed are removed."""
        for leftover in self.path.glob(".*.*"):
            if any(leftover.name.startswith(f".{name}.") for name in RUN_FILES):
                leftover.unlink(missing_ok=True)
        if restart:
            self.clear()
            return "new"
        links = [name for name in RUN_FILES if (self.path / name).is_symlink()]  # planted: never read or written
        if links:
            raise RunRefused(f"{self.path / links[0]} is a symbolic link: lstmlab reads and writes a run folder's "
                             "own files only, never through a link; remove it, or pass --restart")
        present = [name for name in RUN_FILES if (self.path / name).exists()]
        if not present:
            return "new"
        hint = "pass --restart to replace it, or pick another experiment name (--set experiment=NAME)"
        if CONFIG not in present:
            raise RunRefused(f"run folder {self.path} holds {', '.join(present)} but no {CONFIG}, so which "
                             f"config it ran is unknown; {hint}")
        try:
            saved = self.config()
        except files.UnreadableFile as e:
            raise RunRefused(f"{e}; {hint}") from None
        if saved != config:
            raise RunRefused(f"run folder {self.path} holds a run of a different config; {hint}")
        if self.status() == "completed":
            return "completed"
        return "resume" if self.has_checkpoint() else "new"

    # -- reading ------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / CONFIG).exists()

    # Every read goes through lstmlab.files: a file that cannot be read as what it should be raises
    # UnreadableFile (a UserError) naming it.
    def config(self) -> dict[str, Any]:
        """config.yaml as a mapping (UnreadableFile when it is not YAML or not a mapping)."""
        path = self.path / CONFIG
        try:
            config = yaml.load(files.read_text(path), Loader=_RunConfigLoader)  # noqa: S506 (a safe loader)
        except yaml.YAMLError as e:
            raise files.UnreadableFile(path, files.yaml_problem(e)) from None
        if not isinstance(config, dict):
            raise files.UnreadableFile(self.path / CONFIG, "is not a mapping of sections (a run's config)")
        return config

    def summary(self) -> dict[str, Any] | None:
        """summary.json, or None when there is none yet."""
        return self._json(SUMMARY)

    def status(self) -> str | None:
        summary = self.summary()
        return summary.get("status") if summary else None

    def env(self) -> dict[str, Any] | None:
        return self._json(ENV)

    def _json(self, name: str) -> dict[str, Any] | None:
        path = self.path / name
        if not path.exists():
            return None
        value = files.read_json(path)
        if not isinstance(value, dict):
            raise files.UnreadableFile(path, "is not a JSON object")
        return value

    def metrics(self, name: str = METRICS) -> list[dict[str, Any]]:
        """Complete rows of metrics.csv (or `name`), numbers parsed; a trailing partial line is ignored, and so
        is a row with more or fewer cells than the header (not a row this module wrote: it writes whole rows)."""
        path = self.path / name
        if not path.exists():
            return []
        text = files.read_text(path)
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        try:
            lines = csv.reader(io.StringIO(text))
            header = next(lines, [])
            if header and not {"step", *(["split"] if name == METRICS else [])} <= set(header):
                raise files.UnreadableFile(path, f"its first line ({','.join(header)[:60]}) is not the header lstmlab "
                                           "writes (step, split, ...): the file was changed by hand or damaged; "
                                           "pass --restart to train the run again")
            return [dict(zip(header, map(_number, row), strict=True)) for row in lines if len(row) == len(header)]
        except csv.Error as e:
            raise files.UnreadableFile(path, f"is not a CSV table ({e})") from None

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).exists()

    def load_checkpoint(self, map_location: Any = "cpu", *, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """The checkpoint; with `config`, RunRefused unless it was saved under that resolved config."""
        path = self.path / CHECKPOINT
        try:
            state = files.load_torch(path, map_location)
        except files.UnreadableFile as e:
            raise RunRefused(f"{e}; pass --restart to start the run over") from None
        if not isinstance(state, dict) or "step" not in state:
            raise RunRefused(f"{path}: not an lstmlab checkpoint (no step); pass --restart to start the run over")
        saved = state.get("config_sha256")
        if config is not None and saved is not None and saved != config_sha256(config):
            raise RunRefused(f"{path} was saved under another config than this run's; "
                             "pass --restart to start the run over")
        return state

    # -- writing ------------------------------------------------------------------------------------
    def write_config(self, yaml_text: str) -> None:
        atomic_write_text(self.path / CONFIG, yaml_text)

    def write_env(self, env: dict[str, Any]) -> None:
        atomic_write_json(self.path / ENV, env)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Replace summary.json with `summary`, stamped `"format": FORMAT` (first): this version wrote it, so it
        holds what FORMAT promises, whatever format the summary it was made from said."""
        assert summary.get("status") in STATUSES, summary.get("status")
        summary = {k: v for k, v in summary.items() if k != "format"}
        atomic_write_json(self.path / SUMMARY, {"format": FORMAT, **summary})

    def complete(self, test_row: dict[str, Any], columns: list[str], summary: dict[str, Any]) -> None:
        """The transition to `completed`: append the test row, then replace summary.json (the commit point).
        A kill between the two leaves a test row that the next resume discards (`truncate_metrics`)."""
        if summary.get("status") != "completed":
            raise ValueError(f"complete() needs a summary with status 'completed', not {summary.get('status')!r}")
        self.append_metrics([test_row], columns)
        fire_test_hooks("complete", self.path.name)
        self.write_summary(summary)

    def save_checkpoint(self, state: dict[str, Any], *, config: dict[str, Any]) -> None:
        """Replace the checkpoint with `state`, stamped with the sha256 of the run's resolved `config`."""
        import torch

        buffer = io.BytesIO()
        torch.save({**state, "config_sha256": config_sha256(config)}, buffer)
        atomic_write_bytes(self.path / CHECKPOINT, buffer.getvalue())

    def append_metrics(self, rows: list[dict[str, Any]], columns: list[str], name: str = METRICS) -> None:
        """Append whole rows (header first if the file is new) and flush them to disk.

        A column of `columns` or of the rows that the file's header lacks (an edited file, or one an
        earlier version wrote) is added to the header first, blank in the rows already there: no value
        is dropped."""
        path = self.path / name
        wanted = [*columns, *(k for row in rows for k in row)]
        columns = self.metrics_columns(name) or list(columns)
        missing = [k for k in wanted if k not in columns]
        if missing:
            columns += list(dict.fromkeys(missing))
            self._rewrite_metrics(name, self.metrics(name), columns)
        new = not path.exists() or path.stat().st_size == 0
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _format(row.get(k)) for k in columns})
        fd = files.open_for_writing(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with files.naming(path), os.fdopen(fd, "a") as f:  # one write of whole lines; ENOSPC names the file
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())

    def metrics_columns(self, name: str = METRICS) -> list[str] | None:
        """The header of metrics.csv (or `name`); None when there is no complete header line."""
        path = self.path / name
        if not path.exists():
            return None
        header, newline, _ = files.read_text(path).partition("\n")
        return header.strip().split(",") if newline else None

    def truncate_metrics(self, last_step: int, name: str = METRICS) -> None:
        """Keep only complete rows up to `last_step` (the checkpoint's): what a resumed run will redo goes,
        and so does a test row (a run that is resumed did not complete: its test row was never committed)."""
        path = self.path / name
        if not path.exists():
            return
        columns = self.metrics_columns(name)
        if columns is None:
            path.unlink()
            return
        rows = [row for row in self.metrics(name)
                if isinstance(row.get("step"), int) and row["step"] <= last_step and row.get("split") != "test"]
        self._rewrite_metrics(name, rows, columns)

    def _rewrite_metrics(self, name: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _format(row.get(k)) for k in columns})
        atomic_write_text(self.path / name, buffer.getvalue())

    def clear(self) -> None:
        """Remove this run's files (for --restart)."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)


def _format(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest round-tripping form: rows read back equal
    return value


def _number(text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def find_runs(paths: list[str | Path]) -> list[RunFolder]:
    """Run folders at or below each path (a folder with a config.yaml), sorted, without duplicates."""
    found: dict[Path, RunFolder] = {}
    for root in map(Path, paths):
        if (root / CONFIG).exists():
            found[root.resolve()] = RunFolder(root)
            continue
        for config in sorted(root.rglob(CONFIG)):
            found[config.parent.resolve()] = RunFolder(config.parent)
    return [found[k] for k in sorted(found)]


TEST_SIGNAL, TEST_NOTIFY = "LSTMLAB_TEST_SIGNAL", "LSTMLAB_TEST_NOTIFY"


def fire_test_hooks(point: str, run_name: str) -> None:
    """Fire the test hooks set for `point` in this run (see the module docstring); a no-op when none is set."""
    for variable in (TEST_NOTIFY, TEST_SIGNAL):
        spec = os.environ.get(variable)
        if not spec:
            continue
        what, _, where = spec.partition("@")
        at, _, only = where.partition("@")
        if at != point or (only and only != run_name):
            continue
        if variable == TEST_NOTIFY:
            with open(what, "a") as f:  # a FIFO blocks here until the test reads it
                f.write(f"{os.getpid()} {run_name} {point}\n")
        else:
            os.kill(os.getpid(), getattr(signal, f"SIG{what}"))


# -- a run folder's contents as flat names: dotted config keys, <split>/<column> scalars ------------------


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"layers": 2}} -> {"model.layers": 2}; lists stay values (`task.text`)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def as_text(value: Any) -> str:
    """A config value as YAML would write it inline: null, true, 0.001, [a, b]."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


# metrics.csv columns that describe the training at that step, not a split: every row of a step repeats them
# (a test row carries the last lr and the clock at the end), so they are logged once, from the train rows
PROGRESS = ("epoch", "lr", "grad_norm", "elapsed_s", "seq_per_s")


def scalars(rows: list[dict[str, Any]]) -> Iterator[tuple[str, int, float]]:
    """(tag, step, value) for the numeric cells of metrics.csv rows, each quantity once, where it means
    something: `<split>/<column>` for what is measured on a split (loss and the task's metric: `val/loss`,
    `test/mse`), and `train/<column>` for the PROGRESS columns (`train/lr`, `train/grad_norm`,
    `train/elapsed_s`), taken from the train rows only (never `val/lr` or `test/elapsed_s`)."""
    for row in rows:
        step, split = row.get("step"), row.get("split")
        if not isinstance(step, int) or not isinstance(split, str):
            continue
        for column, value in row.items():
            if column in NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if column in PROGRESS and split != "train":
                continue
            yield f"{split}/{column}", step, float(value)
