"""Character-level language modelling on any text (the default: Python's own standard library source).

`text` lists files, folders (every file below, recursively) or glob patterns; they are read as UTF-8
(undecodable bytes become U+FFFD) in sorted path order and joined with a newline. With no `text`, the
source is the `.py` files of the running Python's standard library (`sysconfig.get_paths()["stdlib"]`,
without `test`/`tests`/`idlelib` folders and `site-packages`), in sorted order: no data to supply and
nothing to download. The standard library differs between Python versions, so this default dataset
differs between machines: `info` records the Python version, the files read and a hash of their
names and sizes, and the checksums still protect a folder once written. The files read are the task's
sources: a dataset whose text files changed since it was made is refused (editing a source file does not
change the task config), so delete the dataset folder to regenerate it from the new text.

The text is read up to the characters the splits need and cut into three contiguous chunks, train
then val then test; each chunk of n · seq_len + 1 characters gives n windows of seq_len + 1 characters
(stride seq_len), whose first seq_len characters are the inputs and last seq_len the targets. The
vocabulary is the sorted set of characters of the train chunk; id 0 is <unk>, which stands for
characters seen only in val or test. One window, seq_len = 8, from the text "def f(x):\\n":

    inputs   d e f ␣ f ( x )
    targets  e f ␣ f ( x ) :

Metric: bits per character on the test split (cross-entropy in nats / ln 2), lower is better.
Baselines: "trivial", the uniform guess over the vocabulary, log2(V); "unigram", the entropy of the test
split's character frequencies (what a model that ignores context can at best reach).
Solved: test bits per character below half the unigram entropy — context removes at least half of the
per-character uncertainty (about 2.2 bits on the default standard-library text, whose unigram entropy is
about 4.3–4.5 bits).
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import platform
import sysconfig
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

import lstmlab.files
from lstmlab.errors import DataError
from lstmlab.tasks.base import Splits, Task, TaskConfig, TaskSpec

UNK = "<unk>"
STDLIB_SKIP = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__"}


class CharLMConfig(TaskConfig):
    name: Literal["charlm"] = "charlm"
    text: list[str] = Field(
        default_factory=list,
        description="Text files, folders or glob patterns to read. Empty: the Python standard library's .py files.",
    )
    seq_len: int = Field(100, ge=1, description="Characters per window (inputs and targets are shifted by one).")
    n_train: int = Field(5_000, ge=1, description="Training windows (n_train · seq_len characters of text).")
    n_val: int = Field(250, ge=1, description="Validation windows, cut after the training text.")
    n_test: int = Field(250, ge=1, description="Test windows, cut after the validation text.")


def stdlib_files() -> list[Path]:
    """The standard library's .py files, in sorted order, without its tests and installed packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in STDLIB_SKIP]  # prune: never walk site-packages
        files += [Path(folder) / name for name in names if name.endswith(".py")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def text_files(patterns: list[str]) -> list[Path]:
    """Expand files, folders and globs to a sorted list of files; a pattern that matches nothing is an error."""
    files: set[Path] = set()
    for pattern in patterns:
        matches = [Path(m) for m in glob.glob(os.path.expanduser(pattern), recursive=True)]
        if not matches:
            raise DataError(f"task.text: {pattern!r} matches no file or folder")
        for match in matches:
            if match.is_dir():
                files.update(p for p in match.rglob("*") if p.is_file())  # a FIFO or device below is skipped
                continue
            try:
                lstmlab.files.check_regular(match)  # a device (/dev/zero) never ends, a FIFO blocks
            except lstmlab.files.UnreadableFile as e:
                raise DataError(f"task.text: {e}") from None
            files.add(match)
    return sorted(files, key=lambda p: p.as_posix())


UNDECODABLE_SHARE = 0.01  # more U+FFFD than this (bytes that are not UTF-8) and a file is not taken as text


def read_text(files: list[Path], n_chars: int) -> tuple[str, list[Path]]:
    """Join files (newline-separated) until `n_chars` characters are read; return the text and files used.

    Each file is read only as far as needed (a UTF-8 character is at most 4 bytes). A file with a NUL byte,
    or with more than 1% of bytes that are not UTF-8 (they become U+FFFD), is refused as not text."""
    parts, used, total = [], [], 0
    for path in files:
        if total >= n_chars:
            break
        limit = 4 * (n_chars - total) + 4
        try:
            data = lstmlab.files.read_bytes(path, limit)
        except lstmlab.files.UnreadableFile as e:
            raise DataError(f"task.text: {e}") from None
        part = data.decode("utf-8", errors="replace")
        if "\0" in part or part.count("\ufffd") > UNDECODABLE_SHARE * len(part):
            raise DataError(f"task.text: {path} is not text (NUL bytes, or more than 1% of it is not UTF-8): "
                            "list text files, or a glob such as corpus/**/*.txt")
        if len(data) < limit:  # the whole file: the newline that joins it to the next
            part += "\n"
        parts.append(part)
        used.append(path)
        total += len(part)
    return "".join(parts)[:n_chars], used


def encode(text: str, vocab: list[str]) -> np.ndarray:
    """Characters -> int64 ids under `vocab` (info["vocab"]); characters outside it map to <unk> (id 0)."""
    index = {ch: i for i, ch in enumerate(vocab)}
    return np.fromiter((index.get(ch, 0) for ch in text), dtype=np.int64, count=len(text))


def decode(ids, vocab: list[str], unk: str = "\ufffd") -> str:
    """Ids -> text under `vocab`; <unk> is written as `unk`."""
    return "".join(unk if i == 0 else vocab[i] for i in np.asarray(ids).reshape(-1).tolist())


def windows(ids: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
    n = (len(ids) - 1) // seq_len
    starts = np.arange(n)[:, None] * seq_len + np.arange(seq_len)[None, :]
    return {"inputs": ids[starts], "targets": ids[starts + 1]}


class CharLMTask(Task):
    name = "charlm"
    Config = CharLMConfig
    metric = "bpc"
    higher_is_better = False
    loss_kind = "cross_entropy"

    cfg: CharLMConfig

    def generate(self) -> tuple[Splits, dict[str, Any]]:
        cfg = self.cfg
        files = text_files(cfg.text) if cfg.text else stdlib_files()
        chunk = {split: n * cfg.seq_len + 1 for split, n in cfg.sizes().items()}
        needed = sum(chunk.values())
        text, used = read_text(files, needed)
        if len(text) < needed:
            source = "task.text" if cfg.text else f"the standard library ({len(files)} files)"
            raise DataError(
                f"{source} holds {len(text):,} characters, but seq_len={cfg.seq_len} with n_train={cfg.n_train}, "
                f"n_val={cfg.n_val}, n_test={cfg.n_test} needs {needed:,}; lower task.n_train (or seq_len) "
                "or give more text"
            )
        cuts = np.cumsum([0] + [chunk[s] for s in ("train", "val", "test")])
        chunks = {s: text[cuts[i] : cuts[i + 1]] for i, s in enumerate(("train", "val", "test"))}
        vocab = [UNK] + sorted(set(chunks["train"]))
        splits = {s: windows(encode(chunks[s], vocab), cfg.seq_len) for s in chunks}
        root = None if cfg.text else Path(sysconfig.get_paths()["stdlib"])
        names = [(p.relative_to(root) if root else p).as_posix() for p in used]
        listing = "\n".join(f"{name}\t{p.stat().st_size}" for name, p in zip(names, used, strict=True))
        info = {
            "vocab": vocab,
            "source": "text" if cfg.text else "stdlib",
            "python": platform.python_version(),
            "n_files": len(used),
            "first_file": names[0],
            "last_file": names[-1],
            "files_sha256": hashlib.sha256(listing.encode()).hexdigest(),
            "chars": len(text),
        }
        return splits, info

    def sources(self, info: dict[str, Any]) -> list[Path]:
        """The files `generate` read: the first n_files of the same sorted listing."""
        files = text_files(self.cfg.text) if self.cfg.text else stdlib_files()
        return files[: info["n_files"]]

    def spec(self, info: dict[str, Any]) -> TaskSpec:
        V = len(info["vocab"])
        return TaskSpec(input_kind="tokens", input_size=V, output_size=V, readout="every")

    def baselines(self, splits: Splits, info: dict[str, Any]) -> dict[str, float]:
        test = splits["test"]["targets"].reshape(-1)
        p = np.bincount(test, minlength=len(info["vocab"])) / test.size
        p = p[p > 0]
        return {"trivial": math.log2(len(info["vocab"])), "unigram": float(-(p * np.log2(p)).sum())}

    def solve_threshold(self, baselines: dict[str, float]) -> float:
        return 0.5 * baselines["unigram"]

    def score(self, output, batch) -> dict[str, tuple[Any, Any]]:
        scores = super().score(output, batch)
        total, n = scores["loss"]
        scores["bpc"] = (total / math.log(2), n)
        return scores
