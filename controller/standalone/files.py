"""The LocalModels a directory declares, kept safe from editors, partial writes and broken files.

`ModelFiles` remembers, per file, the last good version of each LocalModel it declared, and turns a
directory into one set of LocalModels by name. The rules that keep a running daemon from deleting
models by accident:

- A change is read as a whole: every changed file is re-read before the new set is computed, so a
  LocalModel that moved from one file to another (or a file renamed) is not a delete.
- A file with errors (YAML syntax, an invalid spec, a name declared twice in it) never removes
  anything: its valid LocalModels are taken as they are now, the others keep their last good version.
- A file that loses LocalModels (emptied, truncated, deleted) is believed only when a second read,
  at least `settle` seconds later, still shows the loss. Until then its previous models stay.
- A directory that cannot be listed (the root unmounted or removed for a re-clone, permission
  denied) is reported as an error and removes nothing below it until it can be read again.
- A name declared in two files stays with the file that declared it first (the one already applied);
  the other declaration is reported as a duplicate with its file and line, and ignored. A name a
  file only still holds (kept from its last good version, absent from its latest read) yields to a
  file that declares it now: that is a LocalModel moving between files, not a duplicate.

Nothing here does more I/O than reading the directory; time comes in as an argument.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from controller.documents import LoadResult, ModelSource, Sourced, load_file
from controller.spec import SpecError

YAML_SUFFIXES = (".yaml", ".yml")
DEFAULT_SETTLE_SECONDS = 0.5

Stamp = tuple[int, int, int]  # (st_mtime_ns, st_size, st_ino)
Loader = Callable[[Path], LoadResult]


def is_watched(path: Path, root: Path) -> bool:
    """A `*.yaml`/`*.yml` file below `root`, outside hidden directories, not an editor's leftover
    (`.x.yaml.swp`, `.#x.yaml`, `x.yaml~`, `#x.yaml#`): the same files `localmodel validate DIR` reads."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return False
    return bool(parts) and not any(map(_skipped, parts)) and parts[-1].endswith(YAML_SUFFIXES)


def _skipped(name: str) -> bool:
    """Hidden files and directories and editor leftovers."""
    return name.startswith((".", "#")) or name.endswith(("~", "#"))


@dataclass(frozen=True)
class Listing:
    """What a walk of the directory tree found, and the directories it could not read."""

    files: list[Path]
    unreadable: dict[Path, str]  # directory -> why (missing, permission denied, ...)


def scan(root: Path) -> Listing:
    """Every watched file below `root`, sorted by path, and every directory that could not be listed
    (`root` itself when it is missing or unreadable: os.walk alone would report an empty tree)."""
    found: list[Path] = []
    unreadable: dict[Path, str] = {}

    def failed(error: OSError) -> None:
        unreadable[Path(error.filename) if error.filename else root] = error.strerror or str(error)

    for directory, dirs, files in os.walk(root, onerror=failed):
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        found += [Path(directory, name) for name in files if is_watched(Path(directory, name), root)]
    return Listing(sorted(found), unreadable)


def yaml_files(root: Path) -> list[Path]:
    """Every watched file below `root`, sorted by path."""
    return scan(root).files


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class FileState:
    """What one file declares, as the daemon currently believes it."""

    models: dict[str, Sourced] = field(default_factory=dict)  # last good version, by name
    errors: tuple[SpecError, ...] = ()
    notes: tuple[str, ...] = ()
    stamp: Stamp | None = None
    shrink_since: float | None = None  # when a read first showed fewer models (not yet believed)
    held: frozenset[str] = frozenset()  # names kept from the last good version, absent from the latest read


class ModelFiles:
    """The LocalModels of one directory tree. Call `refresh` after file events, and periodically."""

    def __init__(self, root: Path, *, settle: float = DEFAULT_SETTLE_SECONDS, load: Loader = load_file) -> None:
        self.root = root
        self.settle = settle
        self._load = load
        self._files: dict[Path, FileState] = {}
        self._owners: dict[str, Path] = {}
        self._desired: dict[str, Sourced] = {}
        self._duplicates: list[SpecError] = []
        self._unreadable: dict[Path, str] = {}  # directories that could not be listed on the last refresh

    # ---- reading -------------------------------------------------------------------------------

    def refresh(self, now: float, hinted: Iterable[Path] = ()) -> bool:
        """Re-read every file that changed (by stamp), appeared, disappeared or is `hinted`, and every
        file whose pending shrink has settled. Returns True when the declared set or a file's errors changed.

        A directory that cannot be listed (the root unmounted, removed for a re-clone, permission
        denied) is an error, not an empty directory: the files below it keep what they declared,
        and nothing below it is deleted, until it can be read again."""
        listing = scan(self.root)
        changed = listing.unreadable != self._unreadable
        self._unreadable = listing.unreadable
        if self.root in listing.unreadable:
            return changed  # keep every model as it is

        def hidden(path: Path) -> bool:
            return any(path.is_relative_to(directory) for directory in listing.unreadable)

        present = {path: _stamp(path) for path in listing.files}
        hinted = {Path(p) for p in hinted}
        due = [
            path
            for path, state in self._files.items()
            if state.shrink_since is not None and now - state.shrink_since >= self.settle and not hidden(path)
        ]
        changed_paths = {
            path
            for path, stamp in present.items()
            if path not in self._files or self._files[path].stamp != stamp or path in hinted
        }
        changed_paths |= {path for path in self._files if path not in present and not hidden(path)}
        changed_paths |= set(due)
        for path in sorted(changed_paths):
            changed |= self._read(path, present.get(path), now)
        if changed:
            self._compose()
        return changed

    def _read(self, path: Path, stamp: Stamp | None, now: float) -> bool:
        previous = self._files.get(path)
        old = previous.models if previous else {}
        result = self._load(path) if stamp is not None else LoadResult()
        new = {item.model.name: item for item in result.sourced}
        shrink_since: float | None = None
        if result.errors:
            models = {**old, **new}  # a broken file removes nothing
        elif set(old) - set(new):
            started = previous.shrink_since if previous and previous.shrink_since is not None else now
            if now - started >= self.settle:
                models = new  # two reads `settle` apart agree: believe it
            else:
                models, shrink_since = {**old, **new}, started
        else:
            models = new
        held = frozenset(models) - frozenset(new)
        state = FileState(models, tuple(result.errors), tuple(result.notes), stamp, shrink_since, held)
        if stamp is None and not models and shrink_since is None:
            self._files.pop(path, None)
        else:
            self._files[path] = state
        return previous is None or _changed(previous, state)

    def _compose(self) -> None:
        """Combine the files into one set by name; the incumbent owner of a name keeps it."""
        declared: dict[str, list[tuple[Path, Sourced]]] = {}
        held: dict[str, list[tuple[Path, Sourced]]] = {}
        order: dict[str, None] = {}  # names in file order, then line order: decides who came first at startup
        for path in sorted(self._files):
            state = self._files[path]
            for name, item in sorted(state.models.items(), key=lambda kv: kv[1].source.line or 0):
                order.setdefault(name)
                (held if name in state.held else declared).setdefault(name, []).append((path, item))
        claims = {name: declared.get(name) or held[name] for name in order}
        desired: dict[str, Sourced] = {}
        owners: dict[str, Path] = {}
        duplicates: list[SpecError] = []
        for name, found in claims.items():
            incumbent = self._owners.get(name)
            winner = next(((p, i) for p, i in found if p == incumbent), found[0])
            desired[name], owners[name] = winner[1], winner[0]
            for path, item in found:
                if path != winner[0]:
                    duplicates.append(
                        SpecError(
                            str(path),
                            item.source.line,
                            name,
                            "metadata.name",
                            f"duplicate LocalModel name: {name!r} is already declared at {winner[1].source}; "
                            "rename one of them (this one is ignored)",
                        )
                    )
        self._desired, self._owners, self._duplicates = desired, owners, duplicates

    # ---- what the daemon reads -----------------------------------------------------------------

    @property
    def desired(self) -> dict[str, Sourced]:
        """The LocalModels to apply, by name (a copy)."""
        return dict(self._desired)

    def source_of(self, name: str) -> ModelSource | None:
        item = self._desired.get(name)
        return item.source if item else None

    @property
    def root_readable(self) -> bool:
        """False when the last refresh could not list the root directory."""
        return self.root not in self._unreadable

    @property
    def directory_errors(self) -> list[SpecError]:
        """The directories that could not be listed on the last refresh, as errors naming them."""
        return [
            SpecError(
                str(directory),
                None,
                None,
                "",
                f"cannot read the directory ({why}); the LocalModels below it stay as they were, and "
                "nothing is deleted, until it can be read again",
            )
            for directory, why in sorted(self._unreadable.items())
        ]

    @property
    def errors(self) -> list[SpecError]:
        """Every problem: unreadable directories, each file's errors, then cross-file duplicates."""
        out: list[SpecError] = self.directory_errors
        for path in sorted(self._files):
            out += self._files[path].errors
        return out + self._duplicates

    def next_settle(self) -> float | None:
        """When the earliest pending shrink can be confirmed (a time on the `now` clock), if any."""
        pending = [s.shrink_since + self.settle for s in self._files.values() if s.shrink_since is not None]
        return min(pending) if pending else None

    def report(self) -> list[dict[str, object]]:
        """Per file: the names it contributes, its errors and notes (for GET /status)."""
        by_file: dict[Path, list[SpecError]] = {}
        for error in self._duplicates:
            by_file.setdefault(Path(error.file or ""), []).append(error)
        out: list[dict[str, object]] = [
            {"path": error.file, "models": [], "errors": [error_dict(error)], "notes": [], "pendingRemoval": False}
            for error in self.directory_errors
        ]
        for path in sorted(self._files):
            state = self._files[path]
            errors = [*state.errors, *by_file.get(path, [])]
            out.append(
                {
                    "path": str(path),
                    "models": sorted(name for name in state.models if self._owners.get(name) == path),
                    "errors": [error_dict(e) for e in errors],
                    "notes": list(state.notes),
                    "pendingRemoval": state.shrink_since is not None,
                }
            )
        return out


def error_dict(error: SpecError) -> dict[str, object]:
    return {
        "file": error.file,
        "line": error.line,
        "object": error.object,
        "path": error.path,
        "message": error.message,
        "text": str(error),
    }


def _changed(before: FileState, after: FileState) -> bool:
    def located(state: FileState) -> dict[str, object]:
        return {name: (item.model, item.source) for name, item in state.models.items()}

    return (
        located(before) != located(after)
        or before.errors != after.errors
        or before.shrink_since != after.shrink_since
        or before.notes != after.notes
    )
