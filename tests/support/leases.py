"""An in-memory coordination.k8s.io Lease API for unit tests: resourceVersion preconditions (409 on a
stale replace or a second create), 404 for a missing Lease, label-selector lists, and a switch that
makes every call fail as an unreachable API server would."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.operator.kube import Conflict, Gone, KubeError


@dataclass
class Clock:
    """Virtual time: `monotonic()` and `wall()` move together when `advance` is called."""

    t: float = 1000.0
    epoch: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return self.epoch + timedelta(seconds=self.t)

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


class FakeLeases:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.down = False
        self.calls: list[str] = []
        self.before_write: Callable[[], None] = lambda: None

    def _check(self, verb: str) -> None:
        self.calls.append(verb)
        if self.down:
            raise KubeError(0, "connection refused")

    def _store(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.items[(namespace, stored["metadata"]["name"])] = stored
        return copy.deepcopy(stored)

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any]:
        self._check("get")
        found = copy.deepcopy(self.items.get((namespace, name)))
        await asyncio.sleep(0)  # the answer is on its way: concurrent callers interleave before their writes
        if found is None:
            raise Gone(404, f'leases "{name}" not found')
        return found

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check("create")
        self.before_write()
        if (namespace, body["metadata"]["name"]) in self.items:
            raise Conflict(409, "already exists")
        return self._store(namespace, body)

    async def replace_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check("update")
        self.before_write()
        key = (namespace, body["metadata"]["name"])
        if key not in self.items:
            raise Gone(404, "not found")
        if body["metadata"].get("resourceVersion") != self.items[key]["metadata"]["resourceVersion"]:
            raise Conflict(409, "the object has been modified")
        return self._store(namespace, body)

    async def list_leases(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self._check("list")
        key, _, value = label_selector.partition("=")
        return [
            copy.deepcopy(item)
            for (ns, _), item in self.items.items()
            if ns == namespace and (item["metadata"].get("labels") or {}).get(key) == value
        ]
