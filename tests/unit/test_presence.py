"""Agent presence through Leases (controller/operator/presence.py, leases.py), in virtual time: when a
Lease counts as fresh, the agent's own renewals and lists, and what the operator makes of it: a
matching node without a live agent is named but not waited for; an agent whose Lease expired loses
its status entry and, on deletion, its finalizer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from controller.emulator import RunningEmulator
from controller.operator.aggregator import Aggregator
from controller.operator.kube import Forbidden
from controller.operator.leases import AGENT_ROLE, LeaseRecord, Sighting, sight
from controller.operator.nodereport import NodeReport
from controller.operator.presence import AgentPresence, PresenceView, agent_lease_name
from controller.operator.summary import absent_note
from controller.status import EngineStatus, Phase, Reason
from tests.support.emulator import emulator
from tests.support.leases import Clock, FakeLeases
from tests.unit.test_operator_runtime import conditions

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
    record = LeaseRecord("localmodel-agent-a", "a", 40, clock.wall(), clock.wall(), 3, "17", candidates=200)
    body = record.to_k8s(NS, AGENT_ROLE)
    assert body["spec"]["renewTime"].endswith("Z")
    assert body["metadata"]["labels"]["localmodel.io/lease"] == "agent"
    assert LeaseRecord.from_k8s(body) == record


@pytest.mark.parametrize("written", ["", "-3", "²", "1e3", "9" * 5000, "12 ", 7])
def test_a_candidate_count_that_is_not_a_plain_number_is_ignored(written: object) -> None:
    """Anyone who can edit the Lease can write the annotation: an unreadable count is no count, never a
    crash (`int("²")` and a 5,000-digit `int` raise)."""
    body = LeaseRecord("localmodel-aggregator", "a", 40).to_k8s(NS, AGENT_ROLE)
    body["metadata"]["annotations"] = {"localmodel.io/candidates": written}
    assert LeaseRecord.from_k8s(body).candidates is None


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


async def test_a_live_agent_first_seen_with_an_old_renewal_is_not_expired_before_the_next_list() -> None:
    """Measured at 50 nodes (docs/scale.md): the aggregator saw an agent's Lease for the first time 12 s after
    its last renewal (credited with that age), and the loop's check between two lists expired it 28 s later,
    though the agent renewed every 10 s: nobody had looked. Expiry needs a list that shows no renewal."""
    clock, api = Clock(), FakeLeases()
    changes: list[set[str] | None] = []
    b = AgentPresence(api, NS, "b", duration=40, monotonic=clock.monotonic, wall_clock=clock.wall)  # type: ignore[arg-type]
    await b.renew()
    clock.advance(12)
    a = AgentPresence(api, NS, "a", duration=40, monotonic=clock.monotonic, wall_clock=clock.wall)  # type: ignore[arg-type]
    await a.start()  # first sight of b: renewed 12 s ago
    a.on_change = lambda: changes.append(a.alive())
    assert a.alive() == {"a", "b"}
    for _ in range(3):  # b keeps renewing every 10 s; a's loop renews and checks, without listing yet
        clock.advance(10)
        await b.renew()
        await a.renew()
        if a._recompute():
            a.on_change()
    assert a.alive() == {"a", "b"}
    assert changes == []


async def calls_in_a_loop(*, listing: bool, seconds: float) -> list[str]:
    """The Lease API calls of agent `a`'s loop (after its start) over `seconds` of virtual time."""
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
    agent.listing = listing
    api.calls.clear()
    stop = asyncio.Event()

    async def sleep_until_the_end(step: float) -> None:
        await clock.sleep(step)
        if clock.t > 1000 + seconds:
            stop.set()

    agent._sleep = sleep_until_the_end
    await agent.run(stop)
    return list(api.calls)


async def test_the_agent_loop_renews_every_quarter_duration_and_lists_every_duration() -> None:
    calls = await calls_in_a_loop(listing=True, seconds=60)
    assert calls.count("update") == 6  # every 10 s for 60 s
    assert calls.count("list") == 1  # at 40 s
    assert "get" not in calls
    assert "create" not in calls


async def test_an_agent_that_is_not_the_aggregator_only_renews() -> None:
    # Only the aggregator lists the agent Leases (aggregator.py): one request per renewal period, nothing else.
    assert await calls_in_a_loop(listing=False, seconds=120) == ["update"] * 12


async def test_without_lease_permissions_presence_is_off_and_every_matching_node_is_expected() -> None:
    class NoLeases(FakeLeases):
        async def list_leases(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
            raise Forbidden(403, "forbidden", verb="list", group="coordination.k8s.io", resource="leases", namespace=NS)

    agent = AgentPresence(NoLeases(), NS, "a")  # type: ignore[arg-type]
    await agent.start()
    assert agent.alive() is None


# ---- what the aggregator makes of it (aggregator.py) ------------------------------------------------


class Recorder:
    """The LocalModel writes the aggregator makes."""

    def __init__(self) -> None:
        self.finalizers: list[tuple[str | None, list[str]]] = []
        self.statuses: list[dict[str, Any]] = []

    async def update_finalizers(self, namespace: str, name: str, current: Any, *, add: Any = None, remove: Any = ()):
        self.finalizers.append((add, sorted(remove)))
        return {}

    async def apply_status(self, namespace: str, name: str, status: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.statuses.append(status)
        return {}


async def presence_of(leases: FakeLeases, clock: Clock, node: str) -> AgentPresence:
    presence = AgentPresence(leases, NS, node, duration=40, monotonic=clock.monotonic, wall_clock=clock.wall)  # type: ignore[arg-type]
    await presence.start()
    return presence


def report(node: str, *, ready: bool = True) -> dict[str, Any]:
    body = NodeReport(node)
    status = EngineStatus(node, Phase.READY, Reason.APPLIED, "ok", ready=ready, observed_generation=1)
    body.report("ns", "smol", "uid-smol", status)
    return body.body()


def smol(*, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "smol", "namespace": "ns", "uid": "uid-smol", "generation": 1}
    meta["finalizers"] = ["localmodel.io/finalizer"]
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"model": "ai/smollm2"}, "status": {}}


def ready_message(status: dict[str, Any]) -> str:
    return next(c["message"] for c in status["conditions"] if c["type"] == "Ready")


async def test_a_matching_node_without_an_agent_is_named_and_does_not_hold_ready_back() -> None:
    leases, clock, api = FakeLeases(), Clock(), Recorder()
    nodes = {"a": {}, "control-plane": {}}  # the DaemonSet does not run on the tainted control-plane node
    presence = await presence_of(leases, clock, "a")
    aggregator = Aggregator(api, nodes=lambda: nodes, presence=presence, clock=clock.wall)  # type: ignore[arg-type]
    aggregator.node_report("ADDED", report("a"))
    aggregator.object_changed("ADDED", smol())
    await aggregator.settle("uid-smol")
    [status] = api.statuses
    assert status["ready"] == "1/1"
    assert conditions({"status": status})["Ready"] == "True"
    assert "no agent on node control-plane" in ready_message(status)


async def test_an_expired_agent_is_no_longer_expected_nor_waited_for_on_deletion() -> None:
    leases, clock, api = FakeLeases(), Clock(), Recorder()
    nodes = {"a": {}, "b": {}}
    a, b = await presence_of(leases, clock, "a"), await presence_of(leases, clock, "b")
    await a.refresh()
    aggregator = Aggregator(api, nodes=lambda: nodes, presence=a, clock=clock.wall)  # type: ignore[arg-type]
    a.on_change = aggregator.everything_changed
    for node in ("a", "b"):
        aggregator.node_report("ADDED", report(node))
    aggregator.object_changed("ADDED", smol())
    await aggregator.settle("uid-smol")
    assert api.statuses[-1]["ready"] == "2/2"

    # b's agent dies (no renewal); a keeps renewing. After the lease duration a's list drops b and marks
    # every object: the summary expects a only, and names b.
    for _ in range(5):
        clock.advance(10)
        await a.renew()
    await a.refresh()
    assert a.expired() == {"b"}
    assert "uid-smol" in aggregator._dirty
    await aggregator.settle("uid-smol")
    assert api.statuses[-1]["ready"] == "1/1"
    assert "no agent on node b" in ready_message(api.statuses[-1])

    # Deleted: a applied the deletion policy and dropped its entry; b's entry stays (it is dead), and
    # the finalizer is released without it.
    aggregator.node_report("MODIFIED", NodeReport("a").body())
    aggregator.object_changed("MODIFIED", smol(deleting=True))
    await aggregator.settle("uid-smol")
    assert api.finalizers == [(None, ["localmodel.io/finalizer"])]
    await b.refresh()  # (b is only here to have held a Lease)


async def test_an_agent_not_listed_yet_that_has_reported_is_expected() -> None:
    leases, clock, api = FakeLeases(), Clock(), Recorder()
    nodes = {"a": {}, "b": {}}
    a = await presence_of(leases, clock, "a")  # lists before b's Lease exists
    await presence_of(leases, clock, "b")
    assert a.alive() == {"a"}
    aggregator = Aggregator(api, nodes=lambda: nodes, presence=a, clock=clock.wall)  # type: ignore[arg-type]
    aggregator.node_report("ADDED", report("a"))
    aggregator.node_report("ADDED", report("b"))
    aggregator.object_changed("ADDED", smol())
    assert aggregator.expected(smol()) == (["a", "b"], [])


async def test_a_deletion_waits_for_a_live_agent_that_still_reports_the_object() -> None:
    leases, clock, api = FakeLeases(), Clock(), Recorder()
    nodes = {"a": {}, "b": {}}
    a, b = await presence_of(leases, clock, "a"), await presence_of(leases, clock, "b")
    await a.refresh()
    aggregator = Aggregator(api, nodes=lambda: nodes, presence=a, clock=clock.wall)  # type: ignore[arg-type]
    aggregator.node_report("ADDED", report("b"))
    aggregator.object_changed("MODIFIED", smol(deleting=True))
    await aggregator.settle("uid-smol")
    assert api.finalizers == []  # b is alive and has not finalized yet
    aggregator.node_report("MODIFIED", NodeReport("b").body())
    await aggregator.settle("uid-smol")
    assert api.finalizers == [(None, ["localmodel.io/finalizer"])]
    await b.refresh()
