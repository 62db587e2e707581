"""The operator's passes and finalizer against emulated engines and an in-memory API server that keeps
what matters here: resourceVersion preconditions (409) and server-side apply's per-manager ownership
of `status.engines[]` entries. The real API server is in tests/e2e/test_operator.py."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.emulator import RunningEmulator
from controller.operator.aggregator import Aggregator
from controller.operator.config import OperatorConfig
from controller.operator.engines import EngineRef
from controller.operator.kube import Conflict, Gone
from controller.operator.runtime import Operator
from tests.support.emulator import emulator

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class FakeKube:
    """One LocalModel store. `apply_status` follows server-side apply for the fields the operator
    writes: each manager's entries are replaced by what it applies; the rest is overwritten."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.owners: dict[tuple[str, str], dict[str, str]] = {}  # entry name -> field manager
        self.version = 0
        self.writes: list[str] = []  # field managers, one per accepted status write
        self.conflict_next = 0
        self.configmaps: dict[tuple[str, str], dict[str, str]] = {}

    def create(self, name: str, spec: dict[str, Any], namespace: str = "ns") -> dict[str, Any]:
        self.version += 1
        body = {
            "apiVersion": "localmodel.io/v1alpha1",
            "kind": "LocalModel",
            "spec": spec,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{name}",
                "generation": 1,
                "resourceVersion": str(self.version),
                "creationTimestamp": f"t{self.version}",
            },
        }
        self.objects[(namespace, name)] = body
        return copy.deepcopy(body)

    def update_spec(self, name: str, spec: dict[str, Any], namespace: str = "ns") -> dict[str, Any]:
        body = self.objects[(namespace, name)]
        self.version += 1
        body["spec"] = spec
        body["metadata"]["generation"] += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(body)

    def get(self, name: str, namespace: str = "ns") -> dict[str, Any]:
        return copy.deepcopy(self.objects[(namespace, name)])

    async def get_localmodel(self, namespace: str, name: str) -> dict[str, Any]:
        if (namespace, name) not in self.objects:
            raise Gone(404, "not found")
        return self.get(name, namespace)

    async def apply_status(
        self, namespace: str, name: str, status: dict[str, Any], *, resource_version: str | None, field_manager: str
    ) -> dict[str, Any]:
        body = self.objects[(namespace, name)]
        if self.conflict_next or resource_version != body["metadata"]["resourceVersion"]:
            self.conflict_next = max(0, self.conflict_next - 1)
            raise Conflict(409, "the object has been modified")
        owners = self.owners.setdefault((namespace, name), {})
        current = body.setdefault("status", {})
        entries = {e["name"]: e for e in current.get("engines", []) if owners.get(e["name"]) != field_manager}
        for entry in status.get("engines", []):
            entries[entry["name"]] = entry
            owners[entry["name"]] = field_manager
        current.update({k: v for k, v in status.items() if k != "engines"})
        current["engines"] = [entries[n] for n in sorted(entries)]
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append(field_manager)
        return copy.deepcopy(body)

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        if (namespace, name) not in self.configmaps:
            raise Gone(404, f'configmaps "{name}" not found')
        return {"metadata": {"name": name, "namespace": namespace}, "data": dict(self.configmaps[(namespace, name)])}

    async def apply_configmap_key(
        self, namespace: str, name: str, key: str, value: str, *, field_manager: str
    ) -> dict[str, Any]:
        self.configmaps.setdefault((namespace, name), {})[key] = value
        return await self.get_configmap(namespace, name)

    async def list_localmodels(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (ns, _), o in self.objects.items() if namespace in (None, ns)]


class Events(list[tuple[str, str, str, str]]):
    def __call__(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.append((obj["metadata"]["name"], kind, reason, message))

    def reasons(self, kind: str | None = None) -> list[str]:
        return [reason for _, k, reason, _ in self if kind is None or k == kind]


async def no_sleep(seconds: float) -> None:
    return None


def conditions(body: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in body["status"]["conditions"]}


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with emulator(preload_models=["ai/smollm2"]) as running:
        yield running


def central(kube: FakeKube, engines: list[EngineRef], events: Events, **config: Any) -> Operator:
    return Operator(OperatorConfig(**config), kube, engines, post_event=events, sleep=no_sleep)  # type: ignore[arg-type]


async def test_a_pass_applies_the_spec_and_writes_ready_once(emu: RunningEmulator) -> None:
    kube, events = FakeKube(), Events()
    operator = central(kube, [EngineRef("emu", emu.url)], events)
    body = kube.create("smol", {"model": "ai/smollm2", "contextSize": 8192})
    assert await operator.reconcile_object(body) is None
    stored = kube.get("smol")
    assert conditions(stored) == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert stored["status"]["engines"][0]["appliedConfig"] == {"context-size": 8192}
    assert [c["Config"] for c in emu.state.config_entries()] == [{"context-size": 8192}]
    assert "Applied" in events.reasons("Normal")
    await operator.reconcile_object(stored)  # the engine's background preload has loaded it since
    assert kube.get("smol")["status"]["engines"][0]["loaded"] is True
    writes = len(kube.writes)
    await operator.reconcile_object(kube.get("smol"))  # nothing differs: verified, not written again
    assert len(kube.writes) == writes <= 2  # the first pass, and the second if the load finished in between
    assert operator.metrics.models_ready._value.get() == 1
    await operator.aclose()


async def test_a_spec_change_is_applied_on_the_next_pass(emu: RunningEmulator) -> None:
    kube, events = FakeKube(), Events()
    operator = central(kube, [EngineRef("emu", emu.url)], events)
    await operator.reconcile_object(kube.create("smol", {"model": "ai/smollm2", "contextSize": 8192}))
    await operator.reconcile_object(kube.update_spec("smol", {"model": "ai/smollm2", "contextSize": 4096}))
    assert [c["Config"] for c in emu.state.config_entries()] == [{"context-size": 4096}]
    assert kube.get("smol")["status"]["observedGeneration"] == 2
    await operator.aclose()


def record_status_writes(kube: FakeKube) -> list[dict[str, Any]]:
    """Every status `kube` is given from now on, in order."""
    written: list[dict[str, Any]] = []
    apply_status = kube.apply_status

    async def recording(*args: Any, **kwargs: Any) -> dict[str, Any]:
        body = await apply_status(*args, **kwargs)
        written.append(body["status"])
        return body

    kube.apply_status = recording  # type: ignore[method-assign]  # a recording wrapper around the fake
    return written


async def test_a_long_pull_writes_its_progress_then_ready() -> None:
    kube, events = FakeKube(), Events()
    written = record_status_writes(kube)
    async with emulator(pull_seconds=0.5) as emu:
        operator = central(kube, [EngineRef("emu", emu.url)], events)
        body = kube.create("llama", {"model": "ai/llama3.2"})
        await operator.reconcile_object(body)
        await operator.aclose()
    pulling = [s for s in written if s["engines"][0]["phase"] == "Pulling"]
    assert pulling, written
    entry, reconciling = pulling[0]["engines"][0], {c["type"]: c for c in pulling[0]["conditions"]}
    assert entry["reason"] == "Pulling"
    assert "ai/llama3.2" in entry["message"]
    assert "pullProgress" in entry
    assert (reconciling["Reconciling"]["status"], reconciling["Ready"]["status"]) == ("True", "False")
    assert conditions(kube.get("llama")) == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert written[-1]["engines"][0]["phase"] == "Ready"
    assert "pullProgress" not in written[-1]["engines"][0]


async def test_a_new_objects_pull_progress_is_written_though_its_copy_predates_the_finalizer() -> None:
    """kopf starts a new object's pass before its finalizer patch lands: the pass's copy carries the
    resourceVersion from before that patch. Progress written with it answered 409 every time (the status
    stayed {observedGeneration: 0} until the pull ended); a conflict re-reads the object and writes again."""
    kube, events = FakeKube(), Events()
    written = record_status_writes(kube)
    async with emulator(pull_seconds=0.5) as emu:
        operator = central(kube, [EngineRef("emu", emu.url)], events)
        body = kube.create("llama", {"model": "ai/llama3.2"})
        stored = kube.objects[("ns", "llama")]  # kopf's finalizer patch, after the pass's copy was taken
        kube.version += 1
        stored["metadata"].update(finalizers=["localmodel.io/finalizer"], resourceVersion=str(kube.version))
        await operator.reconcile_object(body)
        await operator.aclose()
    pulling = [s for s in written if s["engines"][0]["phase"] == "Pulling"]
    assert pulling, written
    assert pulling[0]["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in pulling[0]["conditions"]}["Reconciling"] == "True"
    assert conditions(kube.get("llama")) == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert kube.get("llama")["metadata"]["finalizers"] == ["localmodel.io/finalizer"]


async def test_a_new_objects_pull_progress_follows_the_live_object_without_a_conflict() -> None:
    """With kopf's live view (live=True), a progress write takes the object as it is after the finalizer patch
    the watch has shown: no 409, no re-read."""
    kube, events = FakeKube(), Events()
    async with emulator(pull_seconds=0.5) as emu:
        operator = central(kube, [EngineRef("emu", emu.url)], events)
        body = kube.create("llama", {"model": "ai/llama3.2"})
        running = asyncio.ensure_future(operator.reconcile_object(body, live=True))
        await asyncio.sleep(0)  # the pass took its copy; then kopf's finalizer patch lands and the watch shows it
        stored = kube.objects[("ns", "llama")]
        kube.version += 1
        stored["metadata"].update(finalizers=["localmodel.io/finalizer"], resourceVersion=str(kube.version))
        body["metadata"] = copy.deepcopy(stored["metadata"])
        await running
        await operator.aclose()
    assert operator.metrics.status_writes.labels("progress")._value.get() >= 1
    assert operator.metrics.status_writes.labels("progress-conflict")._value.get() == 0
    assert operator.metrics.status_writes.labels("conflict")._value.get() == 0
    assert conditions(kube.get("llama")) == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}


async def test_an_invalid_spec_stalls_without_touching_the_engine(emu: RunningEmulator) -> None:
    kube, events = FakeKube(), Events()
    operator = central(kube, [EngineRef("emu", emu.url)], events)
    body = kube.create("bad", {"model": "ai/smollm2", "keepAlive": "5 minutes"})
    emu.state.counters.clear()
    for _ in range(3):
        assert await operator.reconcile_object(kube.get("bad")) is None  # no retry loop
    stored = kube.get("bad")
    stalled = next(c for c in stored["status"]["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert stalled["message"].startswith("spec.keepAlive: ")
    assert events.reasons() == ["InvalidSpec"]  # one Warning per generation, not per pass
    assert not emu.state.counters
    assert body["spec"] == stored["spec"]  # spec is never written
    await operator.aclose()


async def test_a_conflicting_write_is_recomputed_from_the_fresh_object(emu: RunningEmulator) -> None:
    kube, events = FakeKube(), Events()
    operator = central(kube, [EngineRef("emu", emu.url)], events)
    body = kube.create("smol", {"model": "ai/smollm2"})
    kube.conflict_next = 1
    await operator.reconcile_object(body)
    assert conditions(kube.get("smol"))["Ready"] == "True"
    assert operator.metrics.status_writes.labels("conflict")._value.get() == 1
    await operator.aclose()


async def test_an_unreachable_engine_is_retried_with_backoff() -> None:
    kube, events = FakeKube(), Events()
    operator = central(kube, [EngineRef("gone", "http://127.0.0.1:9")], events)
    delay = await operator.reconcile_object(kube.create("smol", {"model": "ai/smollm2"}))
    assert delay is not None
    assert 0 < delay <= 1.0
    assert conditions(kube.get("smol")) == {"Ready": "False", "Reconciling": "True", "Stalled": "False"}
    assert events.reasons("Warning") == ["EngineUnreachable"]
    await operator.aclose()


async def test_two_models_claiming_the_same_model_and_mode_do_not_fight(emu: RunningEmulator) -> None:
    kube, events = FakeKube(), Events()
    operator = central(kube, [EngineRef("emu", emu.url)], events)
    await operator.reconcile_object(kube.create("first", {"model": "ai/smollm2", "contextSize": 8192}))
    await operator.reconcile_object(kube.create("second", {"model": "ai/smollm2:latest", "contextSize": 2048}))
    second = kube.get("second")
    assert next(c["reason"] for c in second["status"]["conditions"] if c["type"] == "Stalled") == "Conflict"
    assert [c["Config"] for c in emu.state.config_entries()] == [{"context-size": 8192}]
    await operator.aclose()


@pytest.mark.parametrize(
    ("policy", "configs_left", "models_left"), [("Unload", 0, 1), ("Delete", 0, 0), ("Retain", 1, 1)]
)
async def test_deletion_policy(emu: RunningEmulator, policy: str, configs_left: int, models_left: int) -> None:
    kube, events = FakeKube(), Events()
    operator = central(kube, [EngineRef("emu", emu.url)], events)
    body = kube.create("smol", {"model": "ai/smollm2", "contextSize": 8192, "deletionPolicy": policy})
    await operator.reconcile_object(body)
    await operator.finalize_object(kube.get("smol"))
    assert len(emu.state.config_entries()) == configs_left
    assert len(emu.state.snapshot()["models"]) == models_left
    await operator.aclose()


async def test_the_operator_logs_an_applied_deletion_policy_by_the_daemon_s_name(
    emu: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """One vocabulary (controller/fleet.py Event): DeletionApplied from the operator as from the daemon."""
    caplog.set_level(logging.INFO)
    kube, events = FakeKube(), Events()
    operator = central(kube, [EngineRef("emu", emu.url)], events)
    await operator.reconcile_object(kube.create("smol", {"model": "ai/smollm2"}))
    await operator.finalize_object(kube.get("smol"))
    [done] = [r for r in caplog.records if getattr(r, "lm_event", None) == "DeletionApplied"]
    assert done.lm_fields == {"model": "ns/smol", "engine": "emu"}  # type: ignore[attr-defined]
    await operator.aclose()


async def test_an_engine_that_is_gone_releases_the_finalizer_with_a_warning() -> None:
    kube, events = FakeKube(), Events()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    operator = Operator(
        OperatorConfig(finalize_attempts=5),
        kube,
        [EngineRef("gone", "http://127.0.0.1:9")],  # type: ignore[arg-type]
        post_event=events,
        sleep=sleep,
    )
    await operator.finalize_object(kube.create("smol", {"model": "ai/smollm2"}))
    assert slept[:4] == [1.0, 2.0, 4.0, 8.0]  # then the pending clean-up's retries (test_operator_faults.py)
    assert events.reasons("Warning")[-1] == "FinalizerReleased"
    assert "engine gone" in events[-1][3]
    await operator.aclose()


async def test_an_owed_clean_up_is_tried_at_once_when_the_engine_answers_again() -> None:
    """The clean-ups owed after a released finalizer wait for their backoff, or for the engine watch to
    see the engine answer again: then at once (the wake-up was never set before)."""
    kube, events = FakeKube(), Events()
    async with emulator(preload_models=["ai/smollm2"]) as emu:
        url = emu.url
    # The engine is down now (same address, nothing listening): the finalizer is released, a clean-up owed.
    long_sleeps = asyncio.Event()

    async def sleep(seconds: float) -> None:
        if seconds >= 10:  # the clean-ups' backoff: only the engine coming back may end it
            long_sleeps.set()
            await asyncio.Event().wait()

    operator = Operator(
        OperatorConfig(finalize_attempts=1, watch_period=1.0),
        kube,  # type: ignore[arg-type]
        [EngineRef("emu", url)],
        post_event=events,
        sleep=sleep,
    )
    await operator.finalize_object(kube.create("smol", {"model": "ai/smollm2"}))
    del kube.objects[("ns", "smol")]  # the finalizer released, the API server removes the object
    assert len(operator.finalization.owed) == 1
    await asyncio.wait_for(long_sleeps.wait(), 5)
    rounds: list[bool] = []
    retry = operator.finalization.retry_cleanups

    async def counted() -> bool:
        rounds.append(await retry())
        return rounds[-1]

    operator.finalization.retry_cleanups = counted  # type: ignore[method-assign]
    operator._engine_back(operator.engines[0], 0.0)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if rounds:
            break
    assert rounds  # tried without waiting for the backoff
    await operator.aclose()


async def test_an_operator_with_many_finalize_attempts_never_sleeps_longer_than_the_backoff_cap() -> None:
    kube, events = FakeKube(), Events()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    operator = Operator(
        OperatorConfig(finalize_attempts=12),
        kube,
        [EngineRef("gone", "http://127.0.0.1:9")],  # type: ignore[arg-type]
        post_event=events,
        sleep=sleep,
    )
    await operator.finalize_object(kube.create("smol", {"model": "ai/smollm2"}))
    assert slept[:11] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]  # not 512, 1024
    assert "gave up applying deletionPolicy Unload on engine gone after 12 failed attempts" in events[-1][3]
    await operator.aclose()


async def test_node_agents_each_report_on_their_own_node_and_write_nothing_on_the_localmodel() -> None:
    kube, events = FakeKube(), Events()
    nodes = {"a": {"gpu": "yes"}, "b": {"gpu": "yes"}, "c": {}}
    async with emulator(preload_models=["ai/smollm2"]) as emu_a, emulator(preload_models=["ai/smollm2"]) as emu_b:
        agents = {
            name: Operator(
                OperatorConfig(mode="node-agent", node_name=name),
                kube,  # type: ignore[arg-type]
                [EngineRef(name, url)],
                nodes=nodes,
                post_event=events,
            )
            for name, url in (("a", emu_a.url), ("b", emu_b.url), ("c", "http://127.0.0.1:9"))
        }
        kube.create("smol", {"model": "ai/smollm2", "nodeSelector": {"gpu": "yes"}})
        for agent in agents.values():
            await agent.reconcile_object(kube.get("smol"))
        assert kube.writes == []  # the LocalModel is the aggregator's to write
        reports = {name: agent.node_report for name, agent in agents.items()}
        assert {name: sorted(r.entries) for name, r in reports.items() if r} == {
            "a": ["uid-smol"],
            "b": ["uid-smol"],
            "c": [],  # not targeted: nothing reported, nothing sent to its engine
        }
        assert len(emu_a.state.config_entries()) == len(emu_b.state.config_entries()) == 1

        aggregator = Aggregator(kube, nodes=lambda: nodes, clock=lambda: NOW)  # type: ignore[arg-type]
        for report in reports.values():
            assert report is not None
            aggregator.node_report("ADDED", report.body())
        assert aggregator.expected(kube.get("smol")) == (["a", "b"], [])

        # b's node loses the label: b drops its entry (and unloads nothing on the way).
        nodes["b"] = {}
        agents["b"].node_changed("MODIFIED", {"metadata": {"name": "b", "labels": {}}})
        await agents["b"].reconcile_object(kube.get("smol"))
        assert reports["b"] is not None
        assert reports["b"].entries == {}
        assert aggregator.expected(kube.get("smol")) == (["a"], [])
        assert len(emu_b.state.config_entries()) == 1
        for agent in agents.values():
            await agent.aclose()


async def test_an_engine_going_down_and_back_is_an_event_on_the_node_of_a_node_agent_only() -> None:
    """One Event per transition on the Node whose engine it is; a central operator's engines are no Kubernetes
    object, and the LocalModels' passes post their own Warnings (docs/engine-watch.md): it posts none."""
    kube = FakeKube()
    agent_events, central_events = Events(), Events()
    agent = Operator(
        OperatorConfig(mode="node-agent", node_name="gpu-a"),
        kube,  # type: ignore[arg-type]
        [EngineRef("gpu-a", "http://127.0.0.1:9")],
        post_event=agent_events,
    )
    operator = central(kube, [EngineRef("emu", "http://127.0.0.1:9")], central_events)
    for each in (agent, operator):
        each._engine_down(each.engines[0], ConnectionError("refused"))
        each._engine_back(each.engines[0], 0.0)
    assert [(name, kind, reason) for name, kind, reason, _ in agent_events] == [
        ("gpu-a", "Warning", "EngineDown"),
        ("gpu-a", "Normal", "EngineUp"),
    ]
    assert agent_events[0][3] == "engine gpu-a does not answer: refused; probing"
    assert central_events == []
    await agent.aclose()
    await operator.aclose()
