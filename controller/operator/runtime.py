"""The operator's one pass per LocalModel, whatever triggered it, and its finalizer.

    pass = parse the spec -> reconcile on each targeted engine (controller.reconcile) -> write status
           (central mode: the object's status; a node agent: its node's LocalModelNode report)

The kopf handlers (handlers.py) and, for a node agent, agent.py only decide *when* a pass runs;
everything else is here or in the parts this composes, free of kopf, so it can be tested with a fake API
server and emulated engines: the status writes, pull progress and missing permissions are
status_writer.py's; deletion on the engines and the clean-ups owed after a released finalizer are
finalization.py's.
State kept between passes is only what makes them cheap (the shared engine observations, when each object
last passed) and can be lost: a restarted operator re-derives everything from the objects and the engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Gauge

from controller.desired import render_configure
from controller.engine.client import EngineClient
from controller.engine.watch import Disturbance, EngineWatch, Expected
from controller.fleet import Claims, Readiness, RepairCauses, conflict_status, event_level
from controller.logs import log_event
from controller.operator.config import OperatorConfig
from controller.operator.election import LeaderElector
from controller.operator.engines import EngineRef
from controller.operator.finalization import Finalization
from controller.operator.identity import CENTRAL
from controller.operator.kube import KubeClient, node_labels
from controller.operator.metrics import Metrics
from controller.operator.nodereport import NodeReport, report_scope
from controller.operator.outage import ApiOutage
from controller.operator.status_writer import (
    FORBIDDEN_RETRIES,
    STATUS_RETRY_SECONDS,
    EventPoster,
    PassProgress,
    StatusWriter,
    object_key,
)
from controller.operator.statuses import invalid_spec_status, spec_error_message
from controller.operator.targeting import raw_node_selector, selector_matches
from controller.plan import Observation, effective_mode
from controller.reconcile import EngineReconciler, Outcome, utcnow
from controller.shared_read import SharedRead
from controller.spec import LocalModel, LocalModelSpec, ObjectMeta, SpecInvalid, validate_spec
from controller.status import EngineStatus, Phase, Reason

log = logging.getLogger("localmodel.operator")

# A pass after a spec change (or an object's first) accepts an engine observation this recent, so
# that a burst of new objects shares a few observations instead of making one each.
FRESH_WINDOW_SECONDS = 1.0


@dataclass
class Engine:
    """One engine and everything the passes share about it."""

    ref: EngineRef
    reconciler: EngineReconciler
    observations: SharedRead[Observation]  # the engine observed, shared by every LocalModel's pass
    client: EngineClient
    watch: EngineWatch | None = None  # looks at the engine every watch period (None: drift passes only)


@dataclass
class ObjectState:
    """What passes remember about one LocalModel (by uid). All of it may be lost."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_pass_end: float | None = None  # monotonic end of the previous pass
    last_generation: int | None = None
    invalid_reported: int | None = None  # the generation whose InvalidSpec event was posted
    progress: PassProgress | None = None  # the running pass's pull progress
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set on every watch event of the object
    forbidden: int = 0  # status writes refused in a row for a missing permission
    held_events: list[tuple[str, str, str]] | None = None  # the running pass's Normal events (kind, reason, message)


def kube_now() -> datetime:
    """Now, to the second: all that a metav1.Time in the object's status keeps, so what is written compares
    equal to what is read back (reconcile.utcnow is the one clock; this only rounds it)."""
    return utcnow().replace(microsecond=0)


class Operator:
    """Reconciles LocalModels against this process's engines and writes their status."""

    def __init__(
        self,
        config: OperatorConfig,
        kube: KubeClient,
        engines: Sequence[EngineRef],
        *,
        metrics: Metrics | None = None,
        post_event: EventPoster = lambda *_: None,
        nodes: Mapping[str, Mapping[str, str]] | None = None,
        clock: Callable[[], datetime] = kube_now,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
        client_factory: Callable[[EngineRef], EngineClient] | None = None,
        elector: LeaderElector | None = None,
    ) -> None:
        self.config = config
        self.identity = config.identity
        self.kube = kube
        self.metrics = metrics or Metrics()
        self._post_event = post_event
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self.nodes: dict[str, dict[str, str]] = {k: dict(v) for k, v in (nodes or {}).items()}
        # The status writes, their pull progress and the permissions they found missing (status_writer.py).
        self.status = StatusWriter(
            self,
            config,
            kube,
            self.metrics,
            post_event=post_event,
            on_permission_back=self._wake_forbidden,
            clock=clock,
            monotonic=monotonic,
            sleep=sleep,
        )
        make_client = client_factory or (lambda ref: EngineClient(ref.url, name=ref.name))
        self.engines = [self._engine(ref, make_client(ref)) for ref in engines]
        # Deletion on the engines, gone agents' finalizers, the clean-ups owed after (finalization.py).
        self.finalization = Finalization(
            self,
            config,
            kube,
            self.metrics,
            engines=lambda: self.engines,
            post_event=post_event,
            clock=clock,
            sleep=sleep,
        )
        self._passes = asyncio.Semaphore(config.worker_limit)
        self._states: dict[str, ObjectState] = {}
        self._bodies: dict[str, Mapping[str, Any]] = {}  # key -> latest body, for Events
        self._claims = Claims()  # who owns each (model, mode): the oldest object
        self._ready = Readiness[str]()  # by uid
        self._cleanups_reload: asyncio.Future[None] | None = None
        self.outage: ApiOutage | None = None  # API-server outages (outage.py), set by the kopf front-end
        self.closed = False
        self._watch_stop = asyncio.Event()
        self._watch_tasks: list[asyncio.Task[None]] = []
        # What an engine watch noticed, per (engine, object key), until the repair is verified.
        self._causes = RepairCauses[tuple[str, str]](self._monotonic)  # (engine, key): what the watch noticed
        # Central mode with several replicas (election.py): only the leader reconciles and writes.
        self.elector = elector
        self.leading = elector is None
        # Node-agent mode (agent.py): results go to this node's LocalModelNode, not to the LocalModels.
        self.node_report = (
            NodeReport(config.node_name, report_scope(config.namespaces))
            if config.mode != CENTRAL and config.node_name
            else None
        )
        self.on_report: Callable[..., None] = lambda **_: None  # the report changed (urgent=False: progress)
        self._elector_task: asyncio.Task[None] | None = None
        self.on_lost_leadership: Callable[[], None] = lambda: None
        if elector is not None:
            elector.on_started, elector.on_stopped = self._started_leading, self._stopped_leading
            self._leader_gauge = Gauge(
                "localmodel_operator_leader",
                "1 while this central replica holds the leader Lease (it alone reconciles and writes status)",
                registry=self.metrics.registry,
            )

    def _engine(self, ref: EngineRef, client: EngineClient) -> Engine:
        reconciler = EngineReconciler(
            ref.name,
            client,
            on_event=lambda key, kind, reason, message: self._engine_event(ref.name, key, kind, reason, message),
            on_progress=self._engine_progress,
        )
        engine = Engine(ref, reconciler, SharedRead(reconciler.observe, self._monotonic), client)
        if self.config.watch_period:
            engine.watch = EngineWatch(
                client,
                period=self.config.watch_period,
                on_disturbed=lambda found, noticed: self._disturbed(engine, found, noticed),
                on_down=lambda error: self._engine_down(engine, error),
                on_up=lambda answered: self._engine_back(engine, answered),
                clock=self._monotonic,
            )
        return engine

    def start_watches(self) -> None:
        """Start one engine watch per engine (in the running event loop); `aclose` stops them. With a
        leader elector, start the election: the engine watches start with leadership."""
        if self.elector is not None and not self.leading:
            if self._elector_task is None:
                self._elector_task = asyncio.create_task(self.elector.run(self._watch_stop), name="leader election")
            return
        for engine in self.engines:
            if engine.watch is not None:
                engine.watch.client = engine.client.sibling()  # its own connection: the probe compares connections
                task = asyncio.create_task(engine.watch.run(self._watch_stop), name=f"engine watch {engine.ref.name}")
                self._watch_tasks.append(task)

    async def aclose(self, grace: float = 10.0) -> None:
        """Stop starting passes, let the running ones finish (up to `grace` seconds), close the clients."""
        self.closed = True
        self._watch_stop.set()
        for task in self._watch_tasks:
            task.cancel()
        await asyncio.gather(*self._watch_tasks, return_exceptions=True)
        for engine in self.engines:
            if engine.watch is not None and engine.watch.client is not engine.client:
                await engine.watch.client.aclose()
        for background in (self.status.permission_check, self.finalization.cleanups_task):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background

        async def drain() -> None:
            for _ in range(self.config.worker_limit):
                await self._passes.acquire()

        try:
            await asyncio.wait_for(drain(), timeout=grace)
        except TimeoutError:
            log.warning("passes still running after %.0fs; closing the engine clients anyway", grace)
        if self._elector_task is not None:
            self._elector_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._elector_task
        if self.elector is not None:
            await self.elector.release()  # after the passes: the next leader never overlaps with them
        for engine in self.engines:
            await engine.client.aclose()

    @property
    def central(self) -> bool:
        return self.config.mode == CENTRAL

    # ---- one pass ------------------------------------------------------------------------------

    async def reconcile_object(self, body: Mapping[str, Any], *, live: bool = False) -> float | None:
        """One pass over one LocalModel. Returns when to come back (seconds), or None for the next
        drift pass or spec change. `live`: `body` is kopf's live view of the object (updated by every
        watch event, which `object_changed` reports): the status write then waits for the object to
        carry this process's finalizer, and uses its resourceVersion from then."""
        obj = copy.deepcopy(dict(body))
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") or self.closed:
            return None  # deleting (the finalizer applies deletionPolicy; no re-apply) or shutting down
        if not self.leading:
            self.state(meta["uid"])  # woken when this replica becomes leader
            return None  # a standby replica (election.py): the leader reconciles
        key, generation = object_key(obj), meta.get("generation")
        state = self.state(meta["uid"])
        # An observation made after this object's previous pass ended: shared with every other object
        # that can take it, and never the one the previous pass already judged.
        if state.last_pass_end is not None and state.last_generation == generation:
            not_before = state.last_pass_end
        else:
            not_before = self._monotonic() - FRESH_WINDOW_SECONDS
        state.last_generation = generation
        self._bodies[key] = obj
        async with self._passes, state.lock:
            with self.metrics.duration.time():
                targets = self.targets(obj)
                state.progress = PassProgress(obj, live=body if live else None)
                state.held_events = []
                try:
                    statuses, requeue, result = await self._reconcile_engines(obj, targets, not_before, state)
                finally:
                    await self.status.stop_progress(state)
                if live:
                    written_against = await self.status.with_finalizer(obj, body, state)
                    if written_against is not obj:
                        obj = self._bodies[key] = written_against
                try:
                    if self.node_report is not None:
                        ready: bool | None = self._report(obj, statuses)
                    else:
                        update = await self.status.publish(obj, statuses, state=state)
                        ready = None if update is None else update.ready
                finally:
                    held, state.held_events = state.held_events or [], None
                # The pass's Normal events ("applied and verified") go out once its status is written: an
                # operator that cannot write status must not look healthy (the Warning says why instead).
                if state.forbidden:
                    log.debug("%s: %d Normal events not posted (status not written)", key, len(held))
                else:
                    for kind, reason, message in held:
                        self._post_event(obj, kind, reason, message)
        state.last_pass_end = self._monotonic()
        if state.forbidden:
            requeue = FORBIDDEN_RETRIES.after(state.forbidden)
        elif ready is None:  # the status could not be written
            requeue = min(requeue or STATUS_RETRY_SECONDS, STATUS_RETRY_SECONDS)
        else:
            self._ready.update(meta["uid"], ready)
        self.metrics.reconciles.labels(result).inc()
        self.metrics.models_ready.set(len(self._ready))
        self.metrics.models.set(len(self._states))
        return requeue

    async def _reconcile_engines(
        self, obj: dict[str, Any], targets: Sequence[Engine], not_before: float, state: ObjectState
    ) -> tuple[list[EngineStatus], float | None, str]:
        meta = obj["metadata"]
        key, generation = object_key(obj), meta.get("generation")
        try:
            spec = validate_spec(obj.get("spec"), meta["name"])
        except SpecInvalid as exc:
            self._claims.release(key)  # an invalid spec claims no model: a valid one may take it
            if state.invalid_reported != generation:
                state.invalid_reported = generation
                self._post_event(obj, "Warning", "InvalidSpec", spec_error_message(exc))
            return [invalid_spec_status(e.ref.name, exc, generation) for e in targets], None, "invalid"
        if not targets:
            self._claims.release(key)
            return [], None, "untargeted"
        conflict = self._conflict(key, meta.get("creationTimestamp", ""), spec)
        if conflict is not None:
            return [conflict_status(e.ref.name, conflict, generation) for e in targets], None, "stalled"
        model = LocalModel(
            metadata=ObjectMeta(name=meta["name"], namespace=meta.get("namespace"), generation=generation), spec=spec
        )
        outcomes = await asyncio.gather(*(self._reconcile_on(e, key, model, not_before) for e in targets))
        statuses = [outcome.status for outcome in outcomes]
        delays = [o.requeue_after for o in outcomes if o.requeue_after is not None]
        for status in statuses:
            if status.phase in (Phase.RETRYING, Phase.STALLED):
                self.metrics.errors.labels(status.reason.value).inc()
        if all(s.ready for s in statuses):
            result = "ready"
        elif any(s.stalled for s in statuses):
            result = "stalled"
        else:
            result = "progressing"
        return statuses, min(delays) if delays else None, result

    async def _reconcile_on(self, engine: Engine, key: str, model: LocalModel, not_before: float) -> Outcome:
        if engine.watch is not None:
            engine.watch.forget(key)  # being worked on: expected again once verified
        observation = await engine.observations.get(not_before)
        self.metrics.engines_up.labels(engine.ref.name).set(0 if observation.error else 1)
        outcome = await engine.reconciler.reconcile(key, model, observation)
        if engine.watch is None:
            return outcome
        status = outcome.status
        if status.ready and status.backend and status.model_id:
            self._causes.forget((engine.ref.name, key))
            body = render_configure(model.spec, status.backend).body
            engine.watch.expect(Expected(key, status.backend, status.model_id, effective_mode(model.spec), body))
        elif status.reason in (Reason.RUNNER_BUSY, Reason.RUNNER_STALE) and outcome.requeue_after is not None:
            # A runner serving a request: try about once a watch period, so that the config follows soon
            # after the request ends (a configure never cuts a request: the engine answers 409).
            return Outcome(status, min(outcome.requeue_after, engine.watch.period))
        return outcome

    # ---- the engine watches --------------------------------------------------------------------

    def _disturbed(self, engine: Engine, disturbances: list[Disturbance], noticed_at: float) -> None:
        """Declared configs lapsed on `engine`: wake just those objects' passes, with a fresh observation."""
        engine.observations.invalidate()
        for disturbance in disturbances:
            obj = self._bodies.get(disturbance.name)
            state = self._states.get(obj["metadata"].get("uid", "")) if obj is not None else None
            if state is None:
                continue
            self._causes.noticed((engine.ref.name, disturbance.name), disturbance.what, noticed_at)
            state.wake.set()

    def _engine_down(self, engine: Engine, error: Exception) -> None:
        self.metrics.engines_up.labels(engine.ref.name).set(0)
        message = f"engine {engine.ref.name} does not answer: {error}; probing"
        log_event(log, "EngineDown", message, level=logging.WARNING)
        self._node_event("Warning", "EngineDown", message)

    def _engine_back(self, engine: Engine, answered_at: float) -> None:
        self.metrics.engines_up.labels(engine.ref.name).set(1)
        message = f"engine {engine.ref.name} answers again; reconciling every LocalModel on it"
        log_event(log, "EngineUp", message)
        self._node_event("Normal", "EngineUp", message)
        engine.observations.invalidate()
        for state in self._states.values():
            state.wake.set()
        self.finalization.engine_answers()

    def _node_event(self, kind: str, reason: str, message: str) -> None:
        """A node agent's engine is its node's: going down and coming back are one Event each on the Node
        (`kubectl describe node`), however many LocalModels it serves. Central mode posts none: its engines
        are no Kubernetes object, and one Event per LocalModel would be N more beside the Warnings their
        passes post (docs/engine-watch.md)."""
        if self.central or not self.config.node_name:
            return
        node = self.config.node_name
        # The uid is the node's name, as the kubelet's Node events have it: `kubectl describe node` looks them up so.
        self._post_event(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "uid": node}}, kind, reason, message
        )

    def _conflict(self, key: str, created: str, spec: LocalModelSpec) -> str | None:
        """Another LocalModel already declares this model and mode on the same engines: the engine
        keeps one config per (model, mode), so the older object wins and this one is Stalled."""
        self._claims.claim(key, spec, rank=created)
        return self._claims.conflicts().get(key)

    # ---- results: the status writer (status_writer.py), a node agent's report (nodereport.py) ------

    def problems(self) -> list[str]:
        """What keeps this operator from working, for /readyz."""
        return self.status.problems()

    def _wake_forbidden(self) -> None:
        """A missing permission is back: wake the objects whose status it refused."""
        for state in self._states.values():
            if state.forbidden:
                state.wake.set()

    def _report(self, obj: Mapping[str, Any], statuses: Sequence[EngineStatus]) -> bool:
        """Node-agent mode: this node's result goes into its LocalModelNode (written by agent.py's writer);
        an object that does not target the node has no entry there. Returns whether it is ready here."""
        assert self.node_report is not None
        meta = obj["metadata"]
        if statuses:
            self.node_report.report(meta.get("namespace", ""), meta["name"], meta["uid"], statuses[0])
        else:
            self.node_report.drop(meta["uid"])
        self.on_report(urgent=True)
        return all(s.ready for s in statuses)

    @property
    def clock(self) -> Callable[[], datetime]:
        return self._clock

    def _engine_progress(self, key: str, status: EngineStatus) -> None:
        """A pull reported progress: into this node's report (node agents), or the object's status soon."""
        obj = self._bodies.get(key)
        if obj is not None and self.node_report is not None:
            meta = obj["metadata"]
            self.node_report.report(meta.get("namespace", ""), meta["name"], meta["uid"], status)
            self.on_report(urgent=False)
            return
        state = self._states.get(obj["metadata"]["uid"]) if obj is not None else None
        if state is not None and state.progress is not None:
            self.status.progress_reported(state.progress, status)

    # ---- targeting -----------------------------------------------------------------------------

    def targets(self, obj: Mapping[str, Any]) -> list[Engine]:
        """The engines this process reconciles the object on."""
        if self.central:
            return list(self.engines)
        labels = self.nodes.get(self.config.node_name or "", {})
        if selector_matches(raw_node_selector(obj.get("spec")), labels) and selector_matches(
            self.config.agent_node_selector, labels
        ):
            return list(self.engines)
        return []

    def expected_engines(self, obj: Mapping[str, Any]) -> list[str]:
        """The engines that should report on the object (central mode: every engine of this process)."""
        return [engine.ref.name for engine in self.engines]

    # ---- deletion ------------------------------------------------------------------------------

    async def finalize_object(self, body: Mapping[str, Any]) -> None:
        """Apply `deletionPolicy` on every targeted engine, with bounded retries. An engine that keeps
        failing does not block the deletion: the finalizer is released with a Warning event."""
        obj = copy.deepcopy(dict(body))
        meta = obj["metadata"]
        key = object_key(obj)
        self._bodies[key] = obj
        state = self.state(meta["uid"])
        if not await self._leading_or_gone(meta["uid"]):
            return  # a standby replica: the leader finalized the object and it is gone
        async with state.lock:
            self._claims.release(key)
            await self.finalization.finalize(obj, self.targets(obj))

    # ---- clean-ups owed after a released finalizer (finalization.py) --------------------------

    async def load_cleanups(self) -> None:
        """Read the record of owed clean-ups and retry them from now on (Finalization.load_cleanups)."""
        await self.finalization.load_cleanups()

    async def retry_cleanups(self) -> bool:
        """One round over the owed clean-ups; True when an engine owed one answered."""
        return await self.finalization.retry_cleanups()

    # ---- per-object memory and wake-ups -------------------------------------------------------

    def state(self, uid: str) -> ObjectState:
        state = self._states.get(uid)
        if state is None:
            state = self._states[uid] = ObjectState()
        return state

    async def wait_for_next_pass(self, uid: str, delay: float | None, stopped: Awaitable[Any]) -> None:
        """Sleep until `delay` (at most the drift interval) passes, the object is woken up, or `stopped`
        (kopf's daemon stopper) completes."""
        state = self.state(uid)
        waiters = [asyncio.ensure_future(state.wake.wait()), asyncio.ensure_future(stopped)]
        try:
            timeout = self.config.drift_interval if delay is None else min(delay, self.config.drift_interval)
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        state.wake.clear()

    def object_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event for a LocalModel: wake its pass when the spec changed; forget it when gone."""
        meta = body.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        if event_type == "DELETED":
            self.forget(body)
            return
        state = self._states.get(uid)
        if state is not None:
            state.changed.set()
            if state.last_generation != meta.get("generation"):
                state.wake.set()

    def forget(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = object_key(body)
        self._states.pop(meta.get("uid", ""), None)
        self._ready.forget(meta.get("uid", ""))
        self._bodies.pop(key, None)
        self._claims.release(key)
        for engine in self.engines:
            engine.reconciler.forget(key)
        self.metrics.models.set(len(self._states))
        self.metrics.models_ready.set(len(self._ready))

    def node_changed(self, event_type: str | None, node: Mapping[str, Any]) -> None:
        """A watch event for a Node (node-agent mode): keep the label index, and re-run every pass
        when the set of nodes or their labels changed (targets and expected engines may differ)."""
        name = (node.get("metadata") or {}).get("name")
        if not name:
            return
        before = self.nodes.get(name)
        if event_type == "DELETED":
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = node_labels(node)
        if self.nodes.get(name) != before:
            for state in self._states.values():
                state.wake.set()

    # ---- leader election (central mode with several replicas: election.py) ----------------------

    def _started_leading(self) -> None:
        self.leading = True
        self._leader_gauge.set(1)
        log_event(log, "LeaderElected", "this replica leads: reconciling every LocalModel")
        self.start_watches()
        self._cleanups_reload = asyncio.ensure_future(self.load_cleanups())  # the record as the last leader left it
        for state in self._states.values():
            state.wake.set()

    def _stopped_leading(self) -> None:
        self.leading = False
        self._leader_gauge.set(0)
        log_event(log, "LeadershipLost", "this replica lost the leader lease: stopping", level=logging.ERROR)
        self.on_lost_leadership()

    async def _leading_or_gone(self, uid: str) -> bool:
        """Wait until this replica leads (True) or the object is gone from the watch (False)."""
        while not self.leading:
            if uid not in self._states:  # (shutting down, kopf cancels this wait: the finalizer stays)
                return False
            await self._sleep(0.5)
        return True

    # ---- events --------------------------------------------------------------------------------

    def _engine_event(self, engine: str, key: str, kind: str, reason: str, message: str) -> None:
        message = self._causes.explain((engine, key), reason, message)
        log_event(log, reason, message, level=event_level(kind), model=key, engine=engine)
        if kind == "Normal":  # the engine changed: what other passes observed is out of date
            for candidate in self.engines:
                if candidate.ref.name == engine:
                    candidate.observations.invalidate()
        obj = self._bodies.get(key)
        if obj is not None:
            if len(self.engines) > 1 and engine not in message:
                message = f"engine {engine}: {message}"
            state = self._states.get(obj["metadata"].get("uid", ""))
            if kind == "Normal" and state is not None and state.held_events is not None:
                state.held_events.append((kind, reason, message))  # posted once the pass's status is written
                return
            self._post_event(obj, kind, reason, message)
