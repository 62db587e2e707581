"""A node agent (agent.py) on an emulated engine: its passes report in its LocalModelNode, never on the
LocalModel; a deletion applies deletionPolicy on the engine and then drops the node's entry (the
aggregator releases the finalizer once no live agent reports the object); a restarted agent drops the
entries of LocalModels deleted while it was away."""

from __future__ import annotations

import asyncio
from typing import Any

from controller.operator.agent import NodeAgent
from controller.operator.config import OperatorConfig
from controller.operator.engines import EngineRef
from controller.operator.kube import Gone
from controller.operator.runtime import Operator
from tests.support.emulator import emulator

NODE = "gpu-1"


class FakeApi:
    """The calls a node agent makes: its LocalModelNode and the LocalModel list."""

    def __init__(self, report: dict[str, Any] | None = None, localmodels: list[dict[str, Any]] | None = None):
        self.report = report
        self.localmodels = localmodels or []
        self.applied: list[dict[str, Any]] = []
        self.status_writes = 0

    async def get_localmodelnode(self, name: str) -> dict[str, Any]:
        if self.report is None or self.report["metadata"]["name"] != name:
            raise Gone(404, "not found")
        return self.report

    async def apply_localmodelnode(self, body: dict[str, Any], *, field_manager: str) -> dict[str, Any]:
        self.applied.append(body)
        return body

    async def list_localmodels(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.localmodels

    async def apply_status(self, *_: Any, **__: Any) -> dict[str, Any]:
        self.status_writes += 1
        return {}


def localmodel(name: str, spec: dict[str, Any], *, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1}
    meta["creationTimestamp"] = "2026-12-04T12:00:00Z"
    if deleting:
        meta["deletionTimestamp"] = "2026-12-04T12:01:00Z"
    return {"apiVersion": "localmodel.io/v1alpha1", "kind": "LocalModel", "metadata": meta, "spec": spec}


def node_agent(api: FakeApi, url: str, namespaces: tuple[str, ...] = ()) -> NodeAgent:
    config = OperatorConfig(mode="node-agent", node_name=NODE, watch_period=None, namespaces=namespaces)
    operator = Operator(config, api, [EngineRef(NODE, url)], nodes={NODE: {}})  # type: ignore[arg-type]
    return NodeAgent(operator, api, presence=None, elector=None)  # type: ignore[arg-type]


async def test_a_pass_reports_in_the_node_object_and_writes_nothing_on_the_localmodel() -> None:
    async with emulator(preload_models=["ai/smollm2"]) as emu:
        api = FakeApi()
        agent = node_agent(api, emu.url)
        await agent.operator.reconcile_object(localmodel("smol", {"model": "ai/smollm2", "contextSize": 2048}))
        assert await agent.writer.write()
        assert api.status_writes == 0
        [body] = api.applied
        [entry] = body["status"]["models"]
        assert (entry["name"], entry["uid"], entry["ready"]) == ("smol", "uid-smol", True)
        assert entry["appliedConfig"]["context-size"] == 2048
        await agent.operator.aclose()


async def test_a_deletion_applies_the_policy_on_the_engine_then_drops_the_entry() -> None:
    async with emulator(preload_models=["ai/smollm2"]) as emu:
        api = FakeApi()
        agent = node_agent(api, emu.url)
        spec = {"model": "ai/smollm2", "contextSize": 2048, "deletionPolicy": "Unload"}
        await agent.operator.reconcile_object(localmodel("smol", spec))
        assert emu.state.config_entries()
        await agent.finalize(localmodel("smol", spec, deleting=True))
        assert agent.report.entries == {}
        assert emu.state.config_entries() == []  # Unload: the config is gone from the engine
        await agent.operator.aclose()


async def test_an_object_that_does_not_target_the_node_is_not_finalized_on_its_engine() -> None:
    async with emulator(preload_models=["ai/smollm2"]) as emu:
        api = FakeApi()
        agent = node_agent(api, emu.url)
        await agent.operator.reconcile_object(localmodel("here", {"model": "ai/smollm2", "contextSize": 2048}))
        elsewhere = {"model": "ai/smollm2", "nodeSelector": {"gpu": "h100"}, "deletionPolicy": "Delete"}
        await agent.finalize(localmodel("elsewhere", elsewhere, deleting=True))
        assert emu.state.config_entries()  # the other object's config (same model) is untouched
        assert set(agent.report.entries) == {"uid-here"}
        await agent.operator.aclose()


async def test_a_restarted_agent_drops_the_entries_of_deleted_localmodels() -> None:
    kept, deleted = localmodel("kept", {"model": "ai/smollm2"}), localmodel("deleted", {"model": "ai/smollm2"})
    entries = [
        {"namespace": "ns", "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"], "ready": True}
        for obj in (kept, deleted)
    ]
    api = FakeApi(report={"metadata": {"name": f"{NODE}.ns-ns"}, "status": {"models": entries}}, localmodels=[kept])
    agent = node_agent(api, "http://127.0.0.1:9", namespaces=("ns",))  # its report is named `<node>.<scope>`
    await agent.load()
    assert set(agent.report.entries) == {"uid-kept"}
    assert agent.report.changed  # the writer sends the report without the deleted object's entry
    await agent.operator.aclose()


async def test_a_newly_elected_aggregator_lists_the_agent_leases_before_its_first_summary() -> None:
    """A standby's view of the agent Leases is as old as its start: summaries written from it named live agents
    as absent (seen at 50 nodes). Elected, it lists them first, then aggregates."""
    order: list[str] = []

    class Presence:
        listing = False
        on_change: Any = None

        async def refresh(self) -> None:
            await asyncio.sleep(0)  # the list is a request to the API server
            order.append(f"list (listing={self.listing})")

        async def run(self, stop: Any) -> None:
            return None

    agent = node_agent(FakeApi(), "http://127.0.0.1:9")
    agent.presence = Presence()  # type: ignore[assignment]

    async def aggregate(stop: Any) -> None:
        order.append("summaries")

    agent.aggregator.run = aggregate  # type: ignore[method-assign]
    agent._start_aggregating()
    assert agent._aggregating is not None
    await agent._aggregating
    assert order == ["list (listing=True)", "summaries"]
    await agent.operator.aclose()
