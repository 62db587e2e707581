"""Which node agents are alive: one Lease per agent, renewed as the kubelet renews its node lease.

Each agent (node-agent mode) holds the Lease `localmodel-agent-<node>` in the operator's namespace,
labelled `localmodel.io/lease=agent`, with `holderIdentity` = its node name, and renews it every
`duration / 4` seconds (the kubelet: 40 s lease, renewed every 10 s). Every `duration` seconds it
lists the agent Leases (from the API server's watch cache) to learn who else is alive.

The nodes expected to report on a LocalModel are those that match it AND hold a fresh agent Lease
(runtime.py): a matching node without an agent (a tainted control-plane node the DaemonSet skips, a
node whose agent crashed) is named in the status ("no agent on node X") but does not hold Ready
back; once an agent's Lease expires, the other agents remove its status entries and, on deletion,
its finalizer.

Why a periodic list and not a watch: every renewal changes the Lease, so a watch would send every
agent N/10 events a second (N² transfers in all, the cost this design exists to avoid); a list every
`duration` costs N/40 small lists a second, each served from the watch cache. Expiry is noticed
between `duration` and `2 * duration` after the last renewal.

If the agent may not use Leases (RBAC), presence is off and every matching node is expected, as
before: an error in the log says which permission to grant.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from controller.operator.identity import Identity
from controller.operator.kube import Conflict, Forbidden, Gone, KubeClient, KubeError
from controller.operator.leases import AGENT_ROLE, ROLE_LABEL, LeaseRecord, Sighting, sight
from controller.waits import sleep_or_wake

log = logging.getLogger("localmodel.operator")

AGENT_LEASE_SECONDS: Final = 40.0  # as the kubelet's node lease
RENEWALS_PER_DURATION: Final = 4  # renewed every duration / 4 (10 s for 40 s)


def agent_lease_name(node: str) -> str:
    """`localmodel-agent-<node>` (a DNS label, shortened with a hash for long node names)."""
    return f"localmodel-{Identity('node-agent', node).agent_id}"


@dataclass
class PresenceView:
    """The agent Leases as last listed, and when each was last seen renewed (pure; virtual time)."""

    sightings: dict[str, Sighting] = field(default_factory=dict)  # by Lease name

    def observe(self, records: Iterable[LeaseRecord], *, now: float, wall_now: datetime) -> None:
        """A fresh list of the agent Leases at monotonic `now`; Leases no longer listed are forgotten."""
        self.sightings = {
            record.name: sight(record, self.sightings.get(record.name), now=now, wall_now=wall_now)
            for record in records
        }

    def alive(self, now: float) -> set[str]:
        """The nodes whose agent Lease is fresh at monotonic `now`."""
        return {s.holder for s in self.sightings.values() if s.fresh(now)}

    def expired(self, now: float) -> set[str]:
        """The nodes whose agent Lease was seen and is stale at `now` (an agent never seen is neither)."""
        return {s.holder for s in self.sightings.values() if s.holder and not s.fresh(now)} - self.alive(now)


class AgentPresence:
    """This agent's own Lease, and the view of everyone else's."""

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        node: str,
        *,
        duration: float = AGENT_LEASE_SECONDS,
        on_change: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.node = node
        self.duration = duration
        self.renew_every = duration / RENEWALS_PER_DURATION
        self.on_change = on_change
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._sleep = sleep
        self.view = PresenceView()
        self.enabled = True
        self._own: LeaseRecord | None = None
        self._alive: set[str] = {node}
        self._expired: set[str] = set()
        self._listed_at = float("-inf")
        self.renewals = 0
        # Whether this agent lists the others' Leases. With LocalModelNodes only the aggregator needs to
        # know who is alive (aggregator.py): the other agents only renew, one request per renewal period.
        self.listing = True

    @property
    def lease_name(self) -> str:
        return agent_lease_name(self.node)

    def alive(self) -> set[str] | None:
        """The nodes with a live agent (always this one), or None when presence is off (no Lease access)."""
        return set(self._alive) if self.enabled else None

    def expired(self) -> set[str]:
        """The nodes whose agent Lease expired (their entries are removed, their finalizers released).
        A node whose agent was never seen (no Lease yet: it is starting, or predates Leases) is not in it."""
        return set(self._expired) if self.enabled else set()

    async def start(self) -> None:
        """The first renewal and list, before any pass runs (so that the first status is right)."""
        await self.renew()
        await self.refresh()

    async def run(self, stop: asyncio.Event) -> None:
        """Renew every `duration / 4`, list every `duration`, until `stop` is set."""
        while not stop.is_set() and self.enabled:
            await self._wait(stop, self.renew_every)
            if stop.is_set():
                return
            await self.renew()
            if not self.listing:
                continue
            if self._monotonic() - self._listed_at >= self.duration:
                await self.refresh()

    async def _wait(self, stop: asyncio.Event, seconds: float) -> None:
        await sleep_or_wake(seconds, stop.wait(), sleep=self._sleep)

    async def renew(self) -> None:
        now = self._wall_clock()
        try:
            if self._own is None:
                try:
                    self._own = LeaseRecord.from_k8s(await self.kube.get_lease(self.namespace, self.lease_name))
                except Gone:
                    created = LeaseRecord(self.lease_name, self.node, self.duration, now, now)
                    body = created.to_k8s(self.namespace, AGENT_ROLE)
                    self._own = LeaseRecord.from_k8s(await self.kube.create_lease(self.namespace, body))
                    self.renewals += 1
                    return
            acquired = self._own.acquired if self._own.holder == self.node and self._own.acquired else now
            record = replace(self._own, holder=self.node, duration=self.duration, renewed=now, acquired=acquired)
            self._own = LeaseRecord.from_k8s(
                await self.kube.replace_lease(self.namespace, record.to_k8s(self.namespace, AGENT_ROLE))
            )
            self.renewals += 1
        except Forbidden as exc:
            self._disable(exc)
        except (Conflict, Gone) as exc:  # changed or deleted under us: read it again on the next renewal
            log.debug("agent lease %s/%s not renewed: %s", self.namespace, self.lease_name, exc)
            self._own = None
        except KubeError as exc:
            log.warning("agent lease %s/%s not renewed: %s; retrying", self.namespace, self.lease_name, exc)

    async def refresh(self) -> None:
        """List the agent Leases; tell `on_change` when the set of live agents changed."""
        try:
            items = await self.kube.list_leases(self.namespace, f"{ROLE_LABEL}={AGENT_ROLE}")
        except Forbidden as exc:
            self._disable(exc)
            self.on_change()
            return
        except KubeError as exc:
            log.warning("cannot list the agent leases in %s: %s; keeping the last view", self.namespace, exc)
            return
        self._listed_at = self._monotonic()
        self.view.observe(
            (LeaseRecord.from_k8s(item) for item in items), now=self._listed_at, wall_now=self._wall_clock()
        )
        if self._recompute():
            self.on_change()

    def _recompute(self) -> bool:
        # Judged as of the last list, the last time anyone looked: between two lists a live agent's renewals
        # are simply not seen, and a Lease first seen with an old renewTime would otherwise expire before the
        # next list could show its renewals (test_a_live_agent_first_seen_with_an_old_renewal_...).
        seen = self._listed_at
        alive = self.view.alive(seen) | {self.node}
        self._expired = self.view.expired(seen) - {self.node}
        if alive == self._alive:
            return False
        gone, came = sorted(self._alive - alive), sorted(alive - self._alive)
        if gone:
            log.info("agent leases expired: %s (their status entries go, their finalizers are released)", gone)
        if came:
            log.info("agents alive: %s", came)
        self._alive = alive
        return True

    def _disable(self, exc: Forbidden) -> None:
        if self.enabled:
            log.error(
                "node agents cannot use Leases (%s): presence is off, every matching node is expected to report; "
                "grant get, create, update and list on leases (coordination.k8s.io) in namespace %s "
                "(deploy/kustomize/base/leases.yaml, or the Helm chart's)",
                exc.permission,
                self.namespace,
            )
        self.enabled = False
