"""Fault handling of the operator's passes, against emulated engines and the in-memory API server of
test_operator_runtime (resourceVersion preconditions, per-manager status entries)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from controller.emulator import RunningEmulator
from controller.engine.client import EngineClient
from controller.operator.cleanups import Cleanup
from controller.operator.config import OperatorConfig
from controller.operator.engines import EngineRef
from controller.operator.kube import Forbidden, Permission
from controller.operator.runtime import Operator
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


class ForbiddingKube(FakeKube):
    """An API server whose RBAC refuses `patch localmodels/status` until `grant()`."""

    def __init__(self) -> None:
        super().__init__()
        self.granted = False
        self.reviews = 0

    async def apply_status(self, namespace: str, name: str, status: dict[str, Any], **kw: Any) -> dict[str, Any]:
        if not self.granted:
            raise Forbidden(
                403,
                f'localmodels.localmodel.io "{name}" is forbidden: User "op" cannot patch "localmodels/status"',
                verb="patch",
                group="localmodel.io",
                resource="localmodels/status",
                namespace=namespace,
            )
        return await super().apply_status(namespace, name, status, **kw)

    async def allowed(self, permission: Permission) -> bool:
        self.reviews += 1
        return self.granted


async def test_a_missing_status_permission_is_a_warning_a_failing_readyz_and_a_capped_backoff(
    emu: RunningEmulator,  # noqa: F811
) -> None:
    kube, events = ForbiddingKube(), Events()
    sleeps: list[float] = []
    recheck = asyncio.Event()

    async def sleep(seconds: float) -> None:  # the permission re-check waits here until the test says
        sleeps.append(seconds)
        await recheck.wait()
        recheck.clear()

    operator = Operator(OperatorConfig(), kube, [EngineRef("emu", emu.url)], post_event=events, sleep=sleep)  # type: ignore[arg-type]
    body = kube.create("smol", {"model": "ai/smollm2", "contextSize": 8192})
    delays = [await operator.reconcile_object(kube.get("smol")) for _ in range(7)]
    assert delays == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]  # capped, not every 10 s forever
    # One Warning naming the permission; no Normal "applied and verified" event that looks like success.
    assert events.reasons() == ["StatusWriteForbidden"]
    assert "patch localmodels/status (localmodel.io) in namespace ns" in events[0][3]
    assert operator.problems()[0].startswith(
        "missing permission: patch localmodels/status (localmodel.io) in namespace ns"
    )
    assert operator.metrics.permission_denied.labels("patch", "localmodels/status")._value.get() == 1

    kube.granted = True  # the permission is restored: the re-check wakes the object at once
    state = operator.state(body["metadata"]["uid"])
    recheck.set()
    for _ in range(100):
        await asyncio.sleep(0.001)
        if state.wake.is_set():
            break
    assert state.wake.is_set()
    assert operator.problems() == []
    assert await operator.reconcile_object(kube.get("smol")) is None
    assert kube.get("smol")["status"]["engines"][0]["ready"] is True
    assert operator.metrics.permission_denied.labels("patch", "localmodels/status")._value.get() == 0
    await operator.aclose()


def frozen_engine_operator(kube: FakeKube, engine: RunningEmulator, events: Events, **config: Any) -> Operator:
    """An operator whose engine client gives up after 0.3 s (the emulator's latency then freezes it)."""

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    return Operator(
        OperatorConfig(finalize_attempts=2, **config),
        kube,  # type: ignore[arg-type]
        [EngineRef("emu", engine.url)],
        post_event=events,
        sleep=sleep,
        client_factory=lambda ref: EngineClient(ref.url, name=ref.name, timeout=0.3, deadline=0.3),
    )


async def delete_while_frozen(kube: FakeKube, operator: Operator, engine: RunningEmulator, name: str) -> None:
    body = kube.create(name, {"model": "ai/smollm2", "contextSize": 2048})
    await operator.reconcile_object(body)
    assert [c["Config"] for c in engine.state.config_entries()] == [{"context-size": 2048}]
    engine.state.latency = 1.0  # frozen: every request times out
    await operator.finalize_object(body)
    del kube.objects[("ns", name)]  # the finalizer was released: the object is gone


async def test_a_clean_up_owed_after_a_released_finalizer_is_applied_when_the_engine_answers(
    emu: RunningEmulator,  # noqa: F811
) -> None:
    kube, events = FakeKube(), Events()
    operator = frozen_engine_operator(kube, emu, events)
    await delete_while_frozen(kube, operator, emu, "smol")
    assert "FinalizerReleased" in events.reasons("Warning")
    assert "applied when the engine answers again (recorded in ConfigMap localmodel-cleanups)" in events[-1][3]
    assert operator.metrics.pending_cleanups._value.get() == 1
    assert not await operator.retry_cleanups()  # still frozen: nothing done, nothing lost
    assert [c["Config"] for c in emu.state.config_entries()] == [{"context-size": 2048}]
    await operator.aclose()

    # The process goes away too; the next one reads the record and applies it once the engine answers.
    emu.state.latency = 0.0
    events.clear()
    again = frozen_engine_operator(kube, emu, events)
    await again.load_cleanups()
    for _ in range(200):
        await asyncio.sleep(0.01)
        if not again.metrics.pending_cleanups._value.get():
            break
    assert emu.state.config_entries() == []
    assert events.reasons() == ["CleanedUp"]
    assert "applied deletionPolicy Unload" in events[0][3]
    assert json.loads(kube.configmaps[("default", "localmodel-cleanups")]["central"]) == []
    await again.aclose()


async def test_a_clean_up_is_dropped_when_the_model_is_declared_again(emu: RunningEmulator) -> None:  # noqa: F811
    kube, events = FakeKube(), Events()
    operator = frozen_engine_operator(kube, emu, events)
    await delete_while_frozen(kube, operator, emu, "smol")
    emu.state.latency = 0.0
    kube.create("smol-again", {"model": "ai/smollm2:latest", "contextSize": 2048})  # declared again meanwhile
    await operator.retry_cleanups()
    assert operator.metrics.pending_cleanups._value.get() == 0
    assert [c["Config"] for c in emu.state.config_entries()] == [{"context-size": 2048}]  # kept
    await operator.aclose()


async def test_a_new_leader_reads_the_record_as_the_previous_leader_left_it(emu: RunningEmulator) -> None:  # noqa: F811
    kube, events = FakeKube(), Events()
    standby = frozen_engine_operator(kube, emu, events)
    await standby.load_cleanups()  # at start: nothing owed yet
    leader = frozen_engine_operator(kube, emu, events)
    await delete_while_frozen(kube, leader, emu, "smol")  # the leader owes a clean-up, recorded
    await leader.aclose()
    assert standby.metrics.pending_cleanups._value.get() == 0
    emu.state.latency = 0.0
    await standby.load_cleanups()  # on becoming the leader
    assert standby.metrics.pending_cleanups._value.get() == 1
    assert await standby.retry_cleanups()
    assert emu.state.config_entries() == []
    # A record emptied by someone else wins over a stale memory.
    kube.configmaps[("default", "localmodel-cleanups")]["central"] = "[]"
    stale = Cleanup("ns/x", "x", "emu", {"model": "ai/x"}, "2026-01-01T00:00:00Z", "down")
    standby.finalization.owed = {stale.id: stale}
    await standby.load_cleanups()
    assert standby.metrics.pending_cleanups._value.get() == 0
    await standby.aclose()
