"""One way to wait: sleep, or stop early when something happens (a stop, a wake-up).

Every loop that waits (the lease renewals, the leader election, the owed clean-ups) takes its `sleep`
as a parameter so that tests run it on virtual time; this is the one place that races that sleep
against the events that cut it short, and cleans up whichever lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any


async def sleep_or_wake(
    seconds: float, *wake: Awaitable[Any], sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
) -> None:
    """Sleep `seconds` (with `sleep`), or less when any of `wake` completes first."""
    tasks = [asyncio.ensure_future(sleep(seconds)), *(asyncio.ensure_future(w) for w in wake)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
