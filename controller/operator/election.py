"""Leader election for the central operator's replicas, on one Lease (client-go's leaderelection, in
asyncio over the operator's own API client).

Every replica runs the elector; the one holding the Lease reconciles and writes status, the others
are standby: they watch LocalModels (their kopf daemons run, idle) but neither reconcile, nor write
status, nor post Events, nor touch engines. The rules, as client-go's:

- a replica takes the Lease when it does not exist, is released (empty holder), or has not been seen
  renewed for `duration` seconds by *this* replica's clock (the time it last saw the record change;
  a replica that just started waits a whole `duration` before it takes over a silent holder, and no
  clock skew between machines matters);
- every write is a replace with the resourceVersion read just before: of two replicas that try at
  once, one gets 409 and stays standby. A leader renews without reading first, guarded by the
  resourceVersion of its own last write (client-go reads every time): any change by someone else
  makes that 409, and the leader then reads and judges as above;
- the leader renews every `retry` seconds; if no renewal succeeded for `renew_deadline` seconds
  (< `duration`) it stops leading *before* anyone can take over, and the process exits (the pod is
  restarted as a standby), so that two writers never overlap;
- a leader that shuts down cleanly releases the Lease (empty holder) once its passes have finished,
  so that a rolling update hands over at once instead of after `duration`.

Takeover after a leader crash: at most `duration + retry` seconds (15 s + 2 s by default).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from controller.operator.identity import short_label
from controller.operator.kube import Conflict, Forbidden, Gone, KubeClient, KubeError
from controller.operator.leases import LEADER_ROLE, LeaseRecord
from controller.waits import sleep_or_wake

log = logging.getLogger("localmodel.operator")

LEADER_LEASE_SECONDS: Final = 15.0  # client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry
# The longest a standby that spreads its reads (ElectionTiming.standby_readers) waits between two: the count
# it read may be old (the cluster shrank, fewer standbys share the reads).
MAX_STANDBY_WAIT: Final = 1800.0


@dataclass(frozen=True)
class ElectionTiming:
    duration: float = LEADER_LEASE_SECONDS
    renew_deadline: float = 10.0
    retry: float = 2.0
    # How often a standby reads the Lease (client-go: `retry`). The node agents' aggregator election uses
    # a longer one: N standbys reading every 2 s would be N/2 requests a second for nothing (agent.py).
    standby_retry: float | None = None
    # With many standbys (the node agents), how many of them should read the Lease per `standby_retry` in all:
    # the leader writes how many candidates there are (`candidates`), and each standby reads that much less
    # often while the Lease looks renewed. None: every standby reads every `standby_retry`.
    standby_readers: int | None = None

    @classmethod
    def for_duration(cls, duration: float) -> ElectionTiming:
        """client-go's proportions (15 / 10 / 2) for another lease duration."""
        return cls(duration, duration * 2 / 3, duration * 2 / 15)


def leader_lease_name(namespaces: tuple[str, ...], role: str = "leader") -> str:
    """`localmodel-leader` (or `localmodel-<role>`) for an operator that watches every namespace; one per
    set of watched namespaces otherwise (two operators that watch different namespaces are different
    controllers)."""
    if not namespaces:
        return f"localmodel-{role}"
    return short_label(f"localmodel-{role}-" + "-".join(sorted(namespaces)))


def default_holder_identity() -> str:
    """The pod's name (POD_NAME, else the hostname, which is the pod name in a pod) and a random suffix."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    """Competes for one Lease; calls `on_started` when it becomes leader, `on_stopped` when it loses."""

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        name: str,
        *,
        identity: str | None = None,
        timing: ElectionTiming = ElectionTiming(),
        on_started: Callable[[], None] = lambda: None,
        on_stopped: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Any] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        candidates: Callable[[], int | None] = lambda: None,
    ) -> None:
        """`candidates`: how many processes compete, as the leader knows it (written into the Lease for
        the standbys, see ElectionTiming.standby_readers); None when it does not know."""
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_holder_identity()
        self.timing = timing
        self.on_started = on_started
        self.on_stopped = on_stopped
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._jitter = jitter
        self._candidates = candidates
        self.leading = False
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0  # monotonic time this process saw `_observed` change
        self._renewed_at = 0.0  # monotonic time of this leader's last successful write

    async def run(self, stop: asyncio.Event) -> None:
        """Acquire, then renew until the renew deadline passes without a renewal or `stop` is set."""
        while not stop.is_set():
            if await self.try_acquire_or_renew():
                break
            await self._wait(stop, self._standby_wait())
        else:
            return
        self.leading = True
        log.info("leader election: %s leads (lease %s/%s)", self.identity, self.namespace, self.name)
        self.on_started()
        while not stop.is_set():
            await self._wait(stop, self.timing.retry)
            if stop.is_set():
                return
            if await self.try_acquire_or_renew():
                continue
            taken = self._observed is not None and self._observed.holder not in ("", self.identity)
            if taken or self._monotonic() - self._renewed_at >= self.timing.renew_deadline:
                self.leading = False
                log.error(
                    "leader election: lease %s/%s %s; %s stops leading",
                    self.namespace,
                    self.name,
                    f"taken by {self._observed.holder}" if taken and self._observed else "not renewed in time",
                    self.identity,
                )
                self.on_stopped()
                return

    async def try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's tryAcquireOrRenew): True when this process holds the Lease now."""
        now, wall = self._monotonic(), self._wall_clock()
        if self.leading and self._observed is not None and self._observed.holder == self.identity:
            # A leader renews what it wrote last, guarded by that resourceVersion, without reading it first:
            # a change by anyone else makes the replace fail with 409, and the read below judges it.
            renewal = replace(
                self._observed, renewed=wall, duration=self.timing.duration, candidates=self._candidates()
            )
            try:
                written = await self.kube.replace_lease(self.namespace, renewal.to_k8s(self.namespace, LEADER_ROLE))
            except (Conflict, Gone):
                pass
            except KubeError as exc:
                self._report(exc)
                return False
            else:
                self._observed, self._observed_at, self._renewed_at = LeaseRecord.from_k8s(written), now, now
                return True
        try:
            current = LeaseRecord.from_k8s(await self.kube.get_lease(self.namespace, self.name))
        except Gone:
            record = LeaseRecord(
                self.name, self.identity, self.timing.duration, wall, wall, candidates=self._candidates()
            )
            return await self._write(record, create=True, now=now)
        except KubeError as exc:
            self._report(exc)
            return False
        if self._observed is None or _changed(self._observed, current):
            self._observed, self._observed_at = current, now
        held_by_other = current.holder and current.holder != self.identity
        if held_by_other and now - self._observed_at < max(current.duration, self.timing.duration):
            return False
        if current.holder == self.identity:
            record = replace(current, renewed=wall, duration=self.timing.duration, candidates=self._candidates())
        else:
            record = replace(
                current,
                holder=self.identity,
                duration=self.timing.duration,
                renewed=wall,
                acquired=wall,
                transitions=current.transitions + 1,
                candidates=self._candidates(),
            )
        return await self._write(record, create=False, now=now)

    def _standby_wait(self) -> float:
        """Until a standby's next read: `standby_retry` (client-go: `retry`), with 20 % jitter; with
        `standby_readers`, while the Lease looks renewed, that times candidates / readers with full jitter
        (so that about `standby_readers` standbys read per `standby_retry` in all), at most MAX_STANDBY_WAIT.

        Whether the Lease looks renewed is judged by the leader's renewTime against this machine's clock:
        only a hint to look again soon (a leader that missed two renewals), never a reason to take over."""
        base = self.timing.standby_retry or self.timing.retry
        seen, readers = self._observed, self.timing.standby_readers
        if readers and seen is not None and seen.candidates and seen.candidates > readers and seen.holder:
            late = seen.renewed is None or (self._wall_clock() - seen.renewed).total_seconds() > 2 * self.timing.retry
            if not late:
                return min(MAX_STANDBY_WAIT, base * seen.candidates / readers * (0.5 + self._jitter()))
        return base * (1 + 0.2 * self._jitter())

    async def release(self) -> None:
        """Hand the Lease over at once (empty holder), if this process holds it."""
        if not self.leading or self._observed is None:
            return
        self.leading = False
        record = replace(self._observed, holder="", renewed=self._wall_clock(), duration=1)
        try:
            await self.kube.replace_lease(self.namespace, record.to_k8s(self.namespace, LEADER_ROLE))
            log.info("leader election: %s released lease %s/%s", self.identity, self.namespace, self.name)
        except KubeError as exc:
            log.warning("leader election: lease %s/%s not released: %s", self.namespace, self.name, exc)

    async def _write(self, record: LeaseRecord, *, create: bool, now: float) -> bool:
        body = record.to_k8s(self.namespace, LEADER_ROLE)
        try:
            if create:
                written = await self.kube.create_lease(self.namespace, body)
            else:
                written = await self.kube.replace_lease(self.namespace, body)
        except KubeError as exc:  # 409: another replica wrote first; it leads
            self._report(exc)
            return False
        self._observed, self._observed_at, self._renewed_at = LeaseRecord.from_k8s(written), now, now
        return True

    def _report(self, exc: KubeError) -> None:
        if isinstance(exc, Forbidden):
            log.error(
                "leader election: %s; grant get, create and update on leases (coordination.k8s.io) in namespace %s "
                "(deploy/kustomize/base/leases.yaml, or the Helm chart's), or run one replica with "
                "--no-leader-election",
                exc.permission,
                self.namespace,
            )
        else:
            log.debug("leader election: %s", exc)

    async def _wait(self, stop: asyncio.Event, seconds: float) -> None:
        await sleep_or_wake(seconds, stop.wait(), sleep=self._sleep)


def _changed(before: LeaseRecord, after: LeaseRecord) -> bool:
    return (before.holder, before.renewed, before.resource_version) != (
        after.holder,
        after.renewed,
        after.resource_version,
    )
