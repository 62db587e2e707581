"""Node-agent mode: each LocalModel's passes, run by the agent itself from the watch events kopf relays.

Central mode runs its passes in kopf daemons. A node agent does not: kopf adds a finalizer to every
object it runs a daemon for, one per agent, and each of those finalizer patches is a write of the
LocalModel sent to every agent's watch (nodes² transfers when an object is created on every node, and
a finalizer list that grows with the node count). So the agent runs one loop per LocalModel here,
with the same rhythm as the daemon (a pass, then sleep until woken, the requested delay, or the drift
interval), and the aggregator holds the object's one finalizer (aggregator.py).

Deletion: once the object shows a deletionTimestamp its loop stops and `finalize` runs once (apply
`deletionPolicy` on this node's engine, then drop the node's entry); the aggregator releases the
finalizer when no live agent reports the object any more. An object that is gone (DELETED) without a
deletionTimestamp seen first is finalized then, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

log = logging.getLogger("localmodel.operator")

RETRY_AFTER_ERROR_SECONDS = 10.0

PassRunner = Callable[[Mapping[str, Any]], Awaitable[float | None]]
PassWaiter = Callable[[str, "float | None", Awaitable[Any]], Awaitable[None]]
Finalizer = Callable[[Mapping[str, Any]], Awaitable[None]]


class PassLoops:
    """One pass loop per LocalModel (by uid), started and stopped by its watch events."""

    def __init__(self, run_pass: PassRunner, wait: PassWaiter, finalize: Finalizer) -> None:
        self._run_pass = run_pass
        self._wait = wait
        self._finalize = finalize
        self.bodies: dict[str, Mapping[str, Any]] = {}  # uid -> the object as last seen
        self._loops: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._finalizing: dict[str, asyncio.Task[None]] = {}
        self._finalized: set[str] = set()  # uids finalized here, until their DELETED event
        self.closed = False

    def changed(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of a LocalModel (kopf's `on.event`)."""
        uid = (body.get("metadata") or {}).get("uid")
        if not uid or self.closed:
            return
        if event_type == "DELETED":
            known = self.bodies.pop(uid, None) is not None
            self._stop(uid)
            # Gone without a deletion seen first (deleted before the aggregator's finalizer was on it, or while
            # this agent's watch was down): the DELETED event is the evidence; finalize once, as on a deletion.
            if known and uid not in self._finalized and uid not in self._finalizing:
                self._start_finalize(uid, body)
            self._finalized.discard(uid)
            return
        self.bodies[uid] = body
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            self._stop(uid)
            if uid not in self._finalizing and uid not in self._finalized:
                self._start_finalize(uid, body)
            return
        if uid not in self._loops:
            stop = asyncio.Event()
            task = asyncio.create_task(self._loop(uid, stop), name=f"passes {uid}")
            self._loops[uid] = (task, stop)
            task.add_done_callback(functools.partial(self._ended, uid))

    async def _loop(self, uid: str, stop: asyncio.Event) -> None:
        while not stop.is_set() and not self.closed:
            body = self.bodies.get(uid)
            if body is None:
                return
            try:
                delay = await self._run_pass(body)
            except Exception:  # one object's unexpected failure must not end its passes (nor anyone else's)
                log.exception("a pass of %s failed; trying again in %.0fs", _key(body), RETRY_AFTER_ERROR_SECONDS)
                delay = RETRY_AFTER_ERROR_SECONDS
            if stop.is_set():
                return
            await self._wait(uid, delay, stop.wait())

    def _start_finalize(self, uid: str, body: Mapping[str, Any]) -> None:
        self._finalizing[uid] = asyncio.create_task(self._finalize_once(uid, body), name=f"finalize {uid}")

    async def _finalize_once(self, uid: str, body: Mapping[str, Any]) -> None:
        try:
            await self._finalize(body)
            self._finalized.add(uid)
        except Exception:  # the aggregator keeps the finalizer while this node still reports the object
            log.exception("finalizing %s failed; the node keeps its entry until the next deletion event", _key(body))
        finally:
            self._finalizing.pop(uid, None)

    def _ended(self, uid: str, task: asyncio.Task[None]) -> None:
        if self._loops.get(uid, (None,))[0] is task:
            del self._loops[uid]

    def _stop(self, uid: str) -> None:
        entry = self._loops.get(uid)
        if entry is not None:
            entry[1].set()  # the running pass finishes; no new one starts

    async def aclose(self, grace: float = 10.0) -> None:
        """Stop every loop (running passes finish within `grace` seconds) and the finalizations."""
        self.closed = True
        for _task, stop in self._loops.values():
            stop.set()
        tasks = [task for task, _ in self._loops.values()] + list(self._finalizing.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _key(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
