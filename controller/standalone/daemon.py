"""The file-watch daemon: keeps a directory of LocalModel files applied to one engine, forever.

One loop. It wakes on a file event, at the earliest model's due time, or on the drift pass; at
each wake it re-reads what changed on disk, observes the engine once (three requests, shared by
every model), and starts the due models' reconciles as independent tasks, at most `concurrency`
at a time. A long pull or preload of one model therefore never delays the others, and an idle
drift pass costs the observation and nothing more.

The daemon keeps no state that matters for correctness: a restart re-reads the files and
re-observes the engine. What it keeps (backoff counters, conditions, last good file versions) only
makes it polite and informative; what of it a restart could not re-derive (lastAppliedTime, the
conditions' lastTransitionTime, generations) is saved in a file (controller/standalone/state.py).

Between drift passes the engine watch (controller.engine.watch) looks at the engine's stored
configs every `watch_period` seconds, one request shared by every model; a restart, an unload or
another client's overwrite of a declared config makes just the affected models due at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from controller.backoff import backoff_delay
from controller.deletion import deletion_retries, gave_up_message, next_step
from controller.desired import render_configure
from controller.documents import ModelSource
from controller.engine.client import EngineClient
from controller.engine.errors import EngineError
from controller.engine.watch import DEFAULT_WATCH_PERIOD, Disturbance, EngineWatch, Expected
from controller.fleet import Claims, Readiness, RepairCauses, conflict_status, event_level
from controller.inputs import MAX_FILE_BYTES
from controller.logs import log_event
from controller.plan import Observation, effective_mode
from controller.policy import unreachable_status
from controller.reconcile import EngineReconciler, spec_fingerprint, utcnow
from controller.refs import canonical_ref
from controller.spec import LocalModel, LocalModelSpec
from controller.standalone.defaults import DEFAULT_CONCURRENCY, DEFAULT_INTERVAL
from controller.standalone.files import DEFAULT_GRACE_SECONDS, ModelFiles, is_watched
from controller.standalone.metrics import Metrics
from controller.standalone.schedule import Schedule
from controller.standalone.state import StatusStore, entry_for, saved_conditions
from controller.status import (
    READY,
    TRUE,
    Condition,
    EngineStatus,
    ModelStatus,
    Phase,
    Reason,
    inherit_persisted,
    rfc3339,
    summarize,
)

log = logging.getLogger("localmodel.daemon")
_T = TypeVar("_T")

# A deletionPolicy's tries (controller/deletion.py), spread: many files removed at once fail at once. None is
# used up while the engine is down: a finalize runs only after an observation the engine answered.
DELETE_RETRIES = deletion_retries(jittered=True)
WATCH_STEP_MS = 50  # a batch of file events ends after this much quiet
WATCH_DEBOUNCE_MS = 1600  # ...or after this long, whatever keeps happening
# Requeues and backoffs that fall due close together share one observation: timer wakes come at
# most this often (file events and drift passes are not delayed).
MIN_OBSERVE_GAP = 1.0
WATCH_RESTART_DELAY = 1.0  # a failed file watcher is restarted after this, doubling on each failure...
WATCH_RESTART_MAX = 30.0  # ...up to this
ROOT_POLL_SECONDS = 1.0  # while the directory is missing, look for it this often


async def _in_thread(function: Callable[..., _T], *args: Any) -> _T:
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


class _WatchStop:
    """The stop event for one watchfiles run: set when the daemon stops, but the watcher setting it
    (awatch does when it is cancelled, to restart on a re-cloned directory) stops only that run."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._own = False

    def is_set(self) -> bool:  # also called from watchfiles' thread: reads two flags, no more
        return self._own or self._stop.is_set()

    def set(self) -> None:
        self._own = True


_BUSY_REASONS = frozenset({Reason.RUNNER_BUSY, Reason.RUNNER_STALE})


def with_generation(model: LocalModel, generation: int) -> LocalModel:
    """The model with `metadata.generation` set: the daemon counts spec changes per name, as the API server does."""
    return model.model_copy(update={"metadata": model.metadata.model_copy(update={"generation": generation})})


def model_refs(spec: LocalModelSpec) -> set[str]:
    """The references a spec keeps in the engine's store (the model and its draft model)."""
    refs = {canonical_ref(spec.model)}
    if spec.speculative is not None and spec.speculative.draft_model:
        refs.add(canonical_ref(spec.speculative.draft_model))
    return refs


def cleanup_commands(spec: LocalModelSpec) -> str:
    """What to run by hand to do what the spec's deletionPolicy would have done."""
    commands = [f"docker model unload {spec.model}"]
    if spec.deletion_policy == "Delete":
        commands.append(f"docker model rm {spec.model}")
    return " && ".join(commands)


@dataclass
class Record:
    """One declared LocalModel and how it stands."""

    model: LocalModel  # with the daemon's generation
    source: ModelSource
    conditions: tuple[Condition, ...] = ()
    engine: EngineStatus | None = None
    conflict: str | None = None  # set while another LocalModel owns this (model, mode)
    # From the saved status (controller/standalone/state.py), what a previous process knew: the
    # conditions' lastTransitionTimes until the first status of this process, and the engine entry
    # (lastAppliedTime, a DriftRepaired reason) that inherit_persisted completes each status with.
    restored: tuple[Condition, ...] = ()
    persisted: dict[str, Any] | None = None

    @property
    def generation(self) -> int:
        return self.model.metadata.generation or 1

    @property
    def ready(self) -> bool:
        return any(c.type == READY and c.status == TRUE for c in self.conditions)

    def to_dict(self) -> dict[str, Any]:
        status = ModelStatus(
            self.model.name,
            self.model.spec.model,
            self.generation,
            self.conditions,
            (self.engine,) if self.engine else (),
        )
        return {**status.to_dict(), "source": str(self.source)}


@dataclass
class Deletion:
    """A LocalModel that disappeared from the files and whose deletionPolicy is still to be applied."""

    model: LocalModel
    source: ModelSource
    attempts: int = 0
    last_error: str | None = None


@dataclass
class EngineHealth:
    url: str
    source: str
    up: bool | None = None  # None until the first observation
    failures: int = 0
    last_observed: datetime | None = None
    last_error: str | None = None


@dataclass
class Clocks:
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = utcnow
    jitter: Callable[[], float] = random.random


class Daemon:
    def __init__(
        self,
        root: Path,
        client: EngineClient,
        *,
        engine_name: str = "local",
        interval: float = DEFAULT_INTERVAL,
        grace: float = DEFAULT_GRACE_SECONDS,
        max_file_bytes: int = MAX_FILE_BYTES,
        concurrency: int = DEFAULT_CONCURRENCY,
        watch_period: float | None = DEFAULT_WATCH_PERIOD,
        state_file: Path | None = None,
        clocks: Clocks | None = None,
    ) -> None:
        self.root = root
        self.client = client
        self.interval = interval
        self.clocks = clocks or Clocks()
        self.files = ModelFiles(root, grace=grace, max_file_bytes=max_file_bytes)
        self.reconciler = EngineReconciler(
            engine_name,
            client,
            clock=self.clocks.wall,
            jitter=self.clocks.jitter,
            on_event=self._event,
            on_progress=self._progress,
        )
        self.schedule = Schedule(interval, next_drift=self.clocks.monotonic())
        self.metrics = Metrics(lambda: client.requests_sent)
        self.engine = EngineHealth(client.endpoint.shown, client.endpoint.source)
        self.records: dict[str, Record] = {}
        self.deletions: dict[str, Deletion] = {}
        self.last_pass: float | None = None
        self._claims = Claims()  # who owns each (model, mode): the first declared
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._hinted: set[Path] = set()
        self._wake = asyncio.Event()
        self._logged_errors: set[str] = set()
        self._scanned = False
        self._last_observe = float("-inf")
        self._ready = Readiness[str]()  # names whose Ready condition is True
        self.watcher_error: str | None = None  # set while the file watcher is down, waiting to restart
        self._rewatch = asyncio.Event()  # set when the directory is back after it was missing
        # The engine watch (None: drift passes only). What it noticed, per name, until the repair is verified:
        self.watch = (
            EngineWatch(
                client,
                period=watch_period,
                on_disturbed=self._disturbed,
                on_down=self._watch_down,
                on_up=self._watch_up,
                clock=self.clocks.monotonic,
            )
            if watch_period
            else None
        )
        self._causes = RepairCauses[str](self.clocks.monotonic)  # what the watch noticed, until repaired
        self._recheck: set[str] = set()  # disturbed while being worked on: due again once that work ends
        # The saved status (display only: lastAppliedTime, lastTransitionTimes, generations), read once here.
        self.state = StatusStore(state_file, root)
        self.state.load()
        self._state_retry_at = float("-inf")  # after a failed write, not before the next drift pass

    # ---- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, watch: bool = True) -> None:
        """Run until `stop` is set, then cancel in-flight work (an observation or reconcile waiting
        on a slow engine included) and return."""
        log_event(
            log,
            "started",
            f"watching {self.root} for LocalModels; drift pass every {self.interval:g}s",
            directory=str(self.root),
            engine=self.engine.url,
        )
        tasks = [
            asyncio.create_task(self._loop(stop), name="reconcile loop"),
            asyncio.create_task(self._relay(stop), name="stop relay"),
        ]
        if watch:
            tasks.append(asyncio.create_task(self._watch(stop), name="file watcher"))
        if self.watch is not None:
            self.watch.client = self.client.sibling()  # a connection of its own: the probe compares connections
            tasks.append(asyncio.create_task(self.watch.run(stop), name="engine watch"))
        try:
            done, _ = await asyncio.wait(tasks[:2], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in [*tasks, *self._busy.values()]:
                task.cancel()
            await asyncio.gather(*tasks, *self._busy.values(), return_exceptions=True)
            if self.watch is not None and self.watch.client is not self.client:
                await self.watch.client.aclose()
            with contextlib.suppress(Exception):  # a last save; a stop never waits long on a slow disk
                await asyncio.wait_for(self.save_state(force=True), 2.0)
            log_event(log, "stopped", "stopped")

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.run_pass()
            await self.save_state()
            await self._sleep(stop)

    async def save_state(self, *, force: bool = False) -> None:
        """Write the saved status if a saved field changed (in a thread: the loop never waits on the
        disk); after a failed write, not again before the next drift pass unless `force`."""
        now = self.clocks.monotonic()
        if not self.state.dirty or (not force and now < self._state_retry_at):
            return
        content = self.state.take()
        if content is None:
            return
        if not await _in_thread(self.state.write, content, self.clocks.wall()):
            self._state_retry_at = now + self.interval

    async def run_pass(self) -> None:
        """One wake-up: re-read what changed, observe once if anything is due, start the due work."""
        now = self.clocks.monotonic()
        self.last_pass = now
        hinted, self._hinted = self._hinted, set()
        due = self.files.next_due()
        if (
            not self._scanned
            or hinted
            or (due is not None and due <= now)
            or now >= self.schedule.next_drift
            or not self.files.root_readable
        ):
            self._scanned = True
            await self._sync_files(now, hinted)
        wake = self.schedule.take(now, self._busy)
        if not wake:
            return
        self._last_observe = now
        observation = await self.reconciler.observe()
        for name in self._after_observe(observation, list(wake.names), self.clocks.monotonic()):
            self._busy[name] = asyncio.create_task(self._work(name, observation), name=f"reconcile {name}")

    def notice(self, paths: Iterable[Path]) -> None:
        """Files changed (or may have): re-read them on the next pass, which starts now."""
        self._hinted |= set(paths)
        self._wake.set()

    async def wait_idle(self) -> None:
        """Wait until no reconcile or deletion is in flight."""
        while self._busy:
            await asyncio.gather(*list(self._busy.values()), return_exceptions=True)

    async def _sleep(self, stop: asyncio.Event) -> None:
        wake_at = self.schedule.next_wake(self._busy)
        if wake_at < self.schedule.next_drift:
            wake_at = max(wake_at, min(self._last_observe + MIN_OBSERVE_GAP, self.schedule.next_drift))
        due = self.files.next_due()
        if due is not None:
            wake_at = min(wake_at, due)
        if not self.files.root_readable:  # look for the directory to come back (no watcher can tell)
            wake_at = min(wake_at, self.clocks.monotonic() + ROOT_POLL_SECONDS)
        timeout = max(0.0, wake_at - self.clocks.monotonic())
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def _relay(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _watch(self, stop: asyncio.Event) -> None:
        """Watch the files until `stop`; when the watcher fails (the inotify watch limit, the
        directory removed) or ends, say so and start it again after a delay that grows up to
        WATCH_RESTART_MAX. Meanwhile changes are still found, on the drift pass."""
        failures = 0
        while not stop.is_set():
            started = self.clocks.monotonic()
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
                log_event(log, "watch_restarted", f"{self.root} is back; watching it again", directory=str(self.root))
                self.notice([self.root])
                continue
            else:
                problem = "the file watcher stopped"
            if self.clocks.monotonic() - started > WATCH_RESTART_MAX:
                failures = 0  # it ran for a good while: start the backoff over
            delay = min(WATCH_RESTART_MAX, WATCH_RESTART_DELAY * 2**failures)
            failures += 1
            self.watcher_error = problem
            log_event(
                log,
                "watch_failed",
                f"{problem}; restarting it in {delay:g}s (until then, changes are picked up on the "
                f"drift pass every {self.interval:g}s)",
                level=logging.ERROR,
                directory=str(self.root),
                attempt=failures,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if not stop.is_set():
                self.notice([self.root])  # re-read the directory: changes may have been missed
                log_event(log, "watch_restarted", f"watching {self.root} for changes again", directory=str(self.root))
                self.watcher_error = None

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
            stop_event=_WatchStop(stop),
            step=WATCH_STEP_MS,
            debounce=WATCH_DEBOUNCE_MS,
            recursive=True,
        ):
            self.notice(self.root / Path(path).relative_to(absolute) for _, path in changes)

    # ---- files -> records ----------------------------------------------------------------------

    async def _sync_files(self, now: float, hinted: set[Path]) -> None:
        was_missing = not self.files.root_readable
        # The I/O (walk, stat, read, parse) runs in a thread: a slow disk or a large file never
        # stops the loop, /healthz or a signal; only the result is folded in here.
        reading = await _in_thread(self.files.collect, now, hinted)
        changed = self.files.apply(reading, now)
        if was_missing and self.files.root_readable:
            self._rewatch.set()
        if not changed:
            return
        self._log_file_errors()
        self._apply_desired(now)

    def _log_file_errors(self) -> None:
        current = {str(error): error for error in self.files.errors}
        for text, error in current.items():
            if text not in self._logged_errors:
                log_event(
                    log,
                    "file_error",
                    error.message,
                    level=logging.WARNING,
                    model=error.object,
                    file=f"{error.file}:{error.line}" if error.line else error.file,
                    field=error.path or None,
                )
        for text in self._logged_errors - set(current):
            log_event(log, "file_fixed", f"resolved: {text}")
        self._logged_errors = set(current)
        self.metrics.file_errors.set(len(current))

    def _apply_desired(self, now: float) -> None:
        desired = self.files.desired
        for name in [n for n in self._claims.ordered() if n not in desired]:
            self._claims.release(name)
        for name in desired:
            self._claims.claim(name, desired[name].model.spec)
        conflicts = self._claims.conflicts()
        for name in self._claims.ordered():
            self._declare(name, desired[name].model, desired[name].source, conflicts.get(name), now)
        for name in [n for n in self.records if n not in desired]:
            self._ready.forget(name)
            self._undeclare(self.records.pop(name), now)
        if self.files.root_readable:
            self.state.retain(self.records)  # the saved status of models no longer declared goes
        self._update_gauges()

    def _declare(self, name: str, model: LocalModel, source: ModelSource, conflict: str | None, now: float) -> None:
        record = self.records.get(name)
        if record is None:
            self.deletions.pop(name, None)  # back before its deletion ran
            record = self.records[name] = self._restored(name, model, source)
            record.engine = EngineStatus(
                self.reconciler.name,
                Phase.PENDING,
                Reason.PENDING,
                "waiting for the first reconcile",
                observed_generation=record.generation,
            )
            changed = True
        else:
            changed = record.model.spec != model.spec
            generation = record.generation + 1 if changed else record.generation
            record.model, record.source = with_generation(model, generation), source
        if conflict is not None:
            if record.conflict != conflict:
                log_event(log, "conflict", conflict, level=logging.WARNING, model=name, file=str(source))
                self.reconciler.forget(name)
                self.schedule.remove(name)
                record.conflict = conflict
                self._set_status(record, conflict_status(self.reconciler.name, conflict, record.generation))
            return
        if changed or record.conflict is not None:
            if not changed:
                log_event(
                    log, "conflict_resolved", "no other LocalModel claims this model and mode any more", model=name
                )
            record.conflict = None
            self.schedule.due_at(name, now)
        elif name not in self.schedule:
            self.schedule.on_drift(name)

    def _restored(self, name: str, model: LocalModel, source: ModelSource) -> Record:
        """A newly declared model's record, with what the saved status knew about it: its generation
        (the same spec keeps it, a changed one counts one more), its conditions' lastTransitionTimes
        and its engine entry (for lastAppliedTime)."""
        entry = self.state.get(name)
        if entry is None:
            return Record(with_generation(model, 1), source)
        same = entry["fingerprint"] == spec_fingerprint(model.spec)
        generation = entry["generation"] if same else entry["generation"] + 1
        return Record(
            with_generation(model, generation), source, restored=saved_conditions(entry), persisted=entry.get("engine")
        )

    def _undeclare(self, record: Record, now: float) -> None:
        name = record.model.name
        self.reconciler.forget(name)
        self.schedule.remove(name)
        if record.conflict is not None:
            return  # it never touched the engine
        refs = model_refs(record.model.spec)
        users = sorted(
            other.model.name
            for other in self.records.values()
            if other.conflict is None and refs & model_refs(other.model.spec)
        )
        if users:
            log_event(
                log,
                "removed",
                f"{record.model.spec.model} stays on the engine: {', '.join(users)} still declares it",
                model=name,
                file=str(record.source),
            )
            return
        log_event(
            log,
            "removed",
            f"gone from the files for the deletion grace period ({self.files.grace:g}s); "
            f"applying deletionPolicy {record.model.spec.deletion_policy}",
            model=name,
            file=str(record.source),
        )
        self.deletions[name] = Deletion(record.model, record.source)
        self.schedule.due_at(name, now)

    # ---- observation and work ------------------------------------------------------------------

    def _after_observe(self, observation: Observation, names: list[str], now: float) -> list[str]:
        """Track the engine's health; returns the names to work on."""
        self.engine.last_observed = self.clocks.wall()
        if observation.error is not None:
            self._engine_down(str(observation.error))
            # Probe again soon, at most one interval away; every model waits for the engine.
            self.schedule.next_drift = now + min(
                self.interval, backoff_delay(self.engine.failures, self.clocks.jitter())
            )
            for name in names:
                if name in self.records:
                    self._unreachable(self.records[name], observation.error)
                    self.metrics.reconciles.labels("unreachable").inc()
                elif name in self.deletions:
                    # A deletion waits too, without using up an attempt: a file removed during an
                    # engine restart is finalized when the engine answers again (every name is then due).
                    self.deletions[name].last_error = f"waiting for the engine: {observation.error}"
            return []
        if self.engine.up is False:
            names = self._engine_back()
            self.schedule.next_drift = now + self.interval
        elif self.engine.up is None:
            log_event(log, "engine_up", "the engine answers", engine=self.engine.url)
        self.engine.up, self.engine.failures, self.engine.last_error = True, 0, None
        self.metrics.engine_up.set(1)
        return names

    def _engine_down(self, error: str) -> None:
        """The engine did not answer (an observation or a watch look): one log line when it goes down."""
        self.engine.failures += 1
        self.engine.last_error = error
        if self.engine.up is not False:
            log_event(
                log,
                "engine_down",
                f"cannot observe the engine: {error}; retrying",
                level=logging.WARNING,
                engine=self.engine.url,
            )
        self.engine.up = False
        self.metrics.engine_up.set(0)

    def _engine_back(self) -> list[str]:
        """The engine answers again: one log line; every model and deletion not in flight is due."""
        log_event(log, "engine_up", "the engine answers again; reconciling every model", engine=self.engine.url)
        return [
            n
            for n in [*self.records, *self.deletions]
            if n not in self._busy and (n in self.deletions or self.records[n].conflict is None)
        ]

    # ---- the engine watch ----------------------------------------------------------------------

    def _watch_down(self, error: Exception) -> None:
        self.engine.last_observed = self.clocks.wall()
        self._engine_down(str(error))

    def _watch_up(self, answered_at: float) -> None:
        if self.engine.up is False:
            self.schedule.due_now(self._engine_back(), answered_at)
            self.schedule.next_drift = answered_at + self.interval
        self.engine.up, self.engine.failures, self.engine.last_error = True, 0, None
        self.engine.last_observed = self.clocks.wall()
        self.metrics.engine_up.set(1)
        self._wake.set()

    def _disturbed(self, disturbances: list[Disturbance], noticed_at: float) -> None:
        """The watch saw declared configs lapse: those models are due now (or once their work in flight ends)."""
        for disturbance in disturbances:
            record = self.records.get(disturbance.name)
            if record is None or record.conflict is not None:
                continue
            self._causes.noticed(disturbance.name, disturbance.what, noticed_at)
            if disturbance.name in self._busy:
                self._recheck.add(disturbance.name)
            else:
                self.schedule.due_at(disturbance.name, noticed_at)
        self._wake.set()

    def _expect(self, record: Record) -> None:
        """Keep the watch's expectation of this model current: its verified config while Ready."""
        if self.watch is None:
            return
        name, status = record.model.name, record.engine
        if status is None or not status.ready or record.conflict is not None or not status.backend:
            self.watch.forget(name)
            return
        if status.model_id is None:
            self.watch.forget(name)
            return
        spec = record.model.spec
        body = render_configure(spec, status.backend).body
        self.watch.expect(Expected(name, status.backend, status.model_id, effective_mode(spec), body))

    def _unreachable(self, record: Record, error: EngineError | str) -> None:
        self._set_status(record, unreachable_status(self.reconciler.name, error, record.engine, record.generation))

    async def _work(self, name: str, observation: Observation) -> None:
        if self.watch is not None:
            self.watch.forget(name)  # expected again once its config is verified
        if name in self.deletions:
            self._causes.forget(name)
        try:
            async with self._slots:
                if name in self.deletions:
                    await self._finalize(name, observation)
                elif name in self.records:
                    await self._reconcile(name, observation)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in one model's reconcile must not stop the others
            log.exception("reconcile of %s failed unexpectedly; retrying on the next drift pass", name)
            if name in self.schedule:
                self.schedule.on_drift(name)
        finally:
            self._busy.pop(name, None)
            if name in self._recheck:
                self._recheck.discard(name)
                if name in self.records:
                    self.schedule.due_at(name, self.clocks.monotonic())
            self._wake.set()

    async def _reconcile(self, name: str, observation: Observation) -> None:
        record = self.records[name]
        model = record.model
        started = time.perf_counter()
        outcome = await self.reconciler.reconcile(name, model, observation)
        self.metrics.duration.observe(time.perf_counter() - started)
        now = self.clocks.monotonic()
        current = self.records.get(name)
        if current is None or current.conflict is not None:
            return  # removed or overruled while we worked; already handled
        if current.model != model:
            self.schedule.due_at(name, now)  # changed while we worked: the new version next
            return
        status = outcome.status
        self._set_status(current, status)
        result = "ready" if status.ready else "stalled" if status.stalled else "retrying"
        self.metrics.reconciles.labels(result).inc()
        if not status.ready:
            self.metrics.errors.labels(status.reason.value).inc()
        else:
            self._causes.forget(name)
        requeue = outcome.requeue_after
        if requeue is not None and self.watch is not None and status.reason in _BUSY_REASONS:
            # A runner serving a request: try again about once a watch period, so that the config is
            # applied soon after the request ends (a configure never cuts a request: the engine answers 409).
            requeue = min(requeue, self.watch.period)
        if requeue is not None:
            self.schedule.due_at(name, now + requeue)
        else:
            self.schedule.on_drift(name)

    async def _finalize(self, name: str, observation: Observation) -> None:
        deletion = self.deletions[name]
        outcome = await self.reconciler.finalize(name, deletion.model, observation)
        now = self.clocks.monotonic()
        if self.deletions.get(name) is not deletion:
            if name in self.records:  # declared again while we were deleting it
                self.schedule.due_at(name, now)
            return
        step = next_step(DELETE_RETRIES, deletion.attempts, outcome, self.clocks.jitter())
        if step.retry_in is not None:
            # Only a finalize that ran counts: it runs only after an observation the engine answered.
            deletion.last_error, deletion.attempts = step.message, step.failures
            self.schedule.due_at(name, now + step.retry_in)
            return
        del self.deletions[name]
        self.schedule.remove(name)
        if step.done:
            log_event(log, "deleted", step.message, model=name)
            return
        spec = deletion.model.spec
        log_event(
            log,
            "delete_abandoned",
            f"{gave_up_message(spec.deletion_policy, step.failures, step.message)}; "
            f"clean up by hand ({cleanup_commands(spec)})",
            level=logging.WARNING,
            model=name,
        )

    # ---- status --------------------------------------------------------------------------------

    def _set_status(self, record: Record, status: EngineStatus) -> None:
        name = record.model.name
        # What a previous process applied (the saved status; then this status, for the next one): a
        # restart keeps lastAppliedTime and a DriftRepaired reason, as the operator does from the object.
        status = inherit_persisted(status, record.persisted)
        record.engine = status
        self._expect(record)
        previous = record.conditions or record.restored
        record.conditions = tuple(summarize([status], record.generation, previous, self.clocks.wall()))
        record.restored = ()
        entry = entry_for(spec_fingerprint(record.model.spec), record.generation, record.conditions, status)
        record.persisted = entry.get("engine")
        self.state.put(name, entry)
        if self._ready.update(name, record.ready):
            log_event(log, "ready", status.message, model=name, file=str(record.source))
        self._update_gauges()

    def _update_gauges(self) -> None:
        self.metrics.models.set(len(self.records))
        self.metrics.models_ready.set(len(self._ready))

    def _event(self, key: str, kind: str, reason: str, message: str) -> None:
        record = self.records.get(key)
        source = str(record.source) if record else None
        message = self._causes.explain(key, reason, message)
        log_event(log, reason, message, level=event_level(kind), model=key, file=source)

    def _progress(self, key: str, status: EngineStatus) -> None:
        record = self.records.get(key)
        if record is not None:
            self._set_status(record, status)

    def snapshot(self) -> dict[str, Any]:
        """What GET /status serves."""
        records = sorted(self.records.values(), key=lambda r: r.model.name)
        now = self.clocks.monotonic()
        pending = self.files.pending_removal(now)
        models = [r.to_dict() for r in records]
        for entry in models:
            if entry["name"] in pending:
                entry["pendingRemoval"] = (
                    f"pending removal in {math.ceil(pending[entry['name']])} s: gone from its file; "
                    "it stays if the file declares it again before then"
                )
        return {
            "directory": str(self.root),
            "interval": self.interval,
            "watcherError": self.watcher_error,
            "engine": {
                "name": self.reconciler.name,
                "url": self.engine.url,
                "foundBy": self.engine.source,
                "up": self.engine.up,
                "lastObserved": rfc3339(self.engine.last_observed) if self.engine.last_observed else None,
                "lastError": self.engine.last_error,
                "requestsSent": self.client.requests_sent,
                # What the engine's release keeps (controller/engine/capabilities.py), once detected.
                "capabilities": self.reconciler.capabilities.to_dict() if self.reconciler.capabilities else None,
                "watch": None
                if self.watch is None
                else {
                    "period": self.watch.period,
                    "looks": self.watch.stats.looks,
                    "bytes": self.watch.stats.bytes,
                    "listings": self.watch.stats.listings,
                    "lastSize": self.watch.stats.last_size,
                    "lastListingSeconds": round(self.watch.stats.last_listing_seconds, 4),
                    "watched": len(self.watch.expected()),
                },
            },
            "summary": {
                "models": len(records),
                "ready": sum(1 for r in records if r.ready),
                "stalled": sum(1 for r in records if r.engine is not None and r.engine.stalled),
                "fileErrors": len(self.files.errors),
                "pendingRemoval": len(pending),
            },
            "models": models,
            "deleting": [
                {
                    "name": name,
                    "model": d.model.spec.model,
                    "deletionPolicy": d.model.spec.deletion_policy,
                    "attempts": d.attempts,
                    "lastError": d.last_error,
                    "source": str(d.source),
                }
                for name, d in sorted(self.deletions.items())
            ],
            "deletionGrace": self.files.grace,
            "savedStatus": self.state.report(),
            "files": self.files.report(now),
        }

    def healthy(self, now: float) -> bool:
        """The loop has run within two intervals (plus slack): it is not stuck."""
        return self.last_pass is not None and now - self.last_pass <= 2 * self.interval + 10
