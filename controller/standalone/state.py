"""The daemon's saved status: what a restarted daemon shows that it cannot re-derive.

A restarted daemon re-reads the files and re-observes the engine, so everything that matters for
correctness comes back on its own. What does not: when a config was applied (`lastAppliedTime`), when
each condition last flipped (`lastTransitionTime`), whether the config of this generation was a drift
repair, and the per-name generation count. Those are kept in a small JSON file, the daemon's
equivalent of an object's persisted `status` (the operator inherits from that one with the same
function, controller.status.inherit_persisted).

The file is a display aid and nothing more: it is written only when a saved field changes (never
on an idle pass), atomically (a temporary file in the same directory, fsync, rename), and read
defensively: a file that is missing, unreadable, too large, not JSON, of another version or for
another directory is logged once and ignored; an entry that does not have the expected shape is
dropped. Entries of models no longer declared are dropped on the next write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from controller.fleet import Event
from controller.logs import log_event
from controller.status import Condition, EngineStatus, parse_rfc3339, rfc3339

log = logging.getLogger("localmodel.daemon")

VERSION = 1
MAX_STATE_BYTES = 4 * 1024 * 1024  # about 10,000 models; a larger file is not read, and not written
_CONDITION_KEYS = frozenset({"type", "status", "lastTransitionTime"})


def default_state_file(directory: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Where `watch DIR` keeps its saved status unless --state-file says otherwise: one file per
    watched directory (two daemons on two directories never share one), in $STATE_DIRECTORY (set by
    systemd's StateDirectory=), else $XDG_STATE_HOME/localmodel, else ~/.local/state/localmodel."""
    env = os.environ if environ is None else environ
    state_directory = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state_directory:
        base = Path(state_directory)
    else:
        xdg = env.get("XDG_STATE_HOME", "")
        base = (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state") / "localmodel"
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]
    return base / f"status-{digest}.json"


def entry_for(
    fingerprint: str, generation: int, conditions: Sequence[Condition], engine: EngineStatus | None
) -> dict[str, Any]:
    """What is saved for one model: only fields that change when its status really changes (a
    condition's status flip, a new apply, a new generation), so that progress messages write nothing."""
    saved_conditions = [
        {"type": c.type, "status": c.status, "lastTransitionTime": rfc3339(c.last_transition_time)}
        for c in conditions
        if c.last_transition_time is not None
    ]
    entry: dict[str, Any] = {"fingerprint": fingerprint, "generation": generation, "conditions": saved_conditions}
    if engine is not None:
        saved: dict[str, Any] = {"name": engine.engine, "ready": engine.ready}
        if engine.ready:  # what inherit_persisted reads: DriftRepaired is kept for the same generation
            saved["reason"] = engine.reason.value
        if engine.observed_generation is not None:
            saved["observedGeneration"] = engine.observed_generation
        if engine.last_applied_time is not None:
            saved["lastAppliedTime"] = rfc3339(engine.last_applied_time)
        entry["engine"] = saved
    return entry


def saved_conditions(entry: Mapping[str, Any]) -> tuple[Condition, ...]:
    """The saved conditions, as `previous` for controller.status.summarize (only status and
    lastTransitionTime matter there: the reason and message come from the new status)."""
    out = []
    for item in entry.get("conditions", ()):
        moment = parse_rfc3339(item["lastTransitionTime"])
        out.append(Condition(item["type"], item["status"], "", "", None, moment))
    return tuple(out)


def _valid_entry(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    if not isinstance(entry.get("fingerprint"), str):
        return False
    generation = entry.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 1:
        return False
    conditions = entry.get("conditions")
    if not isinstance(conditions, list) or len(conditions) > 16:
        return False
    for item in conditions:
        if not isinstance(item, dict) or set(item) != _CONDITION_KEYS:
            return False
        if not all(isinstance(item[k], str) for k in _CONDITION_KEYS):
            return False
        if parse_rfc3339(item["lastTransitionTime"]) is None:
            return False
    engine = entry.get("engine")
    if engine is None:
        return True
    if not isinstance(engine, dict) or not isinstance(engine.get("name"), str):
        return False
    applied = engine.get("lastAppliedTime")
    return applied is None or parse_rfc3339(applied) is not None


class StatusStore:
    """The saved status of every declared model, in one JSON file; `path` None: nothing is saved."""

    def __init__(self, path: Path | None, directory: Path, *, max_bytes: int = MAX_STATE_BYTES) -> None:
        self.path = path
        self.directory = str(directory.resolve())
        self.max_bytes = max_bytes
        self.entries: dict[str, dict[str, Any]] = {}
        self.writes = 0  # files written by this process
        self.last_error: str | None = None  # the last failed read or write, until a write succeeds
        self.last_written: datetime | None = None
        self._dirty = False
        self._write_failing = False
        self._in_flight = False  # taken, being written

    @property
    def dirty(self) -> bool:
        return self._dirty and self.path is not None

    # ---- reading -------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the file once, at start. Never raises: any problem is logged once and the file ignored."""
        if self.path is None:
            return
        self._remove_leftovers()
        try:
            with self.path.open("rb") as handle:
                raw = handle.read(self.max_bytes + 1)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._ignore(f"cannot read it: {exc.strerror or exc}")
            return
        if len(raw) > self.max_bytes:
            self._ignore(f"it is larger than {self.max_bytes} bytes")
            return
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            self._ignore(f"it is not JSON ({exc})")
            return
        if not isinstance(data, dict) or data.get("version") != VERSION:
            found = data.get("version") if isinstance(data, dict) else None
            self._ignore(f"it is not a version {VERSION} status file (version: {found!r})")
            return
        if data.get("directory") != self.directory:
            self._ignore(f"it is the status of another directory ({data.get('directory')!r})")
            return
        models = data.get("models")
        if not isinstance(models, dict):
            self._ignore("it has no models mapping")
            return
        entries = {name: entry for name, entry in models.items() if isinstance(name, str) and _valid_entry(entry)}
        dropped = len(models) - len(entries)
        if dropped:
            log_event(
                log,
                Event.STATE_INVALID,
                f"saved status {self.path}: {dropped} entr{'y' if dropped == 1 else 'ies'} of the wrong shape "
                "ignored (those models show a new lastAppliedTime and lastTransitionTimes)",
                level=logging.WARNING,
                file=str(self.path),
            )
        self.entries = entries

    def _remove_leftovers(self) -> None:
        """Temporary files of writes that a stop cut short (the process exits while a slow disk
        still holds a write): only this file's, only at start, before this process writes any."""
        assert self.path is not None
        with contextlib.suppress(OSError):
            for leftover in self.path.parent.glob(f".{glob_escape(self.path.name)}.*.tmp"):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def _ignore(self, why: str) -> None:
        self.last_error = f"{self.path}: {why}"
        log_event(
            log,
            Event.STATE_IGNORED,
            f"saved status {self.path} ignored: {why}; status starts afresh (lastAppliedTime and "
            "lastTransitionTimes are new) and the file is replaced on the next change",
            level=logging.WARNING,
            file=str(self.path),
        )

    # ---- changing ------------------------------------------------------------------------------

    def get(self, name: str) -> dict[str, Any] | None:
        return self.entries.get(name)

    def put(self, name: str, entry: dict[str, Any]) -> None:
        if self.entries.get(name) != entry:
            self.entries[name] = entry
            self._dirty = True

    def retain(self, names: Iterable[str]) -> None:
        """Keep only the entries of `names` (the declared models)."""
        keep = set(names)
        for name in [n for n in self.entries if n not in keep]:
            del self.entries[name]
            self._dirty = True

    # ---- writing -------------------------------------------------------------------------------

    def take(self) -> bytes | None:
        """The file's new content if anything changed since the last write (and mark it written):
        called on the event loop, so that the write itself (`write`, in a thread) sees a stable copy."""
        if not self.dirty:
            return None
        self._dirty = False
        self._in_flight = True
        data = {"version": VERSION, "directory": self.directory, "models": dict(sorted(self.entries.items()))}
        return json.dumps(data, separators=(",", ":")).encode()

    def write(self, content: bytes, now: datetime | None = None) -> bool:
        """Write `content` atomically (in a thread of its own: it may wait on the disk). False (logged,
        once per distinct error) when it could not be: the content is taken again on the next try."""
        try:
            written = self._write(content, now)
            if not written:
                self._dirty = True
            return written
        finally:
            self._in_flight = False

    def _write(self, content: bytes, now: datetime | None) -> bool:
        assert self.path is not None
        if len(content) > self.max_bytes:
            return self._write_failed(f"the status of every model takes {len(content)} bytes, over {self.max_bytes}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(content)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            with contextlib.suppress(OSError):  # the rename itself survives a crash once the directory is synced
                directory = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
        except OSError as exc:
            return self._write_failed(f"cannot write it: {exc.strerror or exc}")
        self.writes += 1
        self.last_written = now
        if self._write_failing:
            log_event(log, Event.STATE_SAVED, f"saved status {self.path} written again", file=str(self.path))
        self._write_failing = False
        self.last_error = None
        return True

    def _write_failed(self, why: str) -> bool:
        error = f"{self.path}: {why}"
        if error != self.last_error:
            log_event(
                log,
                Event.STATE_UNSAVED,
                f"saved status {error}; the daemon works on without it (a restart shows new "
                "lastAppliedTime and lastTransitionTimes); retrying on the next drift pass",
                level=logging.WARNING,
                file=str(self.path),
            )
        self.last_error = error
        self._write_failing = True
        return False

    def report(self) -> dict[str, Any]:
        """What GET /status shows under `savedStatus`."""
        return {
            "file": str(self.path) if self.path is not None else None,
            "writes": self.writes,
            "unsaved": self.dirty or self._in_flight,  # a change not on disk yet
            "lastWritten": rfc3339(self.last_written) if self.last_written else None,
            "lastError": self.last_error,
        }
