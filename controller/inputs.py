"""Reading input files and directories: bounded, regular files only, every failure a value.

One walker and one reader serve every front-end (`validate`, `render`, `plan`, `apply DIR` and the
daemon), so they agree on which files count and on what an unreadable one means:

- `scan(root)` lists the watched files below `root` (`*.yaml`/`*.yml`, outside hidden directories and
  Helm charts, no editor leftovers) and every directory it could not list, with why. A directory that cannot be
  listed is never an empty directory.
- `read_text(path)` reads one file, after resolving symbolic links (a loop is an error), only if it
  is a regular file (a FIFO, a device or `/dev/zero` behind a link is refused, so a read can never
  block or run forever) and no larger than a limit checked before reading and again while reading
  (a file can grow). Every failure is a `ReadError` saying what is wrong and what to do.
- `is_gone(path)` is the only positive evidence that a file was removed: its name is absent
  (`lstat` says ENOENT or ENOTDIR). A permission error, a descriptor limit or any other error says
  nothing about the file and is not evidence.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

YAML_SUFFIXES = (".yaml", ".yml")
HELM_CHART_FILE = "Chart.yaml"  # a directory holding one is a Helm chart: templates, not manifests
MAX_FILE_BYTES = 1024 * 1024  # the default size limit of one input file
_CHUNK = 64 * 1024


def skipped(name: str) -> bool:
    """Hidden files and directories and editor leftovers (`.x.yaml.swp`, `.#x.yaml`, `x.yaml~`, `#x.yaml#`)."""
    return name.startswith((".", "#")) or name.endswith(("~", "#"))


def is_watched(path: Path, root: Path) -> bool:
    """A `*.yaml`/`*.yml` file below `root`, outside hidden directories, not an editor's leftover:
    the files every command reads from a directory."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return False
    return bool(parts) and not any(map(skipped, parts)) and parts[-1].endswith(YAML_SUFFIXES)


@dataclass(frozen=True)
class Listing:
    """What a walk of the directory tree found, and the directories it could not read."""

    files: list[Path]
    unreadable: dict[Path, str]  # directory -> why (missing, permission denied, too many open files, ...)
    charts: list[Path] = field(default_factory=list)  # Helm chart directories, not read

    def hides(self, path: Path) -> bool:
        """`path` lies below a directory that could not be listed: nothing is known about it."""
        return any(path.is_relative_to(directory) for directory in self.unreadable)


def scan(root: Path) -> Listing:
    """Every watched file below `root`, sorted by path, and every directory that could not be listed
    (`root` itself when it is missing or unreadable: os.walk alone would report an empty tree).
    Symbolic links to directories are not followed; links to files are listed (and resolved when read).
    A Helm chart (a directory holding Chart.yaml, `root` included) is not read: its templates are not
    manifests until `helm template` renders them."""
    found: list[Path] = []
    unreadable: dict[Path, str] = {}
    charts: list[Path] = []

    def failed(error: OSError) -> None:
        unreadable[Path(error.filename) if error.filename else root] = describe_os_error(error)

    for directory, dirs, files in os.walk(root, onerror=failed):
        if HELM_CHART_FILE in files:
            charts.append(Path(directory))
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not skipped(d))
        found += [Path(directory, name) for name in files if is_watched(Path(directory, name), root)]
    return Listing(sorted(found), unreadable, sorted(charts))


class ReadError(Exception):
    """A file that could not be read; `str()` says why and what to do."""


def describe_os_error(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "a symbolic link loop: fix the link or remove it"
    if error.errno == errno.EMFILE or error.errno == errno.ENFILE:
        return f"{error.strerror} (the process's open file limit; raise LimitNOFILE or ulimit -n)"
    return error.strerror or str(error)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _refuse(mode: int) -> ReadError:
    return ReadError(
        f"{_kind(mode)}, not a regular file: only regular files are read (remove it, or rename it so that "
        "it does not end in .yaml or .yml)"
    )


def _too_large(size: str, limit: int) -> ReadError:
    return ReadError(
        f"too large: {size}, more than the limit of {limit} bytes; split it into smaller files "
        "(localmodel watch --max-file-size raises the limit)"
    )


def read_bytes(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The content of the regular file at `path` (links resolved), at most `limit` bytes; else ReadError."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise ReadError(f"a symbolic link to a missing file ({os.readlink(path)})") from None
        if exc.errno == errno.ELOOP:
            raise ReadError(describe_os_error(exc)) from None
        raise ReadError(f"cannot read: {describe_os_error(exc)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(info.st_mode)
    if info.st_size > limit:
        raise _too_large(f"{info.st_size} bytes", limit)
    try:
        # O_NONBLOCK: should a FIFO replace the file between the stat and the open, the open returns at once.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ReadError(f"cannot read: {describe_os_error(exc)}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _refuse(info.st_mode)
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, _CHUNK):
            size += len(chunk)
            if size > limit:
                raise _too_large("it grew while it was read", limit)
            chunks.append(chunk)
    except OSError as exc:
        raise ReadError(f"cannot read: {describe_os_error(exc)}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_text(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """`read_bytes` decoded as UTF-8 (a byte-order mark dropped); ReadError when it is not UTF-8."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ReadError("not UTF-8 text: save the file as UTF-8") from None


def is_gone(path: Path) -> bool | None:
    """True when `path` positively does not exist (its name is absent, or a parent is no longer a
    directory); False when it exists; None when that cannot be known (permission denied on a
    parent, too many open files, an I/O error): no evidence either way."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return None
    return False
