"""A node agent: the Operator's passes on this node's engine, reported in the node's LocalModelNode,
and, when elected, the aggregator of every LocalModel's summary and finalizer (docs/scale.md).

    kopf on.event (LocalModels, Nodes) -> NodeAgent -> PassLoops -> Operator.reconcile_object
                                                                    -> NodeReport -> ReportWriter -> LocalModelNode
                                        -> Aggregator (while it holds the Lease localmodel-aggregator)
                                                                    -> LocalModel summary, finalizer

The agent writes nothing to the LocalModels itself. Its Lease (presence.py) says it is alive; only the
aggregator lists the others'.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from controller.logs import log_event
from controller.operator.aggregator import Aggregator
from controller.operator.config import OperatorConfig
from controller.operator.election import ElectionTiming, LeaderElector, leader_lease_name
from controller.operator.kube import Gone, KubeClient, KubeError
from controller.operator.nodereport import report_name
from controller.operator.outage import ApiOutage
from controller.operator.passloops import PassLoops
from controller.operator.presence import AgentPresence
from controller.operator.reporter import ReportWriter
from controller.operator.runtime import Operator

log = logging.getLogger("localmodel.operator")

STANDBY_READERS = 4  # standby agents reading the aggregator Lease per lease duration, in all (aggregator_elector)


class NodeAgent:
    """Everything one node agent runs; the kopf front-end (handlers.py) only relays watch events to it."""

    def __init__(
        self,
        operator: Operator,
        kube: KubeClient,
        *,
        presence: AgentPresence | None,
        elector: LeaderElector | None,
    ) -> None:
        self.operator = operator
        self.kube = kube
        assert operator.node_report is not None  # an Operator in node-agent mode reports on its node
        self.report = operator.node_report
        self.writer = ReportWriter(kube, self.report)
        operator.on_report = self.writer.changed
        self.loops = PassLoops(operator.reconcile_object, operator.wait_for_next_pass, self.finalize)
        self.presence = presence
        self.aggregator = Aggregator(
            kube,
            nodes=lambda: operator.nodes,
            agent_selector=operator.config.agent_node_selector,
            presence=presence,
            clock=operator.clock,
            scope=self.report.scope,
        )
        self.elector = elector
        if presence is not None:
            presence.listing = False  # the aggregator lists; see presence.py
            presence.on_change = self.aggregator.everything_changed
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._aggregating: asyncio.Task[None] | None = None

    # ---- start and stop ------------------------------------------------------------------------

    async def load(self) -> None:
        """Before the first pass: this node's report as the server holds it, without the entries of
        LocalModels that no longer exist (deleted while this agent was away: their finalizer was released
        without it, as for any agent whose Lease expired)."""
        node = report_name(self.report.node, self.report.scope)
        try:
            self.report.load(await self.kube.get_localmodelnode(node))
        except Gone:
            self.report.load(None)
        except KubeError as exc:
            log.warning("cannot read LocalModelNode %s (%s); starting from an empty report", node, exc)
            return
        try:
            uids = {
                str((item.get("metadata") or {}).get("uid"))
                for namespace in self.operator.config.namespaces or (None,)
                for item in await self.kube.list_localmodels(namespace)
            }
        except KubeError as exc:
            log.warning("cannot list LocalModels (%s); the report keeps its entries until their objects pass", exc)
            return
        gone = self.report.keep_only(uids)
        if gone:
            log.info("LocalModelNode %s: dropped the entries of %d deleted LocalModels", node, len(gone))
            self.writer.changed()

    def start_watches(self) -> None:
        """The engine watch and the agent Lease (Operator.start_watches), the report writer and the
        aggregator election."""
        self.operator.start_watches()
        if self.presence is not None:
            self._tasks.append(asyncio.create_task(self.presence.run(self._stop), name="agent lease"))
        self._tasks.append(asyncio.create_task(self.writer.run(self._stop), name="LocalModelNode writer"))
        if self.elector is not None:
            self._tasks.append(asyncio.create_task(self._elect(), name="aggregator election"))
        else:
            self._start_aggregating()

    async def aclose(self, grace: float = 10.0) -> None:
        await self.loops.aclose(grace)
        await self.writer.write()  # the last results, before the process goes
        self._stop.set()
        self._stop_aggregating()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.elector is not None:
            await self.elector.release()
        await self.operator.aclose(grace)

    # ---- what kopf relays ----------------------------------------------------------------------

    def object_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.operator.object_changed(event_type, body)
        self.loops.changed(event_type, body)
        self.aggregator.object_changed(event_type, body)

    def node_changed(self, event_type: str | None, node: Mapping[str, Any]) -> None:
        self.operator.node_changed(event_type, node)
        self.aggregator.everything_changed()

    # ---- deletion ------------------------------------------------------------------------------

    async def finalize(self, body: Mapping[str, Any]) -> None:
        """Apply `deletionPolicy` on this node's engine (Operator.finalize_object: bounded retries, then an
        owed clean-up), then drop the node's entry: the aggregator releases the finalizer once no live
        agent reports the object."""
        uid = str((body.get("metadata") or {}).get("uid"))
        if self.report.entry(uid) is None and not self.operator.targets(body):
            return  # nothing was ever applied here
        await self.operator.finalize_object(body)
        self.report.drop(uid)
        self.writer.changed()

    # ---- the aggregator ------------------------------------------------------------------------

    async def _elect(self) -> None:
        assert self.elector is not None
        self.elector.on_started, self.elector.on_stopped = self._start_aggregating, self._stop_aggregating
        while not self._stop.is_set():
            await self.elector.run(self._stop)  # returns when leadership is lost (or at stop)
            if not self._stop.is_set():
                await asyncio.sleep(self.elector.timing.retry)

    def _start_aggregating(self) -> None:
        log_event(log, "AggregatorElected", f"the agent on {self.report.node} writes the LocalModels' summaries")
        self._aggregating = asyncio.create_task(self._aggregate(), name="aggregator")

    async def _aggregate(self) -> None:
        """List the agent Leases first (a standby's view of them is as old as its start: summaries written
        from it would name live agents as absent), then write summaries until stopped."""
        if self.presence is not None:
            self.presence.listing = True
            await self.presence.refresh()
        await self.aggregator.run(self._stop)

    def _stop_aggregating(self) -> None:
        if self.presence is not None:
            self.presence.listing = False
        if self._aggregating is not None:
            self._aggregating.cancel()
            self._aggregating = None

    @property
    def closed(self) -> bool:
        return self.operator.closed

    @property
    def outage(self) -> ApiOutage | None:
        return self.operator.outage

    @outage.setter
    def outage(self, outage: ApiOutage | None) -> None:
        self.operator.outage = outage

    def problems(self) -> list[str]:
        return self.operator.problems()


def aggregator_elector(config: OperatorConfig, kube: KubeClient, presence: AgentPresence | None) -> LeaderElector:
    """The agents elect the aggregator on the Lease `localmodel-aggregator` (one per set of watched
    namespaces), on the agents' own Lease timing (--agent-lease-seconds, 40 s): the aggregator renews
    every 10 s and writes into the Lease how many live agents it knows of (it alone lists their Leases);
    a standby reads the Lease once per 40 s x agents / 4 (at most every 30 min), so that about 4 standbys
    read it per 40 s in all, whatever the node count (client-go's standbys read every 2 s: N/2 requests a
    second for nothing). Idle, an agent then costs the API server its own Lease renewal, nothing more.

    The price is in the takeover: a standby whose read shows the aggregator two renewals late (by the
    renewTime, a hint only) reads every 40 s again, and takes over once it has seen no renewal for 40 s by
    its own clock: about 80 s after the aggregator crashed (the agents keep reconciling meanwhile; only the
    summaries wait). A clean stop releases the Lease, and the next standby to read takes it."""
    assert config.node_name is not None
    duration = config.agent_lease_seconds
    timing = ElectionTiming(
        duration,
        renew_deadline=duration * 3 / 4,
        retry=duration / 4,
        standby_retry=duration,
        standby_readers=STANDBY_READERS,
    )

    def candidates() -> int | None:
        alive = presence.alive() if presence is not None else None
        return len(alive) if alive is not None else None

    return LeaderElector(
        kube,
        config.operator_namespace,
        leader_lease_name(config.namespaces, role="aggregator"),
        identity=config.node_name,
        timing=timing,
        candidates=candidates,
    )
