"""Fault handling of the operator's passes, against emulated engines and the in-memory API server of
test_operator_runtime (resourceVersion preconditions, per-manager status entries)."""

from __future__ import annotations

import asyncio
from typing import Any

from controller.emulator import RunningEmulator
from controller.operator.engines import EngineRef
from tests.unit.test_operator_runtime import Events, FakeKube, central, emu  # noqa: F401

FINALIZER = "localmodel.io/finalizer"


def add_finalizer(kube: FakeKube, live: dict[str, Any], name: str) -> None:
    """What kopf does right after starting an object's daemon: patch the finalizer in, and (when the
    watch event arrives) replace its live body."""
    stored = kube.objects[("ns", name)]
    stored["metadata"]["finalizers"] = [FINALIZER]
    kube.version += 1
    stored["metadata"]["resourceVersion"] = str(kube.version)
    live.clear()
    live.update(kube.get(name))


async def test_the_first_status_write_uses_the_object_after_the_finalizer(emu: RunningEmulator) -> None:  # noqa: F811
    kube, events = FakeKube(), Events()
    operator = central(kube, [EngineRef("emu", emu.url)], events)
    live = kube.create("smol", {"model": "ai/smollm2", "contextSize": 8192})
    task = asyncio.create_task(operator.reconcile_object(live, live=True))
    await asyncio.sleep(0)  # the pass has taken its copy of the object (without the finalizer)
    add_finalizer(kube, live, "smol")
    operator.object_changed("MODIFIED", live)
    await task
    assert operator.metrics.status_writes.labels("conflict")._value.get() == 0
    assert operator.metrics.status_writes.labels("written")._value.get() == 1
    assert kube.get("smol")["status"]["engines"][0]["ready"] is True
    await operator.aclose()


async def test_a_pass_that_ends_before_the_finalizer_event_waits_for_it(emu: RunningEmulator) -> None:  # noqa: F811
    kube, events = FakeKube(), Events()
    operator = central(kube, [EngineRef("emu", emu.url)], events)
    live = kube.create("smol", {"model": "ai/smollm2"})
    task = asyncio.create_task(operator.reconcile_object(live, live=True))
    for _ in range(100):  # long enough for the pass to reach its status write
        await asyncio.sleep(0.005)
    assert not task.done()  # it waits for the object with the finalizer
    assert kube.writes == []
    add_finalizer(kube, live, "smol")
    operator.object_changed("MODIFIED", live)
    await task
    assert operator.metrics.status_writes.labels("conflict")._value.get() == 0
    assert len(kube.writes) == 1
    await operator.aclose()
