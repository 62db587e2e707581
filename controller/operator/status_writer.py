"""The operator's writes of a LocalModel's status: the pass's result, the pull progress while a pull
lasts, and what a status write refused for a missing permission does.

    pass ends -> wait for kopf's finalizer (a new object) -> compose -> apply (409: re-read, again)
    pull reports -> at most one progress write per PROGRESS_WRITE_SECONDS, awaited before the pass's own
    403 -> Warning event once per object, /readyz names the permission, a recheck wakes the objects

Central mode only: node agents write no LocalModel status (agent.py). What the writer asks of the
operator (which engines should report, whether it leads, the outage tracker) comes through
`StatusHost`; it keeps nothing between passes but the missing permissions.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from controller.backoff import Retries
from controller.logs import log_event
from controller.operator.config import OperatorConfig
from controller.operator.kube import Conflict, Forbidden, Gone, KubeClient, KubeError, Permission
from controller.operator.metrics import Metrics
from controller.operator.outage import ApiOutage
from controller.operator.statuses import StatusUpdate, compose_status
from controller.status import EngineStatus

log = logging.getLogger("localmodel.operator")

STATUS_WRITE_ATTEMPTS = 3
PROGRESS_WRITE_SECONDS = 5.0  # at most one pull-progress status write per object this often
STATUS_RETRY_SECONDS = 10.0  # when the status could not be written for another reason than a conflict
# kopf starts an object's daemon before its finalizer patch lands: the first status write waits this long
# at most for the watch to show the object with the finalizer (a write with the resourceVersion from
# before the finalizer answers 409 and costs a GET and a second apply).
FINALIZER_WAIT_SECONDS = 5.0
# A status write refused for a missing permission (RBAC): each object retries with a backoff that grows
# to this cap, and one SelfSubjectAccessReview per missing permission every PERMISSION_RECHECK_SECONDS
# wakes them all as soon as the permission is granted again.
FORBIDDEN_RETRIES = Retries(first=STATUS_RETRY_SECONDS, cap=300.0)
PERMISSION_RECHECK_SECONDS = 5.0

EventPoster = Callable[[Mapping[str, Any], str, str, str], None]  # (object, type, reason, message)


@dataclass
class PassProgress:
    """Pull progress of one running pass, written to the object's status while the pull lasts (at most
    once per PROGRESS_WRITE_SECONDS), so that `kubectl get lm -o yaml` shows how far a long pull is."""

    obj: dict[str, Any]  # the pass's copy of the object; each progress write refreshes its status
    live: Mapping[str, Any] | None = None  # kopf's live view of the object (a pass with `live`)
    statuses: dict[str, EngineStatus] = field(default_factory=dict)
    written_at: float = float("-inf")
    task: asyncio.Task[None] | None = None
    writing: bool = False  # the task is past its wait: a write may be in flight


class WriteState(Protocol):
    """What the writer reads and keeps in one object's memory (runtime.ObjectState)."""

    changed: asyncio.Event  # set on every watch event of the object
    forbidden: int  # status writes refused in a row for a missing permission
    progress: PassProgress | None


class StatusHost(Protocol):
    """What the writer asks of the operator that runs it (runtime.Operator)."""

    leading: bool  # only the leader writes
    closed: bool
    outage: ApiOutage | None  # API-server outages: one line per outage instead of one per write

    def expected_engines(self, obj: Mapping[str, Any]) -> list[str]: ...


class StatusWriter:
    """Writes LocalModel statuses for one operator process; `missing` holds the permissions refused to it."""

    def __init__(
        self,
        host: StatusHost,
        config: OperatorConfig,
        kube: KubeClient,
        metrics: Metrics,
        *,
        post_event: EventPoster,
        on_permission_back: Callable[[], None],
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._host = host
        self.config = config
        self.identity = config.identity
        self.kube = kube
        self.metrics = metrics
        self._post_event = post_event
        self._on_permission_back = on_permission_back  # wake the objects whose status was refused
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self.missing: dict[Permission, str] = {}  # permissions refused to this process -> what to grant
        self.permission_check: asyncio.Task[None] | None = None

    # ---- the pass's status -----------------------------------------------------------------------

    async def with_finalizer(self, obj: dict[str, Any], live: Mapping[str, Any], state: WriteState) -> dict[str, Any]:
        """The object to write the status against: the pass's copy, or, when that copy predates kopf's
        finalizer patch (the first pass of a new object), the object as it is after the finalizer."""
        finalizer = self.identity.finalizer

        def has_finalizer(body: Mapping[str, Any]) -> bool:
            return finalizer in ((body.get("metadata") or {}).get("finalizers") or ())

        if has_finalizer(obj):
            return obj
        deadline = self._monotonic() + FINALIZER_WAIT_SECONDS
        while not has_finalizer(live):
            state.changed.clear()
            if has_finalizer(live):
                break
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return obj  # written as it is; a 409 re-reads the object
            try:
                await asyncio.wait_for(state.changed.wait(), timeout=remaining)
            except TimeoutError:
                return obj
        fresh = copy.deepcopy(dict(live))
        if (fresh.get("metadata") or {}).get("generation") != obj["metadata"].get("generation"):
            return obj  # a newer spec arrived meanwhile: its own pass follows; this write may 409 and stop
        return fresh

    async def publish(
        self, obj: dict[str, Any], statuses: list[EngineStatus], *, state: WriteState | None = None
    ) -> StatusUpdate | None:
        """Write the status if it differs from what the object holds; None if it could not be written."""
        meta = obj["metadata"]
        namespace, name, generation = meta.get("namespace", ""), meta["name"], meta.get("generation")
        expected = self._host.expected_engines(obj)
        current = obj
        for _ in range(STATUS_WRITE_ATTEMPTS):
            update = compose_status(
                current.get("status"),
                statuses,
                generation=generation,
                expected=expected,
                now=self._clock(),
            )
            if not update.changed:
                self.metrics.status_writes.labels("unchanged").inc()
                return update
            if not self._host.leading:
                return None  # leadership lost during the pass: the next leader writes
            try:
                await self.kube.apply_status(
                    namespace,
                    name,
                    update.status,
                    field_manager=self.identity.field_manager,
                    resource_version=current["metadata"].get("resourceVersion"),
                )
                self.metrics.status_writes.labels("written").inc()
                if state is not None and state.forbidden:
                    self._permission_granted(obj, state)
                return update
            except Forbidden as exc:
                self.metrics.status_writes.labels("forbidden").inc()
                self._permission_refused(obj, exc, state)
                return None
            except Conflict as exc:
                log.debug("status of %s not written (%s); re-reading the object", object_key(obj), exc)
                self.metrics.status_writes.labels("conflict").inc()
                try:
                    current = await self.kube.get_localmodel(namespace, name)
                except Gone:
                    return update
                if current["metadata"].get("generation") != generation:
                    return update  # a newer spec: the pass it triggers writes the status
            except Gone:
                return update
            except KubeError as exc:
                self.metrics.errors.labels("StatusWriteFailed").inc()
                outage = self._host.outage
                if outage is not None and (exc.status == 0 or exc.status >= 500):
                    outage.failed(f"status of {object_key(obj)}", exc)  # one line per outage
                else:
                    log.error("could not write the status of %s: %s", object_key(obj), exc)
                return None
        log.warning("status of %s kept changing under us; trying again on the next pass", object_key(obj))
        return None

    # ---- pull progress -------------------------------------------------------------------------

    def progress_reported(self, progress: PassProgress, status: EngineStatus) -> None:
        """A pull reported progress: write it soon (now, if the last progress write is old enough)."""
        progress.statuses[status.engine] = status
        if progress.task is None or progress.task.done():
            delay = max(0.0, progress.written_at + PROGRESS_WRITE_SECONDS - self._monotonic())
            progress.task = asyncio.create_task(self._write_progress(progress, delay))

    async def _write_progress(self, progress: PassProgress, delay: float) -> None:
        await self._sleep(delay)
        progress.written_at = self._monotonic()
        progress.writing = True
        obj = progress.obj
        meta = obj["metadata"]
        if progress.live is not None:
            self._catch_up(obj, progress.live)
        for attempt in range(2):
            update = compose_status(
                obj.get("status"),
                list(progress.statuses.values()),
                generation=meta.get("generation"),
                expected=self._host.expected_engines(obj),
                now=self._clock(),
                keep_own=True,
            )
            if not update.changed or not self._host.leading:
                return
            try:
                written = await self.kube.apply_status(
                    meta.get("namespace", ""),
                    meta["name"],
                    update.status,
                    field_manager=self.identity.field_manager,
                    resource_version=meta.get("resourceVersion"),
                )
                break
            except Conflict as exc:
                # The pass's copy is older than the object: always so for a new object, whose pass kopf starts
                # before its finalizer patch lands. Re-read it once (the pass's own write later starts from it).
                log.debug("pull progress of %s not written (%s); re-reading the object", object_key(obj), exc)
                self.metrics.status_writes.labels("progress-conflict").inc()
                try:
                    fresh = await self.kube.get_localmodel(meta.get("namespace", ""), meta["name"])
                except KubeError:
                    return
                if attempt or (fresh.get("metadata") or {}).get("generation") != meta.get("generation"):
                    return  # a newer spec: its own pass writes its status
                meta.clear()
                meta.update(fresh["metadata"])  # in place: the pass holds this dict
                obj["status"] = fresh.get("status")
            except KubeError as exc:  # a vanished object, an API-server outage: the pass's own write settles it
                log.debug("pull progress of %s not written: %s", object_key(obj), exc)
                return
        else:
            return
        meta.clear()
        meta.update(written["metadata"])  # the object as written (its resourceVersion, kopf's finalizer)
        obj["status"] = written.get("status")
        self.metrics.status_writes.labels("progress").inc()

    def _catch_up(self, obj: dict[str, Any], live: Mapping[str, Any]) -> None:
        """Take the live object's metadata and status into the pass's copy (in place: the pass holds it) when the
        copy predates kopf's finalizer patch and the spec is the same: a write with the copy's resourceVersion
        would answer 409."""
        finalizer = self.identity.finalizer
        meta, fresh = obj["metadata"], live.get("metadata") or {}
        if finalizer in (meta.get("finalizers") or ()) or finalizer not in (fresh.get("finalizers") or ()):
            return
        if fresh.get("generation") != meta.get("generation"):
            return
        fresh_copy = copy.deepcopy(dict(live))
        meta.clear()
        meta.update(fresh_copy["metadata"])
        obj["status"] = fresh_copy.get("status")

    @staticmethod
    async def stop_progress(state: WriteState) -> None:
        """The pass's pull ended: no more progress writes for it."""
        progress, state.progress = state.progress, None
        if progress is not None and progress.task is not None and not progress.task.done():
            # A write in flight is awaited, not cancelled: cancelled, it may still land, and the pass's own write
            # would then carry a resourceVersion from before it (409). Its wait for the next slot is cancelled.
            if not progress.writing:
                progress.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress.task

    # ---- permissions ---------------------------------------------------------------------------

    def _permission_refused(self, obj: Mapping[str, Any], exc: Forbidden, state: WriteState | None) -> None:
        """A status write answered 403: a Warning event on the object (once until it is written again),
        /readyz failing with the permission named, one log line per missing permission, and a check that
        wakes every object once the permission is back."""
        permission = Permission(exc.verb, exc.group, exc.resource, exc.namespace)
        fix = (
            f"the operator's account may not {exc.permission}: grant it (the ClusterRole localmodel-operator "
            f"of deploy/kustomize/base/rbac.yaml, or the Helm chart's); the status is written once it can"
        )
        if permission not in self.missing:
            self.missing[permission] = exc.permission
            log_event(log, "PermissionDenied", f"{fix} ({exc})", level=logging.ERROR, model=object_key(obj))
            self.metrics.permission_denied.labels(exc.verb, exc.resource).set(1)
        if state is not None:
            if not state.forbidden:
                self._post_event(obj, "Warning", "StatusWriteForbidden", fix)
            state.forbidden += 1
        if self.permission_check is None or self.permission_check.done():
            self.permission_check = asyncio.create_task(self._recheck_permissions())

    def _permission_granted(self, obj: Mapping[str, Any], state: WriteState) -> None:
        state.forbidden = 0
        namespace = (obj.get("metadata") or {}).get("namespace")
        for permission in [p for p in self.missing if p.namespace in (namespace, None)]:
            self._clear_permission(permission)

    def _clear_permission(self, permission: Permission) -> None:
        if self.missing.pop(permission, None) is None:
            return
        log_event(
            log, "PermissionGranted", f"{permission.verb} {permission.resource} is allowed again", level=logging.INFO
        )
        if not any(p.verb == permission.verb and p.resource == permission.resource for p in self.missing):
            self.metrics.permission_denied.labels(permission.verb, permission.resource).set(0)

    async def _recheck_permissions(self) -> None:
        """While permissions are missing, ask the API server every few seconds whether they are back,
        and wake the objects whose status could not be written as soon as one is."""
        while self.missing and not self._host.closed:
            await self._sleep(PERMISSION_RECHECK_SECONDS)
            for permission in list(self.missing):
                try:
                    allowed = await self.kube.allowed(permission)
                except KubeError as exc:
                    log.debug("cannot check %s: %s", permission, exc)
                    continue
                if allowed:
                    self._clear_permission(permission)
                    self._on_permission_back()

    def problems(self) -> list[str]:
        """What keeps this operator from working, for /readyz."""
        return [
            f"missing permission: {what} (grant it to the operator's account: ClusterRole localmodel-operator)"
            for what in self.missing.values()
        ]


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
