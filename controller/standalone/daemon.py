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

The daemon keeps the pass loop, declaring and reconciling, and the engine's health; it composes the
parts around them: the file watch (watcher.py: what changed, the supervised watcher), the deletions
(deletions.py: a deletionPolicy applied by the shared rule of controller/deletion.py) and the /status
document (snapshot.py). Fleet rules shared with the operator are controller/fleet.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.backoff import backoff_delay
from controller.desired import render_configure
from controller.documents import ModelSource
from controller.engine.client import EngineClient
from controller.engine.errors import EngineError
from controller.engine.watch import DEFAULT_WATCH_PERIOD, Disturbance, EngineWatch, Expected
from controller.fleet import Claims, Event, Readiness, RepairCauses, conflict_status, event_level
from controller.inputs import MAX_FILE_BYTES
from controller.logs import log_event
from controller.plan import Observation, effective_mode
from controller.policy import unreachable_status
from controller.reconcile import EngineReconciler, spec_fingerprint, utcnow
from controller.spec import LocalModel
from controller.standalone.defaults import DEFAULT_CONCURRENCY, DEFAULT_INTERVAL
from controller.standalone.deletions import Deletion, Deletions
from controller.standalone.files import DEFAULT_GRACE_SECONDS, ModelFiles
from controller.standalone.metrics import Metrics
from controller.standalone.schedule import Schedule
from controller.standalone.snapshot import EngineHealth, Record, engine_report, loop_healthy, status_document
from controller.standalone.state import StatusStore, entry_for, saved_conditions
from controller.standalone.watcher import FileWatch, in_thread
from controller.status import (
    EngineStatus,
    Phase,
    Reason,
    inherit_persisted,
    summarize,
)

log = logging.getLogger("localmodel.daemon")

# Requeues and backoffs that fall due close together share one observation: timer wakes come at
# most this often (file events and drift passes are not delayed).
MIN_OBSERVE_GAP = 1.0
ROOT_POLL_SECONDS = 1.0  # while the directory is missing, look for it this often
_BUSY_REASONS = frozenset({Reason.RUNNER_BUSY, Reason.RUNNER_STALE})


def with_generation(model: LocalModel, generation: int) -> LocalModel:
    """The model with `metadata.generation` set: the daemon counts spec changes per name, as the API server does."""
    return model.model_copy(update={"metadata": model.metadata.model_copy(update={"generation": generation})})


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
        self.deleting = Deletions(
            self.reconciler,
            self.schedule,
            self.records,
            grace=grace,
            monotonic=self.clocks.monotonic,
            jitter=self.clocks.jitter,
        )
        self.last_pass: float | None = None
        self._claims = Claims()  # who owns each (model, mode): the first declared
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self.watcher = FileWatch(
            self.files,
            wake=self._wake,
            monotonic=self.clocks.monotonic,
            interval=interval,
            file_errors=self.metrics.file_errors,
        )
        self._scanned = False
        self._last_observe = float("-inf")
        self._ready = Readiness[str]()  # names whose Ready condition is True
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

    @property
    def deletions(self) -> dict[str, Deletion]:
        """The deletions pending, by name (controller/standalone/deletions.py)."""
        return self.deleting.pending

    # ---- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, watch: bool = True) -> None:
        """Run until `stop` is set, then cancel in-flight work (an observation or reconcile waiting
        on a slow engine included) and return."""
        log_event(
            log,
            Event.STARTED,
            f"watching {self.root} for LocalModels; drift pass every {self.interval:g}s",
            directory=str(self.root),
            engine=self.engine.url,
        )
        tasks = [
            asyncio.create_task(self._loop(stop), name="reconcile loop"),
            asyncio.create_task(self._relay(stop), name="stop relay"),
        ]
        if watch:
            tasks.append(asyncio.create_task(self.watcher.run(stop), name="file watcher"))
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
            log_event(log, Event.STOPPED, "stopped")

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
        if not await in_thread(self.state.write, content, self.clocks.wall()):
            self._state_retry_at = now + self.interval

    async def run_pass(self) -> None:
        """One wake-up: re-read what changed, observe once if anything is due, start the due work."""
        now = self.clocks.monotonic()
        self.last_pass = now
        hinted = self.watcher.take_hints()
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
        self.watcher.notice(paths)

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

    # ---- files -> records ----------------------------------------------------------------------

    async def _sync_files(self, now: float, hinted: set[Path]) -> None:
        if await self.watcher.sync(now, hinted):
            self._apply_desired(now)

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
            self.deleting.start(self.records.pop(name), now)
        if self.files.root_readable:
            self.state.retain(self.records)  # the saved status of models no longer declared goes
        self._update_gauges()

    def _declare(self, name: str, model: LocalModel, source: ModelSource, conflict: str | None, now: float) -> None:
        record = self.records.get(name)
        if record is None:
            self.deleting.cancel(name)  # back before its deletion ran
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
                log_event(log, Reason.CONFLICT, conflict, level=logging.WARNING, model=name, file=str(source))
                self.reconciler.forget(name)
                self.schedule.remove(name)
                record.conflict = conflict
                self._set_status(record, conflict_status(self.reconciler.name, conflict, record.generation))
            return
        if changed or record.conflict is not None:
            if not changed:
                log_event(
                    log, Event.CONFLICT_RESOLVED, "no other LocalModel claims this model and mode any more", model=name
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
                elif name in self.deleting:
                    self.deleting.waiting(name, observation.error)  # without using up a try
            return []
        if self.engine.up is False:
            names = self._engine_back()
            self.schedule.next_drift = now + self.interval
        elif self.engine.up is None:
            log_event(log, Event.ENGINE_UP, "the engine answers", engine=self.engine.url)
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
                Event.ENGINE_DOWN,
                f"cannot observe the engine: {error}; retrying",
                level=logging.WARNING,
                engine=self.engine.url,
            )
        self.engine.up = False
        self.metrics.engine_up.set(0)

    def _engine_back(self) -> list[str]:
        """The engine answers again: one log line; every model and deletion not in flight is due."""
        log_event(log, Event.ENGINE_UP, "the engine answers again; reconciling every model", engine=self.engine.url)
        return [
            n
            for n in [*self.records, *self.deleting.pending]
            if n not in self._busy and (n in self.deleting or self.records[n].conflict is None)
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
        if name in self.deleting:
            self._causes.forget(name)
        try:
            async with self._slots:
                if name in self.deleting:
                    await self.deleting.finalize(name, observation)
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
            log_event(log, Event.READY, status.message, model=name, file=str(record.source))
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
        engine = engine_report(
            self.engine,
            self.reconciler.name,
            requests_sent=self.client.requests_sent,
            capabilities=self.reconciler.capabilities,
            watch=self.watch,
        )
        return status_document(
            root=self.root,
            interval=self.interval,
            now=self.clocks.monotonic(),
            watcher_error=self.watcher.error,
            engine=engine,
            records=self.records.values(),
            deleting=self.deleting.report(),
            files=self.files,
            saved_status=self.state.report(),
        )

    def healthy(self, now: float) -> bool:
        """The loop has run within two intervals (plus slack): it is not stuck."""
        return loop_healthy(self.last_pass, self.interval, now)
