"""A node agent's writer of its LocalModelNode (nodereport.py): after a pass that changed the node's
entry for a LocalModel, the whole object is applied, coalesced with the other passes that finished
meanwhile (at most one write per WRITE_SPACING), and retried with backoff when the API server refuses
or does not answer.

Pull progress changes the entry many times a second; those changes are written at most once per
`PROGRESS_WRITE_SECONDS` (a pass's result is written within WRITE_SPACING, even during that wait).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from controller.backoff import Retries
from controller.operator.kube import KubeClient, KubeError
from controller.operator.nodereport import NODE_FIELD_MANAGER, NodeReport
from controller.waits import sleep_or_wake

log = logging.getLogger("localmodel.operator")

PROGRESS_WRITE_SECONDS: Final = 5.0
# Results written within this long of the last write wait for its end and go together: during a rollout
# the passes of one node finish one after another, and each whole-object apply costs the API server.
WRITE_SPACING: Final = 1.0
WRITE_RETRIES: Final = Retries(first=1.0, cap=30.0)


class ReportWriter:
    """Applies `report` to the API server whenever it changed; `run` until stopped."""

    def __init__(
        self,
        kube: KubeClient,
        report: NodeReport,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.kube = kube
        self.report = report
        self._monotonic = monotonic
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._urgent = False
        self._urgent_now = asyncio.Event()
        self._written_at = float("-inf")
        self.writes = 0
        self.failures = 0

    def changed(self, *, urgent: bool = True) -> None:
        """The report changed: write it now (a pass's result) or within PROGRESS_WRITE_SECONDS (progress)."""
        if urgent:
            self._urgent = True
            self._urgent_now.set()
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._wake.wait()
            # Changes made while it waits go into this write; an urgent one cuts a progress wait short.
            while (wait := self._due() - self._monotonic()) > 0 and not stop.is_set():
                self._urgent_now.clear()
                await sleep_or_wake(wait, self._urgent_now.wait(), stop.wait(), sleep=self._sleep)
            self._wake.clear()
            self._urgent = False
            if not await self.write():
                self.failures += 1
                await self._sleep(WRITE_RETRIES.after(self.failures) or WRITE_RETRIES.cap)
                self.changed()
            else:
                self.failures = 0

    def _due(self) -> float:
        return self._written_at + (WRITE_SPACING if self._urgent else PROGRESS_WRITE_SECONDS)

    async def write(self) -> bool:
        """Apply the report if it changed since the last write; False when the API server refused it."""
        if not self.report.changed:
            return True
        entries = dict(self.report.entries)  # entries are replaced, never changed in place
        body = self.report.body()
        try:
            await self.kube.apply_localmodelnode(body, field_manager=NODE_FIELD_MANAGER)
        except KubeError as exc:
            log.warning("LocalModelNode %s not written: %s; trying again", self.report.node, exc)
            return False
        self.report.mark_written(entries)
        self._written_at = self._monotonic()
        self.writes += 1
        return True
