"""Leader election of the central replicas (controller/operator/election.py) in virtual time, against an
in-memory Lease API with resourceVersion preconditions: one leader, takeover only after the lease
duration, a leader that cannot renew stops before anyone can take over, and a standby operator
neither reconciles nor writes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from controller.operator.config import OperatorConfig
from controller.operator.election import MAX_STANDBY_WAIT, ElectionTiming, LeaderElector, leader_lease_name
from controller.operator.engines import EngineRef
from controller.operator.runtime import Operator
from tests.support.emulator import emulator
from tests.support.leases import Clock, FakeLeases
from tests.unit.test_operator_runtime import Events, FakeKube, conditions

NS = "localmodel-system"
TIMING = ElectionTiming(duration=15, renew_deadline=10, retry=2)


def elector(
    api: FakeLeases,
    clock: Clock,
    who: str,
    *,
    name: str = "localmodel-leader",
    timing: ElectionTiming = TIMING,
    jitter: float = 0.0,
    **kwargs: Any,
) -> LeaderElector:
    return LeaderElector(
        api,  # type: ignore[arg-type]
        NS,
        name,
        identity=who,
        timing=timing,
        monotonic=clock.monotonic,
        wall_clock=clock.wall,
        sleep=clock.sleep,
        jitter=lambda: jitter,
        **kwargs,
    )


def holder(api: FakeLeases) -> str:
    return str(api.items[(NS, "localmodel-leader")]["spec"]["holderIdentity"])


def test_the_lease_name_follows_the_watched_namespaces() -> None:
    assert leader_lease_name(()) == "localmodel-leader"
    assert leader_lease_name(("b", "a")) == leader_lease_name(("a", "b")) == "localmodel-leader-a-b"
    assert len(leader_lease_name(tuple(f"namespace-{i}" for i in range(20)))) <= 63
    assert ElectionTiming.for_duration(15) == ElectionTiming(15, 10, 2)


async def test_one_leader_and_a_standby_that_takes_over_only_after_the_lease_duration() -> None:
    clock, api = Clock(), FakeLeases()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert holder(api) == "a"
    # a renews for a while: b never gets it.
    for _ in range(10):
        clock.advance(2)
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
    # a dies. b takes over once it has seen no renewal for the whole duration, by its own clock.
    for _ in range(7):
        clock.advance(2)
        assert not await b.try_acquire_or_renew()  # 14 s since b saw the last renewal
    clock.advance(1)
    assert await b.try_acquire_or_renew()
    assert holder(api) == "b"
    assert api.items[(NS, "localmodel-leader")]["spec"]["leaseTransitions"] == 1


async def test_a_standby_with_a_standby_retry_reads_the_lease_that_often_only() -> None:
    clock, api = Clock(), FakeLeases()
    assert await elector(api, clock, "a").try_acquire_or_renew()
    standby = elector(api, clock, "b", timing=replace(TIMING, standby_retry=40))
    waits: list[float] = []
    stop = asyncio.Event()

    async def wait(_stop: asyncio.Event, seconds: float) -> None:
        waits.append(seconds)
        stop.set()

    standby._wait = wait  # type: ignore[method-assign]
    await standby.run(stop)
    assert waits == [40]  # the lease is held: the next read in 40 s, not in 2


async def test_a_standby_that_just_started_waits_a_whole_duration_whatever_the_renew_time_says() -> None:
    clock, api = Clock(), FakeLeases()
    a = elector(api, clock, "a")
    assert await a.try_acquire_or_renew()
    clock.advance(100)  # a died long ago by the wall clock
    late = elector(api, clock, "late")
    assert not await late.try_acquire_or_renew()  # its first sighting: the holder gets a full duration
    clock.advance(15)
    assert await late.try_acquire_or_renew()


async def test_two_replicas_trying_at_once_one_wins() -> None:
    clock, api = Clock(), FakeLeases()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
    assert sorted(results) == [False, True]
    assert api.calls.count("create") == 2  # both tried; the second create was refused (409)


async def test_a_leader_that_cannot_renew_stops_before_a_standby_can_take_over() -> None:
    clock, api = Clock(), FakeLeases()
    events: list[tuple[str, float]] = []
    leads = asyncio.Event()

    def started_leading() -> None:
        events.append(("a leads", clock.t))
        leads.set()

    a = elector(api, clock, "a", on_started=started_leading, on_stopped=lambda: events.append(("a stops", clock.t)))
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop))
    await leads.wait()
    started = clock.t
    api.down = True  # the API server is unreachable from a (a partition), not from the standby
    await task
    assert not a.leading
    [(_, lead_at), (_, stop_at)] = events
    assert lead_at == started
    # a stopped within the renew deadline (10 s) plus one retry period; the standby, which saw the last
    # renewal at `started` at the earliest, cannot take over before `started + 15`.
    assert stop_at - started <= TIMING.renew_deadline + TIMING.retry
    assert stop_at < started + TIMING.duration


async def test_a_leader_that_sees_another_holder_stops_at_once() -> None:
    clock, api = Clock(), FakeLeases()
    stopped: list[float] = []
    leads = asyncio.Event()
    a = elector(api, clock, "a", on_started=leads.set, on_stopped=lambda: stopped.append(clock.t))
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop))
    await leads.wait()
    lease = api.items[(NS, "localmodel-leader")]
    lease["spec"]["holderIdentity"] = "intruder"  # e.g. an admin edit
    api.version += 1
    lease["metadata"]["resourceVersion"] = str(api.version)
    await task
    assert stopped == [clock.t]
    assert clock.t - 1000 <= 2 * TIMING.retry


async def test_release_hands_over_at_once() -> None:
    clock, api = Clock(), FakeLeases()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_acquire_or_renew()
    a.leading = True
    assert not await b.try_acquire_or_renew()
    await a.release()
    assert holder(api) == ""
    assert await b.try_acquire_or_renew()


async def test_a_standby_operator_neither_reconciles_nor_writes_until_it_leads() -> None:
    kube, clock, events = FakeKube(), Clock(), Events()
    api = FakeLeases()
    async with emulator(preload_models=["ai/smollm2"]) as emu:
        standby = Operator(
            OperatorConfig(watch_period=None),
            kube,  # type: ignore[arg-type]
            [EngineRef("emu", emu.url)],
            post_event=events,
            elector=elector(api, clock, "b"),
        )
        kube.create("smol", {"model": "ai/smollm2", "contextSize": 2048})
        assert await standby.reconcile_object(kube.get("smol")) is None
        assert kube.writes == []
        assert emu.state.config_entries() == []
        assert events == []
        assert not await standby_cleanups_started(standby)

        standby._started_leading()  # what the elector calls once it holds the Lease
        assert standby.state("uid-smol").wake.is_set()
        await standby.reconcile_object(kube.get("smol"))
        assert conditions(kube.get("smol"))["Ready"] == "True"
        assert kube.writes == ["localmodel-operator"]
        await standby.aclose()


async def standby_cleanups_started(operator: Operator) -> bool:
    operator.finalization.owed["x"] = object()  # type: ignore[assignment]
    operator.finalization.start_cleanups()
    started = operator.finalization.cleanups_task is not None
    operator.finalization.owed.clear()
    return started


async def test_a_standby_does_not_release_the_finalizer_of_an_object_being_deleted() -> None:
    kube, clock, events = FakeKube(), Clock(), Events()
    standby = Operator(
        OperatorConfig(watch_period=None),
        kube,  # type: ignore[arg-type]
        [EngineRef("emu", "http://127.0.0.1:9")],
        post_event=events,
        elector=elector(FakeLeases(), clock, "b"),
        sleep=clock.sleep,
    )
    body = kube.create("smol", {"model": "ai/smollm2"})
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    finalizing = asyncio.create_task(standby.finalize_object(body))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not finalizing.done()  # kopf would remove the shared finalizer when the handler returns
    standby.forget(body)  # the leader finalized it; the object is gone from the watch
    await finalizing
    assert standby.metrics.finalizations.labels("done")._value.get() == 0
    await standby.aclose()


AGENTS = ElectionTiming(duration=40, renew_deadline=30, retry=10, standby_retry=40, standby_readers=4)


def agent_elector(api: FakeLeases, clock: Clock, who: str, candidates: int | None = None) -> LeaderElector:
    return elector(
        api, clock, who, name="localmodel-aggregator", timing=AGENTS, jitter=0.5, candidates=lambda: candidates
    )


async def standby_waits(standby: LeaderElector, reads: int = 1) -> list[float]:
    """The waits a standby's loop chooses between its first `reads` reads of the Lease."""
    waits: list[float] = []
    stop = asyncio.Event()

    async def wait(_stop: asyncio.Event, seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == reads:
            stop.set()

    standby._wait = wait  # type: ignore[method-assign]
    await standby.run(stop)
    return waits


async def test_standby_agents_spread_their_reads_so_that_a_few_read_per_lease_duration_in_all() -> None:
    """200 agents: each standby reading the aggregator Lease every 40 s is 300 requests a minute for nothing.
    The aggregator writes how many agents there are into its Lease; each standby then reads it once per
    40 s x 200 / 4 (with jitter): 4 reads per 40 s in all, whatever the node count."""
    clock, api = Clock(), FakeLeases()
    assert await agent_elector(api, clock, "node-0", candidates=100).try_acquire_or_renew()
    assert api.items[(NS, "localmodel-aggregator")]["metadata"]["annotations"]["localmodel.io/candidates"] == "100"
    assert await standby_waits(agent_elector(api, clock, "node-1")) == [40 * 100 / 4]  # jitter 0.5: the middle
    # At most MAX_STANDBY_WAIT: a standby that read "5000" long ago still looks now and then (the cluster
    # may have shrunk since, and fewer standbys now share the reads).
    assert await agent_elector(api, clock, "node-0", candidates=5000).try_acquire_or_renew()
    assert await standby_waits(agent_elector(api, clock, "node-1")) == [MAX_STANDBY_WAIT]
    # An aggregator that does not say (an older agent), or a small cluster: every standby_retry.
    assert await agent_elector(api, clock, "node-0", candidates=3).try_acquire_or_renew()
    assert await standby_waits(agent_elector(api, clock, "node-2")) == [40 * 1.1]


async def test_a_standby_that_sees_the_aggregator_miss_two_renewals_reads_often_and_takes_over() -> None:
    """The renewTime is another machine's clock: a hint to look again soon, never the reason to take over
    (that still takes a whole duration without a change, by the standby's own clock)."""
    clock, api = Clock(), FakeLeases()
    aggregator = agent_elector(api, clock, "node-0", candidates=200)
    assert await aggregator.try_acquire_or_renew()
    clock.advance(25)  # the aggregator died 25 s ago: two renewals (every 10 s) missed
    standby = agent_elector(api, clock, "node-1")
    assert await standby_waits(standby) == [40 * 1.1]
    clock.advance(40 * 1.1)
    assert await standby.try_acquire_or_renew()


async def test_a_leader_renews_with_one_request_and_notices_a_change_by_anyone_else() -> None:
    """client-go reads the Lease before each renewal; a leader here replaces what it wrote last, guarded by
    its resourceVersion: one request per renewal (the aggregator's 6 a minute instead of 12)."""
    clock, api = Clock(), FakeLeases()
    leads = asyncio.Event()
    a = elector(api, clock, "a", on_started=leads.set)
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop))
    await leads.wait()
    api.calls.clear()
    for _ in range(200):
        await asyncio.sleep(0)
        if api.calls.count("update") >= 3:
            break
    renewals = api.calls.count("update")
    assert renewals >= 3
    assert api.calls == ["update"] * renewals  # no read before a renewal
    lease = api.items[(NS, "localmodel-leader")]
    lease["spec"]["holderIdentity"] = "intruder"  # changed under the leader: its replace fails, it reads
    api.version += 1
    lease["metadata"]["resourceVersion"] = str(api.version)
    await asyncio.wait_for(task, 1)
    assert not a.leading
    assert api.calls[-2:] == ["update", "get"]
