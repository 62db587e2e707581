"""The aggregator: in node-agent mode, the one agent that writes the LocalModels' summaries and holds
their finalizer (docs/scale.md, "Bounded status").

Every agent reports on its own node in its `LocalModelNode` (nodereport.py) and writes nothing to the
LocalModels. One of them, elected on the Lease `localmodel-aggregator` (election.py; one per set of
watched namespaces, as the leader's), also:

- watches the `LocalModelNode`s (one watcher in the cluster: each node's write is transferred once),
  and knows the LocalModels from the watch every agent has anyway;
- writes each LocalModel's summary (summary.py) when it changes, at most once per
  `SUMMARY_INTERVAL_SECONDS` per object: a rollout on many nodes is a few writes per object, not one
  per node;
- holds the one finalizer `localmodel.io/finalizer` on every LocalModel, and releases it once no live
  agent still reports the object (each agent applies `deletionPolicy` on its engine, then drops the
  entry). Agents whose Lease expired, and nodes that are gone, are not waited for;
- upgrades the layout before LocalModelNodes: removes `status.engines[]` with its first summary write,
  and the per-agent finalizers `localmodel.io/agent-<node>` of agents that now report in a
  `LocalModelNode` (or whose node is gone or Lease expired).

Only the aggregator lists the agent Leases (presence.py); the other agents only renew theirs.
Everything it keeps is rebuilt from a list after a restart or a takeover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from controller.backoff import Retries
from controller.logs import log_event
from controller.operator.identity import AGENT_FINALIZER_PREFIX, NODE_AGENT, Identity
from controller.operator.kube import Conflict, Gone, KubeClient, KubeError
from controller.operator.nodereport import SCOPE_LABEL, node_entries, report_node
from controller.operator.presence import AgentPresence
from controller.operator.summary import same_summary, summarize_nodes
from controller.operator.targeting import matching_nodes, raw_node_selector

log = logging.getLogger("localmodel.operator")

FINALIZER: Final = Identity("central").finalizer  # `localmodel.io/finalizer`, as the central operator's
FIELD_MANAGER: Final = "localmodel-aggregator"
SUMMARY_INTERVAL_SECONDS: Final = 1.0
WATCH_RETRIES: Final = Retries(first=0.5, cap=10.0)


class Aggregator:
    """Summaries and the finalizer of every LocalModel, from the nodes' reports. `run` while elected."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        nodes: Callable[[], Mapping[str, Mapping[str, str]]],
        agent_selector: Mapping[str, str] | None = None,
        presence: AgentPresence | None = None,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
        interval: float = SUMMARY_INTERVAL_SECONDS,
        scope: str = "cluster",
    ) -> None:
        self.kube = kube
        self._nodes = nodes
        self._agent_selector = agent_selector
        self.presence = presence
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self.interval = interval
        self.selector = f"{SCOPE_LABEL}={scope}"  # this installation's LocalModelNodes only
        self.objects: dict[str, Mapping[str, Any]] = {}  # uid -> the LocalModel as last seen
        self.reports: dict[str, dict[str, dict[str, Any]]] = {}  # node -> uid -> entry
        self._written: dict[str, tuple[Any, dict[str, Any]]] = {}  # uid -> (resourceVersion, summary) last written
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self.listed = False  # the LocalModelNodes have been listed since this aggregator started
        self.writes = 0

    # ---- inputs --------------------------------------------------------------------------------

    def object_changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Every watch event of a LocalModel (all agents see them all; only the aggregator acts on them)."""
        uid = (body.get("metadata") or {}).get("uid")
        if not uid:
            return
        if event_type == "DELETED":
            self.objects.pop(uid, None)
            self._written.pop(uid, None)
            self._dirty.discard(uid)
            return
        self.objects[uid] = body
        self._mark(uid)

    def everything_changed(self) -> None:
        """Nodes, their labels or the live agents changed: every summary may differ."""
        self._dirty.update(self.objects)
        self._wake.set()

    def _mark(self, uid: str) -> None:
        self._dirty.add(uid)
        self._wake.set()

    def node_report(self, event_type: str, body: Mapping[str, Any]) -> None:
        """A LocalModelNode watch event: mark the objects whose entry on that node changed."""
        node = report_node(body)
        if not node:
            return
        before = self.reports.get(node, {})
        after = {} if event_type == "DELETED" else node_entries(body)
        if after:
            self.reports[node] = after
        else:
            self.reports.pop(node, None)
        for uid in set(before) | set(after):
            if before.get(uid) != after.get(uid):
                self._mark(uid)

    # ---- the loops -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the LocalModelNodes and write summaries until `stop` is set (or cancelled)."""
        follower = asyncio.create_task(self._follow(stop), name="aggregator: LocalModelNode watch")
        try:
            await self._write_loop(stop)
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    async def _follow(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                items, version = await self.kube.list_localmodelnodes(self.selector)
                reports = {}
                for item in items:
                    node = report_node(item)
                    if node:
                        reports[node] = node_entries(item)
                self.reports = reports
                self.listed = True
                self.everything_changed()
                failures = 0
                while not stop.is_set():
                    async for event in self.kube.watch_localmodelnodes(self.selector, version):
                        obj = event.get("object") or {}
                        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                        if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                            self.node_report(str(event["type"]), obj)
                        failures = 0
            except Gone:
                log.debug("aggregator: LocalModelNode watch expired; listing again")
            except KubeError as exc:
                failures += 1
                delay = WATCH_RETRIES.after(failures) or WATCH_RETRIES.cap
                log.warning("aggregator: cannot watch LocalModelNodes (%s); again in %.1fs", exc, delay)
                await self._sleep(delay)

    async def _write_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            if not self.listed:
                continue  # the first list marks everything
            batch, self._dirty = self._dirty, set()
            for uid in sorted(batch):
                try:
                    await self.settle(uid)
                except KubeError as exc:
                    log.warning("aggregator: %s not settled: %s; trying again", _key(self.objects.get(uid)), exc)
                    self._dirty.add(uid)
                except Exception:  # one object's surprise must not end every summary: its next event retries
                    log.exception("aggregator: %s not settled", _key(self.objects.get(uid)))
            if self._dirty:
                self._wake.set()
            await self._sleep(self.interval)  # coalesce: a wave of node reports becomes one write per object

    # ---- one object ----------------------------------------------------------------------------

    def expected(self, body: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """(the nodes expected to report, the matching nodes without a live agent)."""
        matching = matching_nodes(self._nodes(), raw_node_selector(body.get("spec")), self._agent_selector)
        alive = self.presence.alive() if self.presence is not None else None
        if alive is None or self.presence is None:
            return matching, []
        uid = (body.get("metadata") or {}).get("uid")
        reported = {node for node, entries in self.reports.items() if uid in entries}
        present = alive | (reported - self.presence.expired())
        return [n for n in matching if n in present], [n for n in matching if n not in present]

    def holders(self, uid: str) -> list[str]:
        """The nodes whose live agent still reports the object (it has not finalized it yet)."""
        nodes = self._nodes()
        expired = self.presence.expired() if self.presence is not None else set()
        return sorted(n for n, entries in self.reports.items() if uid in entries and n in nodes and n not in expired)

    def _stale_finalizers(self, meta: Mapping[str, Any]) -> set[str]:
        """Per-agent finalizers of the layout before LocalModelNodes whose agent reports here now, or
        whose node is gone or Lease expired: nobody else would release them."""
        nodes = self._nodes()
        expired = self.presence.expired() if self.presence is not None else set()
        moved = {Identity(NODE_AGENT, n).finalizer for n in self.reports}
        live = {Identity(NODE_AGENT, n).finalizer for n in nodes if n not in expired}
        return {
            f
            for f in meta.get("finalizers") or ()
            if f.startswith(AGENT_FINALIZER_PREFIX) and (f in moved or f not in live)
        }

    async def settle(self, uid: str) -> None:
        """Bring one LocalModel's finalizers and summary up to date."""
        body = self.objects.get(uid)
        if body is None:
            return
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        finalizers = list(meta.get("finalizers") or ())
        stale = self._stale_finalizers(meta)
        if meta.get("deletionTimestamp"):
            holders = self.holders(uid)
            if holders:
                log.debug("%s/%s: waiting for the agents on %s to finalize", namespace, name, ", ".join(holders))
                return
            release = stale | ({FINALIZER} & set(finalizers))
            if release:
                await self._update_finalizers(namespace, name, body, remove=release)
                log_event(
                    log,
                    "FinalizerReleased",
                    "every live agent applied deletionPolicy; released " + ", ".join(sorted(release)),
                    model=f"{namespace}/{name}",
                )
            return
        if FINALIZER not in finalizers or stale:
            await self._update_finalizers(namespace, name, body, add=FINALIZER, remove=stale)
            return  # the watch brings the object back with it, and marks it again
        await self._write_summary(uid, namespace, name, body)

    async def _update_finalizers(
        self, namespace: str, name: str, body: Mapping[str, Any], *, add: str | None = None, remove: set[str]
    ) -> None:
        try:
            await self.kube.update_finalizers(namespace, name, body, add=add, remove=remove)
        except (Conflict, Gone) as exc:
            log.debug("%s/%s: finalizers not updated (%s); the next watch event brings it back", namespace, name, exc)
        except KubeError as exc:
            if exc.status != 422:  # a failed `test` (the object moved): as a conflict
                raise
            log.debug("%s/%s: finalizers not updated (%s)", namespace, name, exc)

    async def _write_summary(self, uid: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        current = body.get("status") or {}
        generation = meta.get("generation")
        expected, absent = self.expected(body)
        reports = {node: entries[uid] for node, entries in self.reports.items() if uid in entries}
        desired = summarize_nodes(
            current, reports, generation=generation, expected=expected, absent=absent, now=self._clock()
        )
        written = (meta.get("resourceVersion"), _without_times(desired))
        if same_summary(current, desired) or self._written.get(uid) == written:
            return  # (or written already, and the watch has not brought the object back yet)
        try:
            if current.get("engines"):
                await self.kube.remove_status_field(namespace, name, body, "engines")  # the layout before
                log.info("%s/%s: removed status.engines[] (now in LocalModelNodes)", namespace, name)
            await self.kube.apply_status(namespace, name, desired, resource_version=None, field_manager=FIELD_MANAGER)
        except (Conflict, Gone) as exc:
            log.debug("%s/%s: summary not written (%s); the next watch event brings it back", namespace, name, exc)
            return
        except KubeError as exc:
            if exc.status != 422:
                raise
            return
        self.writes += 1
        self._written[uid] = written


def _without_times(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary without its conditions' lastTransitionTime (recomputed from "now" on a stale copy)."""
    conditions = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in summary.get("conditions") or ()]
    return {**summary, "conditions": conditions}


def _key(body: Mapping[str, Any] | None) -> str:
    meta = (body or {}).get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
