"""controller/waits.py: the one sleep that something can cut short."""

from __future__ import annotations

import asyncio

from controller.waits import sleep_or_wake


async def test_a_wake_cuts_the_sleep_short_and_nothing_is_left_running() -> None:
    wake = asyncio.Event()
    asyncio.get_running_loop().call_soon(wake.set)
    slept: list[float] = []

    async def endless(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.Event().wait()  # never ends by itself

    await asyncio.wait_for(sleep_or_wake(3600, wake.wait(), sleep=endless), 1)
    assert slept == [3600]
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_without_a_wake_it_sleeps_the_whole_time() -> None:
    slept: list[float] = []

    async def virtual(seconds: float) -> None:
        slept.append(seconds)

    await sleep_or_wake(40, asyncio.Event().wait(), sleep=virtual)
    assert slept == [40]
