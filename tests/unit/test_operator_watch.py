"""The operator's engine watch, one look at a time, against an emulated engine and the in-memory API
server of test_operator_runtime: a disturbance wakes just the affected object, whose next pass
repairs it with an event that says what happened; an undisturbed object is not woken."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controller.emulator import RunningEmulator
from controller.operator.config import OperatorConfig
from controller.operator.engines import EngineRef
from controller.operator.runtime import Operator
from tests.support.emulator import emulator
from tests.unit.test_operator_runtime import Events, FakeKube, central, no_sleep


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with emulator(preload_models=["ai/smollm2", "ai/smollm2:135M-Q4_0"]) as running:
        yield running


async def test_an_overwrite_wakes_only_its_object_and_the_repair_says_why(emu: RunningEmulator) -> None:
    kube, events, now = FakeKube(), Events(), [0.0]
    operator = Operator(
        OperatorConfig(), kube, [EngineRef("emu", emu.url)], post_event=events, sleep=no_sleep, monotonic=lambda: now[0]
    )  # type: ignore[arg-type]
    engine = operator.engines[0]
    assert engine.watch is not None  # on by default
    smol = kube.create("smol", {"model": "ai/smollm2", "contextSize": 8192})
    other = kube.create("other", {"model": "ai/smollm2:135M-Q4_0", "contextSize": 2048})
    await operator.reconcile_object(smol)
    await operator.reconcile_object(other)
    assert set(engine.watch.expected()) == {"ns/smol", "ns/other"}
    await engine.watch.look()
    states = {name: operator.state(f"uid-{name}") for name in ("smol", "other")}
    assert not any(state.wake.is_set() for state in states.values())  # idle: nothing to do

    emu.state.configure(None, b'{"model": "ai/smollm2", "context-size": 4096}')  # another client
    now[0] += 1.0  # a period later
    await engine.watch.look()
    assert states["smol"].wake.is_set()
    assert not states["other"].wake.is_set()

    await operator.reconcile_object(kube.get("smol"))
    assert [c["Config"] for c in emu.state.config_entries("ai/smollm2")] == [{"context-size": 8192}]
    repaired = [m for name, _, reason, m in events if reason == "DriftRepaired" and name == "smol"]
    assert len(repaired) == 1
    assert repaired[0].startswith("config overwritten by another client: context-size: want 8192, engine has 4096")
    assert "config back after" in repaired[0]
    await operator.aclose()


async def test_without_the_watch_nothing_is_looked_at(emu: RunningEmulator) -> None:
    operator = central(FakeKube(), [EngineRef("emu", emu.url)], Events(), watch_period=None)
    assert operator.engines[0].watch is None
    await operator.aclose()
