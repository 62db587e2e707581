"""One read of an engine shared by the passes that need it at about the same time.

`SharedRead(read).get(not_before)` returns the result of a read *started* at or after `not_before`
(monotonic seconds): the latest one when it started late enough, the one in flight when it started late
enough, or a new one. A caller that has just written to the engine asks for a read started after its
write was answered, so the result reflects its write; callers that wrote earlier share that read.

`gather`: a new read waits that long before it starts, and every caller that arrives meanwhile joins it
(its start is later than theirs). The operator's passes each configure at about the same time when many
LocalModels are created at once; their reads back become a few instead of one each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Read(Generic[T]):
    future: asyncio.Future[T]
    started: float | None = None  # None: still gathering callers; any caller may join
    task: asyncio.Task[None] | None = None


class SharedRead(Generic[T]):
    """See the module docstring. `invalidate()` forgets every read started so far (the engine changed
    under us). Errors of a shared read reach every caller that joined it."""

    def __init__(
        self,
        read: Callable[[], Awaitable[T]],
        clock: Callable[[], float] = time.monotonic,
        *,
        gather: float = 0.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._read_fn = read
        self._clock = clock
        self._gather = gather
        self._sleep = sleep
        self._latest: tuple[float, T] | None = None
        self._inflight: _Read[T] | None = None
        self._valid_from = float("-inf")
        self.reads = 0  # how many reads were made (for metrics and tests)

    async def get(self, not_before: float) -> T:
        not_before = max(not_before, self._valid_from)
        if self._latest is not None and self._latest[0] >= not_before:
            return self._latest[1]
        inflight = self._inflight
        if inflight is None or (inflight.started is not None and inflight.started < not_before):
            inflight = self._start()
        return await asyncio.shield(inflight.future)

    def invalidate(self) -> None:
        """Forget what was read so far: the next `get` reads again."""
        self._valid_from = self._clock()
        self._latest = None

    def _start(self) -> _Read[T]:
        read: _Read[T] = _Read(asyncio.get_running_loop().create_future())
        self._inflight = read
        self.reads += 1
        read.task = asyncio.ensure_future(self._run(read))
        # Every caller may have been cancelled: the outcome is then nobody's, and must not be logged as lost.
        read.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return read

    async def _run(self, read: _Read[T]) -> None:
        try:
            if self._gather > 0:
                await self._sleep(self._gather)
            read.started = started = self._clock()
            result = await self._read_fn()
        except asyncio.CancelledError:
            read.future.cancel()
            raise
        except Exception as exc:  # handed to every caller that joined
            read.future.set_exception(exc)
            return
        finally:
            if self._inflight is read:
                self._inflight = None
        if (self._latest is None or self._latest[0] < started) and started >= self._valid_from:
            self._latest = (started, result)
        read.future.set_result(result)
