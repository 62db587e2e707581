"""The operator's side of a LocalModel going away: its finalizer and the clean-ups still owed after it.

    deleted -> deletionPolicy on each targeted engine (retried: controller.deletion) -> finalizer released
    an engine that keeps failing -> released anyway, a clean-up owed (cleanups.py) -> applied when it answers

A node agent runs the same deletionPolicy step on its engine, then drops its entry from its
LocalModelNode; the aggregator releases the object's one finalizer (agent.py, aggregator.py).

What each object's pass remembers (its lock, body, claim) and whether this process leads stay with the
Operator (runtime.py), which calls in here holding the object's lock; `FinalizationHost` is what this asks
of it. The owed clean-ups are this module's own state, recorded in a ConfigMap (cleanups.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from controller.deletion import deletion_retries, gave_up_message, retry_finalize
from controller.fleet import Event
from controller.logs import log_event
from controller.operator import cleanups
from controller.operator.cleanups import Cleanup
from controller.operator.config import OperatorConfig
from controller.operator.engines import EngineRef
from controller.operator.kube import KubeClient, KubeError
from controller.operator.metrics import Metrics
from controller.operator.status_writer import EventPoster, object_key
from controller.reconcile import EngineReconciler
from controller.refs import canonical_ref
from controller.spec import API_VERSION, KIND, LocalModel, ObjectMeta, SpecInvalid, validate_spec
from controller.waits import sleep_or_wake

log = logging.getLogger("localmodel.operator")


class FinalizingEngine(Protocol):
    """An engine as finalization uses it (runtime.Engine)."""

    @property
    def ref(self) -> EngineRef: ...

    @property
    def reconciler(self) -> EngineReconciler: ...


class FinalizationHost(Protocol):
    """What finalization asks of the operator that runs it (runtime.Operator)."""

    leading: bool  # only the leader retries owed clean-ups
    closed: bool


class Finalization:
    """Finalizes LocalModels on this process's engines and retries the clean-ups owed after a released one."""

    def __init__(
        self,
        host: FinalizationHost,
        config: OperatorConfig,
        kube: KubeClient,
        metrics: Metrics,
        *,
        engines: Callable[[], Sequence[FinalizingEngine]],
        post_event: EventPoster,
        clock: Callable[[], datetime],
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._host = host
        self.config = config
        self.identity = config.identity
        self.kube = kube
        self.metrics = metrics
        self._engines = engines
        self._post_event = post_event
        self._clock = clock
        self._sleep = sleep
        self.owed: dict[str, Cleanup] = {}  # clean-ups owed after a released finalizer (cleanups.py), by id
        self.cleanups_task: asyncio.Task[None] | None = None
        self._cleanups_wake = asyncio.Event()
        self._unsaved: set[str] = set()  # entries the ConfigMap does not hold (its write failed)

    # ---- deletion ------------------------------------------------------------------------------

    async def finalize(self, obj: Mapping[str, Any], targets: Sequence[FinalizingEngine]) -> bool:
        """Apply `deletionPolicy` on every targeted engine, with bounded retries. An engine that keeps
        failing does not block the deletion: the finalizer is released with a Warning event. False: the
        spec never validated, so nothing was applied (and nothing is done)."""
        meta = obj["metadata"]
        key = object_key(obj)
        try:
            spec = validate_spec(obj.get("spec"), meta["name"])
        except SpecInvalid:
            log.info("%s: the spec never validated, so nothing was applied; releasing", key)
            return False
        model = LocalModel(
            metadata=ObjectMeta(name=meta["name"], namespace=meta.get("namespace"), generation=meta.get("generation")),
            spec=spec,
        )
        await asyncio.gather(*(self._finalize_on(engine, key, model, obj) for engine in targets))
        return True

    async def _finalize_on(self, engine: FinalizingEngine, key: str, model: LocalModel, obj: Mapping[str, Any]) -> None:
        retries = deletion_retries(self.config.finalize_backoff, self.config.finalize_attempts)
        step = await retry_finalize(lambda: engine.reconciler.finalize(key, model), retries, self._sleep)
        if step.done:
            log_event(log, Event.DELETION_APPLIED, step.message, model=key, engine=engine.ref.name)
            self.metrics.finalizations.labels("done").inc()
            return
        self.metrics.finalizations.labels("released-after-errors").inc()
        entry = Cleanup(
            key=key,
            uid=str(obj["metadata"].get("uid", "")),
            engine=engine.ref.name,
            spec=dict(obj.get("spec") or {}),
            released=self._clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
            reason=step.message,
        )
        self.owed[entry.id] = entry
        saved = await self._save_cleanups()
        message = (
            "released the finalizer: "
            f"{gave_up_message(model.spec.deletion_policy, step.failures, step.message, engine.ref.name)}; the engine "
            "may still hold the model and its config: it is applied when the engine answers again "
            + (f"(recorded in ConfigMap {cleanups.CONFIGMAP_NAME})" if saved else "(recorded in memory only)")
        )
        log_event(log, Event.FINALIZER_RELEASED, message, level=logging.WARNING, model=key, engine=engine.ref.name)
        self._post_event(obj, "Warning", Event.FINALIZER_RELEASED, message)
        self.start_cleanups()

    # ---- clean-ups owed after a released finalizer (cleanups.py) ------------------------------
    async def load_cleanups(self) -> None:
        """Read the record of pending clean-ups (at start, and again on becoming the leader: the previous
        leader may have added or finished some meanwhile), and retry them from now on. The record wins
        over what this process remembers, except entries it could not save itself."""
        namespace = self.config.operator_namespace
        try:
            configmap = await self.kube.get_configmap(namespace, cleanups.CONFIGMAP_NAME)
        except KubeError as exc:
            log.warning(
                "cannot read ConfigMap %s/%s (%s): clean-ups owed after a released finalizer are kept in memory "
                "only; create it (deploy/ ships it) and let the operator get and patch it",
                namespace,
                cleanups.CONFIGMAP_NAME,
                exc,
            )
            return
        loaded = cleanups.decode((configmap.get("data") or {}).get(self.identity.agent_id))
        unsaved = {k: v for k, v in self.owed.items() if k in self._unsaved}
        self.owed = {**loaded, **unsaved}
        self.metrics.pending_cleanups.set(len(self.owed))
        if loaded:
            log_event(log, "CleanupsPending", f"{len(loaded)} clean-ups owed to engines after released finalizers")
        self.start_cleanups()

    async def _save_cleanups(self) -> bool:
        self.owed = cleanups.bounded(self.owed)
        self.metrics.pending_cleanups.set(len(self.owed))
        try:
            await self.kube.apply_configmap_key(
                self.config.operator_namespace,
                cleanups.CONFIGMAP_NAME,
                self.identity.agent_id,
                cleanups.encode(self.owed),
                field_manager=self.identity.field_manager,
            )
        except KubeError as exc:
            log.error(
                "cannot record the pending clean-ups in ConfigMap %s/%s (%s): they are kept in memory only",
                self.config.operator_namespace,
                cleanups.CONFIGMAP_NAME,
                exc,
            )
            self._unsaved = set(self.owed)
            return False
        self._unsaved = set()
        return True

    def engine_answers(self) -> None:
        """An engine was seen answering again (the engine watch): try the owed clean-ups now."""
        self._cleanups_wake.set()

    def start_cleanups(self) -> None:
        self.metrics.pending_cleanups.set(len(self.owed))
        if (
            self.owed
            and not self._host.closed
            and self._host.leading
            and (self.cleanups_task is None or self.cleanups_task.done())
        ):
            self.cleanups_task = asyncio.create_task(self._retry_cleanups_loop(), name="pending clean-ups")

    async def _retry_cleanups_loop(self) -> None:
        """Until every owed clean-up is done: try again after a growing delay (capped), at once when an
        engine is seen answering again."""
        failures = 0
        while self.owed and not self._host.closed:
            delay = cleanups.RETRIES.after(failures)
            assert delay is not None  # clean-ups are retried until they are done or dropped
            self._cleanups_wake.clear()
            await sleep_or_wake(delay, self._cleanups_wake.wait(), sleep=self._sleep)
            failures = 0 if await self.retry_cleanups() else failures + 1

    async def retry_cleanups(self) -> bool:
        """One round over the owed clean-ups; True when an engine owed one answered."""
        try:
            declared = await self._declared_models()
        except KubeError as exc:
            log.debug("pending clean-ups wait: cannot list LocalModels: %s", exc)
            return False
        changed = answered = False
        engines = {engine.ref.name: engine for engine in self._engines()}
        for entry in list(self.owed.values()):
            engine = engines.get(entry.engine)
            if engine is None:
                log.warning("%s: engine %s is no longer configured; its clean-up is dropped", entry.key, entry.engine)
                del self.owed[entry.id]
                changed = True
                continue
            if canonical_ref(entry.model) in declared:
                log_event(
                    log,
                    "CleanupSuperseded",
                    f"{entry.model} is declared again by a LocalModel; the config it left on {entry.engine} is kept",
                    model=entry.key,
                )
                del self.owed[entry.id]
                changed = True
                continue
            try:
                spec = validate_spec(entry.spec, entry.key.partition("/")[2])
            except SpecInvalid:
                del self.owed[entry.id]
                changed = True
                continue
            model = LocalModel(metadata=ObjectMeta(name=entry.key.partition("/")[2]), spec=spec)
            outcome = await engine.reconciler.finalize(entry.key, model)
            if not outcome.done:
                continue
            answered = changed = True
            del self.owed[entry.id]
            self.metrics.finalizations.labels("cleaned-up-later").inc()
            message = (
                f"engine {entry.engine} answers again: applied deletionPolicy {spec.deletion_policy} that was "
                f"owed since the finalizer was released at {entry.released}: {outcome.message}"
            )
            log_event(log, "CleanedUp", message, model=entry.key, engine=entry.engine)
            self._post_event(entry.involved_object(API_VERSION, KIND), "Normal", "CleanedUp", message)
        if changed:
            await self._save_cleanups()
        return answered

    async def _declared_models(self) -> set[str]:
        """The models every live LocalModel declares (what a clean-up must never remove)."""
        items: list[dict[str, Any]] = []
        for namespace in self.config.namespaces or (None,):
            items.extend(await self.kube.list_localmodels(namespace))
        return {
            canonical_ref(str(item["spec"]["model"]))
            for item in items
            if isinstance(item.get("spec"), dict) and item["spec"].get("model")
        }
