"""controller/shared_read.py: one read of an engine shared by the passes that need it at about the same time."""

from __future__ import annotations

import asyncio

import pytest

from controller.plan import Observation
from controller.shared_read import SharedRead


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_one_observation_serves_every_model_that_accepts_it() -> None:
    clock, calls = Clock(), []

    async def observe() -> Observation:
        calls.append(clock.now)
        await asyncio.sleep(0)
        return Observation("e")

    shared = SharedRead(observe, clock)
    await asyncio.gather(*(shared.get(not_before=99.0) for _ in range(50)))  # concurrent: one in flight
    assert calls == [100.0]
    clock.now = 130.0
    await shared.get(not_before=100.0)  # taken at 100: recent enough for a pass that last ran at 100
    assert calls == [100.0]
    await shared.get(not_before=101.0)  # older than this pass's previous one: observe again
    assert calls == [100.0, 130.0]
    shared.invalidate()  # the engine changed (a configure): nothing seen before counts
    await shared.get(not_before=0.0)
    assert calls == [100.0, 130.0, 130.0]
    assert shared.reads == 3


async def test_a_read_in_flight_that_started_before_a_write_is_not_joined() -> None:
    """A pass that configured at 101 must not take a read that started at 100: it may not show its write."""
    clock, started, release = Clock(), [], asyncio.Event()

    async def read() -> float:
        started.append(clock.now)
        await release.wait()
        return clock.now

    shared = SharedRead(read, clock)
    first = asyncio.create_task(shared.get(not_before=100.0))
    await settle()
    assert started == [100.0]
    clock.now = 101.0
    second = asyncio.create_task(shared.get(not_before=101.0))
    await settle()
    assert started == [100.0, 101.0]  # a read of its own
    release.set()
    assert await asyncio.gather(first, second) == [101.0, 101.0]


async def test_callers_arriving_while_a_read_gathers_join_it() -> None:
    """With `gather`, the read starts after a short wait; everyone who asks meanwhile shares it, whatever
    their `not_before` (the read starts after it)."""
    clock, calls, waits = Clock(), [], []
    release = asyncio.Event()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await release.wait()
        clock.now += seconds

    async def read() -> float:
        calls.append(clock.now)
        return clock.now

    shared = SharedRead(read, clock, gather=0.01, sleep=sleep)
    early = asyncio.create_task(shared.get(not_before=100.0))
    await settle()
    clock.now = 100.005  # a pass whose configure was answered during the wait
    late = asyncio.create_task(shared.get(not_before=100.005))
    await settle()
    release.set()
    assert await asyncio.gather(early, late) == [pytest.approx(100.015)] * 2
    assert calls == [pytest.approx(100.015)]
    assert waits == [0.01]


async def test_an_error_reaches_every_caller_and_is_not_kept() -> None:
    clock, calls = Clock(), [0]

    async def read() -> str:
        calls[0] += 1
        await settle()
        if calls[0] == 1:
            raise ConnectionError("engine gone")
        return "ok"

    shared = SharedRead(read, clock)
    results = await asyncio.gather(*(shared.get(100.0) for _ in range(3)), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError] * 3
    assert await shared.get(100.0) == "ok"  # the failure was not remembered as a result
    assert calls == [2]


async def test_a_cancelled_caller_leaves_the_read_to_the_others() -> None:
    clock, release = Clock(), asyncio.Event()

    async def read() -> str:
        await release.wait()
        return "configs"

    shared = SharedRead(read, clock)
    impatient = asyncio.create_task(shared.get(100.0))
    patient = asyncio.create_task(shared.get(100.0))
    await settle()
    impatient.cancel()
    release.set()
    assert await patient == "configs"
    assert impatient.cancelled()
