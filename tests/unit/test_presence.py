"""Agent presence through Leases (controller/operator/presence.py, leases.py), in virtual time: when a
Lease counts as fresh, the agent's own renewals and lists, and what the operator makes of it: a
matching node without a live agent is named but not waited for; an agent whose Lease expired loses
its status entry and, on deletion, its finalizer."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from controller.emulator import RunningEmulator
from controller.operator.config import OperatorConfig
from controller.operator.engines import EngineRef
from controller.operator.kube import Forbidden
from controller.operator.leases import AGENT_ROLE, LeaseRecord, Sighting, sight
from controller.operator.presence import AgentPresence, PresenceView, agent_lease_name
from controller.operator.runtime import Operator
from controller.operator.statuses import absent_note
from tests.support.emulator import emulator
from tests.support.leases import Clock, FakeLeases
from tests.unit.test_operator_runtime import Events, FakeKube, conditions

NS = "localmodel-system"


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with emulator(preload_models=["ai/smollm2"]) as running:
        yield running


def lease(clock: Clock, holder: str, *, age: float = 0.0, duration: float = 40) -> LeaseRecord:
    return LeaseRecord(agent_lease_name(holder), holder, duration, clock.wall() - timedelta(seconds=age))


# ---- the pure part -------------------------------------------------------------------------------


def test_a_lease_is_fresh_until_a_duration_after_it_was_seen_renewed() -> None:
    clock = Clock()
    first = sight(lease(clock, "a"), None, now=clock.t, wall_now=clock.wall())
    assert first.fresh(clock.t + 39.9)
    assert not first.fresh(clock.t + 40)
    # Seen again unchanged 30 s later: still judged from the first sighting.
    again = sight(lease(clock, "a"), first, now=clock.t + 30, wall_now=clock.wall() + timedelta(seconds=30))
    assert again.seen_at == first.seen_at
    # Renewed: fresh for another duration from when it was seen.
    clock.advance(30)
    renewed = sight(lease(clock, "a"), again, now=clock.t, wall_now=clock.wall())
    assert renewed.fresh(clock.t + 39)
    assert not renewed.fresh(clock.t + 40)


def test_a_first_sighting_is_credited_with_the_age_the_lease_shows_never_more_life() -> None:
    clock = Clock()
    old = sight(lease(clock, "a", age=35), None, now=clock.t, wall_now=clock.wall())
    assert old.fresh(clock.t + 4)
    assert not old.fresh(clock.t + 5)
    ahead = sight(lease(clock, "a", age=-3600), None, now=clock.t, wall_now=clock.wall())  # writer's clock ahead
    assert ahead.seen_at == clock.t
    assert not ahead.fresh(clock.t + 40)
    expired = sight(lease(clock, "a", age=41), None, now=clock.t, wall_now=clock.wall())
    assert not expired.fresh(clock.t)


def test_an_empty_holder_or_a_lease_without_renewal_is_not_alive() -> None:
    assert not Sighting("", None, 0.0, 40).fresh(1.0)
    assert not Sighting("a", None, 0.0, 40).fresh(1.0)
    assert not Sighting("a", Clock().wall(), 0.0, 0).fresh(0.0)


def test_the_view_forgets_leases_no_longer_listed() -> None:
    clock = Clock()
    view = PresenceView()
    view.observe([lease(clock, "a"), lease(clock, "b")], now=clock.t, wall_now=clock.wall())
    assert view.alive(clock.t) == {"a", "b"}
    view.observe([lease(clock, "a")], now=clock.t, wall_now=clock.wall())
    assert view.alive(clock.t) == {"a"}


def test_the_round_trip_through_the_k8s_lease_keeps_every_field() -> None:
    clock = Clock()
    record = LeaseRecord("localmodel-agent-a", "a", 40, clock.wall(), clock.wall(), 3, "17")
    body = record.to_k8s(NS, AGENT_ROLE)
    assert body["spec"]["renewTime"].endswith("Z")
    assert body["metadata"]["labels"]["localmodel.io/lease"] == "agent"
    assert LeaseRecord.from_k8s(body) == record


def test_the_absent_note_names_a_handful_of_nodes_then_counts() -> None:
    assert absent_note(["x"]).startswith("no agent on node x (")
    note = absent_note([f"n{i}" for i in range(8)])
    assert "nodes n0, n1, n2, n3, n4 and 3 more" in note
    assert "n5" not in note


# ---- one agent's lease ---------------------------------------------------------------------------


async def test_an_agent_creates_then_renews_its_lease_and_notices_an_expiry() -> None:
    clock, api = Clock(), FakeLeases()
    changes: list[set[str] | None] = []
    a = AgentPresence(api, NS, "a", duration=40, monotonic=clock.monotonic, wall_clock=clock.wall)  # type: ignore[arg-type]
    b = AgentPresence(api, NS, "b", duration=40, monotonic=clock.monotonic, wall_clock=clock.wall)  # type: ignore[arg-type]
    a.on_change = lambda: changes.append(a.alive())
    await b.start()
    await a.start()
    assert a.alive() == {"a", "b"}
    assert api.items[(NS, "localmodel-agent-a")]["spec"]["holderIdentity"] == "a"
    clock.advance(10)
    await a.renew()
    await b.renew()
    assert a.renewals == b.renewals == 2
    changes.clear()
    # b stops renewing. a's next list sees b's last renewal (made at +10 s) for the first time: fresh from
    # then on (a's own clock, whatever b's says), so b is dropped by the list a duration later.
    clock.advance(39)
    await a.refresh()
    clock.advance(39)
    await a.refresh()
    assert a.alive() == {"a", "b"}
    assert changes == []
    clock.advance(1.5)
    await a.refresh()
    assert a.alive() == {"a"}
    assert changes == [{"a"}]
    # b comes back
    await b.renew()
    await a.refresh()
    assert a.alive() == {"a", "b"}


async def test_the_agent_loop_renews_every_quarter_duration_and_lists_every_duration() -> None:
    clock, api = Clock(), FakeLeases()
    agent = AgentPresence(
        api,  # type: ignore[arg-type]
        NS,
        "a",
        duration=40,
        monotonic=clock.monotonic,
        wall_clock=clock.wall,
        sleep=clock.sleep,
    )
    await agent.start()
    api.calls.clear()
    stop = asyncio.Event()

    async def sleep_a_virtual_minute(seconds: float) -> None:
        await clock.sleep(seconds)
        if clock.t > 1000 + 60:
            stop.set()

    agent._sleep = sleep_a_virtual_minute
    await agent.run(stop)
    assert api.calls.count("update") == 6  # every 10 s for 60 s
    assert api.calls.count("list") == 1  # at 40 s
    assert "get" not in api.calls
    assert "create" not in api.calls


async def test_an_agent_that_is_not_the_aggregator_only_renews() -> None:
    clock, api = Clock(), FakeLeases()
    agent = AgentPresence(
        api,  # type: ignore[arg-type]
        NS,
        "a",
        duration=40,
        monotonic=clock.monotonic,
        wall_clock=clock.wall,
        sleep=clock.sleep,
    )
    agent.listing = False  # only the aggregator lists the agent Leases (aggregator.py)
    await agent.renew()
    api.calls.clear()
    stop = asyncio.Event()

    async def sleep_two_virtual_minutes(seconds: float) -> None:
        await clock.sleep(seconds)
        if clock.t > 1000 + 120:
            stop.set()

    agent._sleep = sleep_two_virtual_minutes
    await agent.run(stop)
    assert api.calls == ["update"] * 12  # one request per renewal period, nothing else


async def test_without_lease_permissions_presence_is_off_and_every_matching_node_is_expected() -> None:
    class NoLeases(FakeLeases):
        async def list_leases(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
            raise Forbidden(403, "forbidden", verb="list", group="coordination.k8s.io", resource="leases", namespace=NS)

    agent = AgentPresence(NoLeases(), NS, "a")  # type: ignore[arg-type]
    await agent.start()
    assert agent.alive() is None


# ---- what the operator makes of it ---------------------------------------------------------------


class Cluster(FakeKube, FakeLeases):
    def __init__(self) -> None:
        FakeKube.__init__(self)
        FakeLeases.__init__(self)
        self.removed_finalizers: list[set[str]] = []

    async def remove_finalizers(
        self, namespace: str, name: str, current: dict[str, Any], names: set[str]
    ) -> dict[str, Any]:
        body = self.objects[(namespace, name)]
        body["metadata"]["finalizers"] = [f for f in body["metadata"].get("finalizers", []) if f not in names]
        self.removed_finalizers.append(set(names))
        return copy.deepcopy(body)


async def agent(
    cluster: Cluster, clock: Clock, node: str, url: str, nodes: dict[str, dict[str, str]], events: Events
) -> Operator:
    presence = AgentPresence(
        cluster,  # type: ignore[arg-type]
        NS,
        node,
        duration=40,
        monotonic=clock.monotonic,
        wall_clock=clock.wall,
    )
    await presence.start()
    return Operator(
        OperatorConfig(mode="node-agent", node_name=node, operator_namespace=NS, watch_period=None),
        cluster,  # type: ignore[arg-type]
        [EngineRef(node, url)],
        nodes=nodes,
        post_event=events,
        presence=presence,
    )


def ready_message(body: dict[str, Any]) -> str:
    return next(c["message"] for c in body["status"]["conditions"] if c["type"] == "Ready")


async def test_a_matching_node_without_an_agent_is_named_and_does_not_hold_ready_back(emu: RunningEmulator) -> None:
    cluster, clock, events = Cluster(), Clock(), Events()
    nodes = {"a": {}, "control-plane": {}}  # the DaemonSet does not run on the tainted control-plane node
    a = await agent(cluster, clock, "a", emu.url, nodes, events)
    cluster.create("smol", {"model": "ai/smollm2"})
    await a.reconcile_object(cluster.get("smol"))
    stored = cluster.get("smol")
    assert conditions(stored)["Ready"] == "True"
    assert "no agent on node control-plane" in ready_message(stored)
    assert [e["name"] for e in stored["status"]["engines"]] == ["a"]
    await a.aclose()


async def test_an_expired_agent_loses_its_entry_and_its_finalizer() -> None:
    cluster, clock, events = Cluster(), Clock(), Events()
    nodes = {"a": {}, "b": {}}
    async with emulator(preload_models=["ai/smollm2"]) as emu_a, emulator(preload_models=["ai/smollm2"]) as emu_b:
        a = await agent(cluster, clock, "a", emu_a.url, nodes, events)
        b = await agent(cluster, clock, "b", emu_b.url, nodes, events)
        await a.presence.refresh()  # type: ignore[union-attr]
        cluster.create("smol", {"model": "ai/smollm2"})
        cluster.objects[("ns", "smol")]["metadata"]["finalizers"] = ["localmodel.io/agent-a", "localmodel.io/agent-b"]
        await a.reconcile_object(cluster.get("smol"))
        await b.reconcile_object(cluster.get("smol"))
        stored = cluster.get("smol")
        assert [e["name"] for e in stored["status"]["engines"]] == ["a", "b"]
        assert conditions(stored)["Ready"] == "True"
        assert "no agent" not in ready_message(stored)

        # b's agent dies (no renewal); a keeps renewing. After the lease duration a's list drops b and
        # wakes the passes: a's next pass removes b's entry and stays Ready, naming b.
        woken = a.state("uid-smol").wake
        woken.clear()
        for _ in range(5):
            clock.advance(10)
            await a.presence.renew()  # type: ignore[union-attr]
        await a.presence.refresh()  # type: ignore[union-attr]
        assert woken.is_set()
        await a.reconcile_object(cluster.get("smol"))
        stored = cluster.get("smol")
        assert [e["name"] for e in stored["status"]["engines"]] == ["a"]
        assert conditions(stored)["Ready"] == "True"
        assert "no agent on node b" in ready_message(stored)

        # Deleted: a applies the deletion policy and releases b's finalizer, which nobody else would.
        deleting = cluster.get("smol")
        deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        await a.finalize_object(deleting)
        assert cluster.removed_finalizers == [{"localmodel.io/agent-b"}]
        assert cluster.get("smol")["metadata"]["finalizers"] == ["localmodel.io/agent-a"]
        assert "FinalizerReleased" in events.reasons("Normal")
        for operator in (a, b):
            await operator.aclose()


async def test_an_agent_not_listed_yet_that_has_reported_is_expected_so_writers_agree() -> None:
    cluster, clock, events = Cluster(), Clock(), Events()
    nodes = {"a": {}, "b": {}}
    async with emulator(preload_models=["ai/smollm2"]) as emu_a, emulator(preload_models=["ai/smollm2"]) as emu_b:
        a = await agent(cluster, clock, "a", emu_a.url, nodes, events)  # lists before b's Lease exists
        b = await agent(cluster, clock, "b", emu_b.url, nodes, events)
        assert a.presence is not None
        assert a.presence.alive() == {"a"}
        cluster.create("smol", {"model": "ai/smollm2"})
        await b.reconcile_object(cluster.get("smol"))
        await a.reconcile_object(cluster.get("smol"))
        stored = cluster.get("smol")
        assert [e["name"] for e in stored["status"]["engines"]] == ["a", "b"]
        assert "no agent" not in ready_message(stored)
        # Both summarise the same set: further passes write nothing.
        writes = len(cluster.writes)
        for operator in (a, b, a, b):
            await operator.reconcile_object(cluster.get("smol"))
        assert len(cluster.writes) == writes
        for operator in (a, b):
            await operator.aclose()


async def test_an_agent_that_dies_during_a_deletion_has_its_finalizer_released_when_its_lease_expires() -> None:
    cluster, clock, events = Cluster(), Clock(), Events()
    nodes = {"a": {}, "b": {}}
    async with emulator(preload_models=["ai/smollm2"]) as emu_a:
        a = await agent(cluster, clock, "a", emu_a.url, nodes, events)
        b_presence = AgentPresence(cluster, NS, "b", monotonic=clock.monotonic, wall_clock=clock.wall)  # type: ignore[arg-type]
        await b_presence.renew()
        assert a.presence is not None
        await a.presence.refresh()
        assert a.presence.alive() == {"a", "b"}
        # a finalized the object already (its finalizer is gone); b's agent died before finalizing.
        cluster.create("smol", {"model": "ai/smollm2"})
        meta = cluster.objects[("ns", "smol")]["metadata"]
        meta["finalizers"] = ["localmodel.io/agent-b"]
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        a.object_changed("MODIFIED", cluster.get("smol"))
        for _ in range(5):  # b's Lease expires; a keeps renewing and lists again
            clock.advance(10)
            await a.presence.renew()
        await a.presence.refresh()
        assert a.presence.expired() == {"b"}
        for _ in range(10):
            await asyncio.sleep(0)
        assert cluster.removed_finalizers == [{"localmodel.io/agent-b"}]
        assert cluster.get("smol")["metadata"]["finalizers"] == []
        await a.aclose()
