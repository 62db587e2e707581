"""The LocalModels a directory declares, kept safe from editors, re-clones, partial writes and broken files.

`ModelFiles` remembers, per file, the last good version of each LocalModel it declared, and turns a
directory into one set of LocalModels by name. A LocalModel is removed only on positive evidence:

- Its file is positively gone (its name absent from a directory that could be listed, and `lstat`
  says ENOENT), or a read without errors no longer declares it; and that evidence has held for the
  deletion grace period (`grace`, 30 s by default: long enough for `rm -rf && git clone`, an
  editor's truncate-then-write, a slow copy). Until then it stays, shown as pending removal; if the
  file comes back or declares it again meanwhile, nothing happens.
- Any error says nothing about what a file declares, and removes nothing: a path that cannot be
  `stat`ed or read (permission denied, a parent directory not searchable, too many open files, a
  FIFO, a device, a file over the size limit, a link loop), a directory that cannot be listed (the
  root unmounted or removed for a re-clone), a YAML error, an invalid spec, a name declared twice.
  The file keeps what was last read from it (its valid LocalModels are taken as they are now), and
  the error is reported.
- A file that still parses but now declares no LocalModel where it had some (emptied, truncated to
  a comment, `modles:` for `models:` in a docker-agent file) is an error too, until it declares them
  again or is removed: a typo is not a deletion. Its LocalModels are released at once, with no
  error, when another file declares them (they moved).
- A change is read as a whole: every changed file is re-read before the new set is computed, so a
  LocalModel that moved from one file to another (or a file renamed) is not a delete.
- A name declared in two files stays with the file that declared it first (the one already applied);
  the other declaration is reported as a duplicate with its file and line, and ignored. A name a
  file only still holds (kept from its last good version, absent from its latest read) yields to a
  file that declares it now: that is a LocalModel moving between files, not a duplicate.

The I/O (walking the tree, `stat`, reading and parsing files) is `collect`, which only reads this
object's state and can run in a worker thread; `apply` folds what it found in, without I/O.
`refresh` does both. Time comes in as an argument.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from controller.documents import LoadResult, ModelSource, Sourced, load_file
from controller.inputs import MAX_FILE_BYTES, Listing, describe_os_error, is_gone, is_watched, scan
from controller.spec import SpecError
from controller.standalone.defaults import DEFAULT_DELETION_GRACE

__all__ = ["DEFAULT_GRACE_SECONDS", "FileState", "Listing", "ModelFiles", "Reading", "is_watched", "scan", "yaml_files"]

DEFAULT_GRACE_SECONDS = DEFAULT_DELETION_GRACE

Stamp = tuple[int, int, int]  # (st_mtime_ns, st_size, st_ino)
Loader = Callable[[Path], LoadResult]


def yaml_files(root: Path) -> list[Path]:
    """Every watched file below `root`, sorted by path."""
    return scan(root).files


def _stamp(path: Path, *, follow: bool = True) -> Stamp | OSError:
    try:
        st = os.stat(path, follow_symlinks=follow)
    except OSError as exc:
        return exc
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class FileState:
    """What one file declares, as the daemon currently believes it."""

    models: dict[str, Sourced] = field(default_factory=dict)  # last good version, by name
    errors: tuple[SpecError, ...] = ()
    notes: tuple[str, ...] = ()
    stamp: Stamp | None = None  # of the last read; None when gone or when it could not be stat'ed
    losing: dict[str, float] = field(default_factory=dict)  # name -> since when the evidence says it is gone
    held: frozenset[str] = frozenset()  # names kept from the last good version, absent from the latest read
    emptied: bool = False  # parses, but declares nothing where it declared something


@dataclass
class Reading:
    """What one pass of I/O found (`ModelFiles.collect`), to be folded in by `ModelFiles.apply`."""

    listing: Listing
    loads: dict[Path, tuple[Stamp, LoadResult]] = field(default_factory=dict)  # files read
    unreadable: dict[Path, str] = field(default_factory=dict)  # files that could not be stat'ed: why
    gone: set[Path] = field(default_factory=set)  # known files positively gone
    unknown: dict[Path, str] = field(default_factory=dict)  # known files not listed, existence unknown: why


class ModelFiles:
    """The LocalModels of one directory tree. Call `refresh` after file events, and periodically."""

    def __init__(
        self,
        root: Path,
        *,
        grace: float = DEFAULT_GRACE_SECONDS,
        max_file_bytes: int = MAX_FILE_BYTES,
        load: Loader | None = None,
    ) -> None:
        self.root = root
        self.grace = grace
        self._load: Loader = load or partial(load_file, limit=max_file_bytes)
        self._files: dict[Path, FileState] = {}
        self._owners: dict[str, Path] = {}
        self._desired: dict[str, Sourced] = {}
        self._duplicates: list[SpecError] = []
        self._unreadable: dict[Path, str] = {}  # directories that could not be listed on the last refresh

    # ---- reading -------------------------------------------------------------------------------

    def refresh(self, now: float, hinted: Iterable[Path] = ()) -> bool:
        """`collect` then `apply`. Returns True when the declared set or a file's errors changed."""
        return self.apply(self.collect(now, hinted), now)

    def collect(self, now: float, hinted: Iterable[Path] = ()) -> Reading:
        """The I/O of a refresh, without changing anything here (safe in a worker thread while the
        event loop reads this object): walk the tree, `stat` every listed file, read and parse every
        file that is new, changed (by stamp), `hinted` or due (a pending removal's grace is over),
        and look again for every known file that is no longer listed."""
        reading = Reading(scan(self.root))
        if self.root in reading.listing.unreadable:
            return reading  # keep every model as it is
        hinted = {Path(p) for p in hinted}
        listed = set(reading.listing.files)
        missing = [path for path in self._files if path not in listed and not reading.listing.hides(path)]
        for path in reading.listing.files:
            stamp = _stamp(path)
            if isinstance(stamp, OSError):
                if stamp.errno in (errno.ENOENT, errno.ENOTDIR):
                    missing.append(path)  # removed since the listing
                else:
                    reading.unreadable[path] = describe_os_error(stamp)
                continue
            state = self._files.get(path)
            if state is None or state.stamp != stamp or path in hinted or self._due(state, now):
                reading.loads[path] = (stamp, self._load_isolated(path))
        for path in missing:
            if any(path.is_relative_to(chart) for chart in reading.listing.charts):
                reading.gone.add(path)  # there, but no longer a watched file: its directory became a Helm chart
                continue
            gone = is_gone(path)
            if gone:
                reading.gone.add(path)
            elif gone is None:
                error = _stamp(path)
                why = describe_os_error(error) if isinstance(error, OSError) else "it cannot be looked up"
                reading.unknown[path] = why
            else:  # there after all (created again since the listing, or a dangling link): read it
                stamp = _stamp(path)
                if isinstance(stamp, OSError):
                    stamp = _stamp(path, follow=False)
                if isinstance(stamp, OSError):
                    reading.unreadable[path] = describe_os_error(stamp)
                else:
                    reading.loads[path] = (stamp, self._load_isolated(path))
        return reading

    def _load_isolated(self, path: Path) -> LoadResult:
        """Load one file; whatever goes wrong in it (a bug included) is that file's error, not the daemon's."""
        try:
            return self._load(path)
        except Exception as exc:  # noqa: BLE001 - one file must never stop the daemon
            why = f"unexpected error while reading it: {type(exc).__name__}: {exc}"[:500]
            return LoadResult(errors=[SpecError(str(path), None, None, "", why)], files=[str(path)], unreadable=True)

    def apply(self, reading: Reading, now: float) -> bool:
        """Fold a `collect` in (no I/O). Returns True when the declared set or a file's errors changed."""
        changed = reading.listing.unreadable != self._unreadable
        self._unreadable = reading.listing.unreadable
        if self.root in reading.listing.unreadable:
            return changed
        for path in sorted({*reading.loads, *reading.unreadable, *reading.gone, *reading.unknown}):
            previous = self._files.get(path)
            if path in reading.loads:
                stamp, result = reading.loads[path]
                state: FileState | None = self._read(path, previous, stamp, result, now)
            elif path in reading.gone:
                state = self._gone(previous, now)
            else:
                why = reading.unreadable.get(path) or reading.unknown[path]
                state = self._unreadable_file(path, previous, why)
            if state is None:
                self._files.pop(path, None)
                changed |= previous is not None
            else:
                self._files[path] = state
                changed |= previous is None or _changed(previous, state)
        if changed:
            self._compose()
        return changed

    def _due(self, state: FileState, now: float) -> bool:
        return any(now - since >= self.grace for since in state.losing.values())

    def _read(self, path: Path, previous: FileState | None, stamp: Stamp, result: LoadResult, now: float) -> FileState:
        old = previous.models if previous else {}
        new = {item.model.name: item for item in result.sourced}
        errors = tuple(result.errors)
        losing: dict[str, float] = {}
        emptied = False
        if errors:
            models = {**old, **new}  # a broken file removes nothing
        elif old and not new:
            models, emptied = dict(old), True  # parses, declares nothing: a typo or a truncation, not a deletion
            errors = (_emptied_error(path, sorted(old)),)
        else:
            models = dict(new)
            for name in set(old) - set(new):
                since = previous.losing.get(name, now) if previous else now
                if now - since < self.grace:
                    models[name], losing[name] = old[name], since  # not yet: the grace period runs
        held = frozenset(models) - frozenset(new)
        notes = (*result.notes, *(f"warning: {warning}" for warning in result.warnings))
        # A file that could not be read at all (EMFILE, EACCES on open, a FIFO) is read again on every
        # refresh, whether or not its stamp changes: the cause may go away without touching it.
        kept = None if result.unreadable else stamp
        return FileState(models, errors, notes, kept, losing, held, emptied)

    def _gone(self, previous: FileState | None, now: float) -> FileState | None:
        if previous is None:
            return None
        models: dict[str, Sourced] = {}
        losing: dict[str, float] = {}
        for name, item in previous.models.items():
            since = previous.losing.get(name, now)  # a name already pending keeps its clock
            if now - since < self.grace:
                models[name], losing[name] = item, since
        if not models:
            return None
        return FileState(models, (), (), None, losing, frozenset(models))

    def _unreadable_file(self, path: Path, previous: FileState | None, why: str) -> FileState:
        models = previous.models if previous else {}
        tail = (
            "; its LocalModels stay as they were, and nothing is deleted, until it can be read again" if models else ""
        )
        error = SpecError(str(path), None, None, "", f"cannot read ({why}){tail}")
        return FileState(dict(models), (error,), (), None, {}, frozenset(models))

    def _compose(self) -> None:
        """Combine the files into one set by name; the incumbent owner of a name keeps it."""
        self._release_moved()
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

    def _release_moved(self) -> None:
        """A name that another file now declares has moved: a file that only still holds it while its
        removal is pending (gone, emptied, or no longer declaring it) lets go of it at once, and a
        file left holding nothing is forgotten (gone) or no longer an error (emptied). A file with
        errors keeps what it holds: its last good version may well declare it still."""
        declared = {name for state in self._files.values() for name in state.models if name not in state.held}
        for path, state in list(self._files.items()):
            gone = state.stamp is None and not state.errors
            moved = {n for n in state.held & declared if gone or state.emptied or n in state.losing}
            if not moved:
                continue
            models = {n: item for n, item in state.models.items() if n not in moved}
            losing = {n: since for n, since in state.losing.items() if n not in moved}
            if gone and not models:
                del self._files[path]
            elif state.emptied:
                errors = (_emptied_error(path, sorted(models)),) if models else ()
                self._files[path] = FileState(
                    models, errors, state.notes, state.stamp, {}, frozenset(models), bool(models)
                )
            else:
                self._files[path] = FileState(
                    models, state.errors, state.notes, state.stamp, losing, state.held - moved, state.emptied
                )

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

    def next_due(self) -> float | None:
        """When the earliest pending removal's grace period ends (a time on the `now` clock), if any."""
        pending = [since + self.grace for state in self._files.values() for since in state.losing.values()]
        return min(pending) if pending else None

    def pending_removal(self, now: float) -> dict[str, float]:
        """The names whose removal waits for the grace period, and the seconds left."""
        out: dict[str, float] = {}
        for path, state in self._files.items():
            for name, since in state.losing.items():
                if self._owners.get(name) == path:
                    out[name] = max(0.0, since + self.grace - now)
        return out

    def report(self, now: float | None = None) -> list[dict[str, object]]:
        """Per file: the names it contributes, its errors and notes, and the names pending removal with
        the seconds left (for GET /status)."""
        by_file: dict[Path, list[SpecError]] = {}
        for error in self._duplicates:
            by_file.setdefault(Path(error.file or ""), []).append(error)
        out: list[dict[str, object]] = [
            {"path": error.file, "models": [], "errors": [error_dict(error)], "notes": [], "pendingRemoval": {}}
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
                    "gone": state.stamp is None and not state.errors,
                    "pendingRemoval": {
                        name: round(max(0.0, since + self.grace - now), 1) if now is not None else None
                        for name, since in sorted(state.losing.items())
                    },
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
        or before.losing != after.losing
        or before.emptied != after.emptied
        or before.notes != after.notes
    )


def _emptied_error(path: Path, names: list[str]) -> SpecError:
    return SpecError(
        str(path),
        None,
        None,
        "",
        f"declares no LocalModel any more, where it declared {', '.join(names)}: an emptied or truncated file, "
        "or a misspelt top-level key (models:, agents:, kind:)? They stay applied, and nothing is deleted, "
        "until the file declares them again or is removed",
    )
