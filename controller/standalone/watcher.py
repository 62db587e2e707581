"""The daemon's file watch: which paths changed since the last pass, and the watcher that tells.

`FileWatch` keeps the paths noticed since the last pass (a file event, or a re-read asked for) and wakes
the pass loop; `run` supervises the watchfiles watcher, restarting it with a growing delay when it fails
and at once when the directory comes back after it was missing (a re-clone); `sync` re-reads what changed
(in a thread) into the ModelFiles and logs each file problem once, when it appears and when it is fixed.
Without a watcher, changes are still found on the drift pass: the watch only makes them quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from controller.fleet import Event
from controller.logs import log_event
from controller.standalone.files import ModelFiles, is_watched

log = logging.getLogger("localmodel.daemon")
_T = TypeVar("_T")

WATCH_STEP_MS = 50  # a batch of file events ends after this much quiet
WATCH_DEBOUNCE_MS = 1600  # ...or after this long, whatever keeps happening
WATCH_RESTART_DELAY = 1.0  # a failed file watcher is restarted after this, doubling on each failure...
WATCH_RESTART_MAX = 30.0  # ...up to this


async def in_thread(function: Callable[..., _T], *args: Any) -> _T:
    """`function(*args)` in a daemon thread: the loop keeps running meanwhile, and a stop never
    waits for it (asyncio.to_thread's pool is joined at exit, so a read stuck on a dead mount would
    hold the process)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="localmodel files", daemon=True).start()
    return await future


class WatchStop:
    """The stop event for one watchfiles run: set when the daemon stops, but the watcher setting it
    (awatch does when it is cancelled, to restart on a re-cloned directory) stops only that run."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._own = False

    def is_set(self) -> bool:  # also called from watchfiles' thread: reads two flags, no more
        return self._own or self._stop.is_set()

    def set(self) -> None:
        self._own = True


class FileWatch:
    """What changed in the files, and the watcher that says so. `wake` is set whenever a pass should run
    now; `file_errors` (a gauge) counts the problems found in the files."""

    def __init__(
        self,
        files: ModelFiles,
        *,
        wake: asyncio.Event,
        monotonic: Callable[[], float],
        interval: float,
        file_errors: Any,
    ) -> None:
        self.files = files
        self.root = files.root
        self._wake = wake
        self._monotonic = monotonic
        self._interval = interval
        self._file_errors = file_errors
        self._hinted: set[Path] = set()
        self._logged_errors: set[str] = set()
        self._rewatch = asyncio.Event()  # set when the directory is back after it was missing
        self.error: str | None = None  # set while the file watcher is down, waiting to restart

    # ---- what changed --------------------------------------------------------------------------

    def notice(self, paths: Iterable[Path]) -> None:
        """Files changed (or may have): re-read them on the next pass, which starts now."""
        self._hinted |= set(paths)
        self._wake.set()

    def take_hints(self) -> set[Path]:
        """The paths noticed since the last call."""
        hinted, self._hinted = self._hinted, set()
        return hinted

    async def sync(self, now: float, hinted: set[Path]) -> bool:
        """Re-read what changed into the ModelFiles; True if what they declare changed."""
        was_missing = not self.files.root_readable
        # The I/O (walk, stat, read, parse) runs in a thread: a slow disk or a large file never
        # stops the loop, /healthz or a signal; only the result is folded in here.
        reading = await in_thread(self.files.collect, now, hinted)
        changed = self.files.apply(reading, now)
        if was_missing and self.files.root_readable:
            self._rewatch.set()
        if changed:
            self._log_file_errors()
        return changed

    def _log_file_errors(self) -> None:
        current = {str(error): error for error in self.files.errors}
        for text, error in current.items():
            if text not in self._logged_errors:
                log_event(
                    log,
                    Event.FILE_ERROR,
                    error.message,
                    level=logging.WARNING,
                    model=error.object,
                    file=f"{error.file}:{error.line}" if error.line else error.file,
                    field=error.path or None,
                )
        for text in self._logged_errors - set(current):
            log_event(log, Event.FILE_FIXED, f"resolved: {text}")
        self._logged_errors = set(current)
        self._file_errors.set(len(current))

    # ---- the watcher ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Watch the files until `stop`; when the watcher fails (the inotify watch limit, the
        directory removed) or ends, say so and start it again after a delay that grows up to
        WATCH_RESTART_MAX. Meanwhile changes are still found, on the drift pass."""
        failures = 0
        while not stop.is_set():
            started = self._monotonic()
            self._rewatch.clear()
            watcher = asyncio.create_task(self._watch_files(stop), name="file watch")
            rewatch = asyncio.create_task(self._rewatch.wait(), name="file watch reset")
            try:
                await asyncio.wait({watcher, rewatch}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (watcher, rewatch):
                    task.cancel()
                await asyncio.gather(watcher, rewatch, return_exceptions=True)
            if stop.is_set():
                return
            if not watcher.cancelled() and watcher.exception() is not None:
                exc = watcher.exception()
                problem = f"the file watcher failed: {type(exc).__name__}: {exc}"
            elif rewatch.done() and not rewatch.cancelled():
                # The directory is back after it was missing (a re-clone): the old watch follows the
                # removed directory, so watch the new one, at once.
                log_event(
                    log, Event.WATCH_RESTARTED, f"{self.root} is back; watching it again", directory=str(self.root)
                )
                self.notice([self.root])
                continue
            else:
                problem = "the file watcher stopped"
            if self._monotonic() - started > WATCH_RESTART_MAX:
                failures = 0  # it ran for a good while: start the backoff over
            delay = min(WATCH_RESTART_MAX, WATCH_RESTART_DELAY * 2**failures)
            failures += 1
            self.error = problem
            log_event(
                log,
                Event.WATCH_FAILED,
                f"{problem}; restarting it in {delay:g}s (until then, changes are picked up on the "
                f"drift pass every {self._interval:g}s)",
                level=logging.ERROR,
                directory=str(self.root),
                attempt=failures,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if not stop.is_set():
                self.notice([self.root])  # re-read the directory: changes may have been missed
                log_event(
                    log, Event.WATCH_RESTARTED, f"watching {self.root} for changes again", directory=str(self.root)
                )
                self.error = None

    async def _watch_files(self, stop: asyncio.Event) -> None:
        from watchfiles import awatch

        absolute = self.root.resolve()

        def interesting(_change: object, path: str) -> bool:
            # YAML files, and paths without a suffix (a directory moved in or out); a spurious wake
            # only costs a stat of the directory tree.
            candidate = Path(path)
            return is_watched(candidate, absolute) or (
                not candidate.suffix and is_watched(candidate / "x.yaml", absolute)
            )

        async for changes in awatch(
            absolute,
            watch_filter=interesting,
            stop_event=WatchStop(stop),
            step=WATCH_STEP_MS,
            debounce=WATCH_DEBOUNCE_MS,
            recursive=True,
        ):
            self.notice(self.root / Path(path).relative_to(absolute) for _, path in changes)
