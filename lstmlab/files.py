"""Reading files: every file lstmlab reads (configs, run folders' summaries, metrics, checkpoints and
env.json, datasets' meta.json and arrays, text sources) comes through here, so that whatever is wrong with
one — missing, unreadable, a folder, a device or FIFO, binary, truncated, malformed — is an UnreadableFile
that names it, and the command line says so in one line with exit code 2.

    read_bytes(path, limit=None)   regular files only (never blocks on a FIFO, never reads /dev/zero)
    read_text(path)                UTF-8, no NUL bytes
    read_yaml(path) / load_yaml(text)   YAML 1.2 floats (3e-4 is a number), duplicate keys refused
    read_json(path)                JSON
    load_npy(path)                 a .npy array, no pickles
    load_torch(path, map_location) a torch.save file, weights only

and every folder it writes into is made by `make_folder`, which says which folder cannot be made or
written, and which flag chose it. A file opened for writing in place inside a run or data folder (a lock, an
appended CSV) is opened by `open_for_writing`, which never follows a symbolic link planted there and refuses
anything but a regular file with one name; files replaced whole are written beside and renamed over
(`os.replace` replaces a link, it does not write through it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from lstmlab.errors import UserError


class UnreadableFile(UserError):
    """A file that cannot be read as what it should be; `path` is the file and the message names it."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


class UnwritableFolder(UserError):
    """A folder lstmlab must write into cannot be made or written; the message names it and the flag."""


def make_folder(path: str | Path, flag: str = "") -> Path:
    """Make `path` (and its parents) unless it exists, and check that it can be written."""
    path = Path(path)
    where = f" (chosen by {flag})" if flag else ""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if path.exists() and not path.is_dir():
            raise UnwritableFolder(f"cannot make the folder {path}{where}: a file of that name is there") from None
        culprit = f": {e.filename}" if e.filename and str(e.filename) != str(path) else ""
        raise UnwritableFolder(f"cannot make the folder {path}{where}: {os_problem(e)}{culprit}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UnwritableFolder(f"cannot write into the folder {path}{where}: permission denied")
    return path


class UnwritableFile(UserError):
    """A file lstmlab must write in place is a symbolic link, a FIFO, a hard link or cannot be opened."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)


_KINDS = {stat.S_ISDIR: "a folder", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
          stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket"}


def os_problem(error: OSError) -> str:
    """'No such file or directory' and the like: the part of an OSError that is not the path."""
    return error.strerror or type(error).__name__


def check_regular(path: str | Path) -> os.stat_result:
    """The stat of `path`, which must exist and be a regular file (following symlinks)."""
    try:
        info = os.stat(path)
    except OSError as e:
        raise UnreadableFile(path, f"cannot be read ({os_problem(e)})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS.items() if test(info.st_mode)), "not a regular file")
        raise UnreadableFile(path, f"is {kind}, not a file")
    return info


def open_for_writing(path: str | Path, flags: int, mode: int = 0o666) -> int:
    """`os.open(path, flags, mode)` for a file written in place inside a run or data folder, where others may
    plant names: O_NOFOLLOW refuses a symbolic link (ELOOP) instead of writing its target, O_NONBLOCK keeps a
    FIFO from blocking the open, and the file opened must be a regular file with one name (a hard link to a
    file elsewhere is refused too). Returns a blocking file descriptor; UnwritableFile naming `path` else."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        try:
            info = os.lstat(path)
        except OSError:
            info = None
        if e.errno == errno.ELOOP or (info is not None and stat.S_ISLNK(info.st_mode)):
            raise UnwritableFile(path, "is a symbolic link; lstmlab writes only its own regular files here and never "
                                       "through a link (remove the link)") from None
        if info is not None and not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS.items() if test(info.st_mode)), "not a regular file")
            raise UnwritableFile(path, f"is {kind}, not a file lstmlab wrote (remove it)") from None
        raise UnwritableFile(path, f"cannot be written ({os_problem(e)})") from None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = f"is {next((n for t, n in _KINDS.items() if t(info.st_mode)), 'not a regular file')}"
    elif info.st_nlink > 1:
        problem = f"is a hard link ({info.st_nlink} names for one file)"
    if problem:
        os.close(fd)
        raise UnwritableFile(path, f"{problem}, not a file lstmlab wrote; lstmlab does not write through it "
                                   "(remove it)")
    os.set_blocking(fd, True)
    return fd


@contextlib.contextmanager
def naming(path: str | Path):
    """Re-raise an OSError of the block that names no file (a write's ENOSPC does not) with `path` as its
    filename, so that 'No space left on device' says where."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_hint(error: BaseException) -> str:
    """What to do about a full disk (or quota) `error`, to follow its message; '' for any other error."""
    if not isinstance(error, OSError) or error.errno not in DISK_FULL:
        return ""
    where = f" holding {Path(error.filename).parent}" if error.filename else ""
    return (f"; the disk{where} is full: free space on it and run the same command again, and the run resumes "
            "from its last checkpoint (or starts over if it has none)")


def read_bytes(path: str | Path, limit: int | None = None) -> bytes:
    """The file's bytes (its first `limit` bytes when given)."""
    check_regular(path)
    try:
        with open(path, "rb") as f:
            return f.read() if limit is None else f.read(limit)
    except OSError as e:
        raise UnreadableFile(path, f"cannot be read ({os_problem(e)})") from None


def decode(path: str | Path, data: bytes) -> str:
    """Strict UTF-8 without NUL bytes: a binary file is refused, not read as noise."""
    nul = data.find(b"\0")
    if nul >= 0:
        raise UnreadableFile(path, f"is not a text file (a NUL byte at offset {nul}: binary data?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnreadableFile(path, f"is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}: "
                                   "binary data, or another encoding?)") from None


def read_text(path: str | Path) -> str:
    return decode(path, read_bytes(path))


class _Loader(yaml.SafeLoader):
    """YAML with 1.2's floats (`3e-4` is a number; PyYAML's YAML 1.1 reads it as a string), and no key twice
    in one mapping (where YAML 1.1 loaders let the last one silently win)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


MAX_YAML_VALUES = 100_000  # values that aliases may add to a YAML document, counted at each use


def _alias_values(root: yaml.Node) -> int:
    """How many values the aliases of `root` add once expanded: the nodes it stands for, counted at each use,
    minus the nodes written. Memoised per node, so counting is linear in the nodes written; an alias inside
    the node it names (a recursive document) counts as endless."""
    endless = 10**30
    sizes: dict[int, int | None] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            known = sizes[id(node)]
            return endless if known is None else known  # None: still being counted
        sizes[id(node)] = None
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(key) + size(value) for key, value in node.value)
        else:
            total = 1
        sizes[id(node)] = min(total, endless)
        return sizes[id(node)]

    return size(root) - len(sizes)


def _compose_document(self):
    """Refuse a document whose aliases add more than MAX_YAML_VALUES values (a 'billion laughs' bomb) before
    any of it is built: expanded, nine levels of nine aliases are 9^9 values."""
    node = yaml.composer.Composer.compose_document(self)
    if node is not None and _alias_values(node) > MAX_YAML_VALUES:
        raise yaml.composer.ComposerError(None, None, f"its aliases expand to more than {MAX_YAML_VALUES:,} "
                                          "values (an alias bomb?); write the values out", node.start_mark)
    return node


_Loader.compose_document = _compose_document
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text (yaml.YAMLError when it is not YAML)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def yaml_problem(error: yaml.YAMLError) -> str:
    """'invalid YAML at line 3, column 5: found duplicate key ...' from a YAML error."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"invalid YAML{where}: {problem}"


def read_yaml(path: str | Path) -> Any:
    try:
        return load_yaml(read_text(path))
    except yaml.YAMLError as e:
        raise UnreadableFile(path, yaml_problem(e)) from None


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UnreadableFile(path, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def load_npy(path: str | Path):
    import numpy as np

    check_regular(path)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UnreadableFile(path, f"cannot be read as a .npy array ({str(e).splitlines()[0]})") from None


def load_torch(path: str | Path, map_location: Any = "cpu") -> Any:
    import pickle

    import torch

    check_regular(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise UnreadableFile(path, f"cannot be read as a checkpoint (truncated or not one: {e})") from None
        # torch's message goes on to advise weights_only=False: for a file of unknown origin that runs its code
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = next((line for line in lines[1:] if "weights_only" not in line
                       and not line.startswith("Check the documentation")), "objects other than tensors")
        raise UnreadableFile(path, f"refused: it holds Python objects that no lstmlab checkpoint holds ({detail}); "
                                   "lstmlab loads checkpoints as weights only, so no code in a file runs") from None
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise UnreadableFile(path, f"cannot be read as a checkpoint (truncated or not one: "
                                   f"{str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
