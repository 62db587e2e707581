"""The real `localmodel operator` process against the real kube-apiserver (CRD, schema and CEL rules,
status subresource, finalizers, resourceVersion conflicts, the RBAC of deploy/) with emulated engines."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.emulator import EmulatorProcess, emulator_process
from tests.support.gitops import kstatus, kstatus_of
from tests.support.kstatus import ready_verdict
from tests.support.kube import KubeApi, agent_args, engine_configs, operator_args, operator_process
from tests.support.peers import KubeAPIServer, PeerBinaries, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.peers]

DRIFT = 2.0  # seconds: --drift-interval for these tests


@pytest.fixture
def engine() -> Iterator[EmulatorProcess]:
    with emulator_process("--preload-models", "ai/smollm2") as running:
        yield running


def condition(obj: dict, kind: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


def configs_of(url: str, model: str) -> list[dict]:
    return [c["Config"] for c in engine_configs(url) if c["Model"].endswith(model)]


def test_create_update_and_delete_with_each_policy(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    engine: EmulatorProcess,
    peer_binaries: PeerBinaries,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    with operator_process(localmodel_cluster, *operator_args(engine.url, ns, drift=DRIFT), workdir=tmp_path) as op:
        for name, model, policy in (
            ("unload", "ai/smollm2", "Unload"),
            ("delete", "ai/qwen3:0.6B-F16", "Delete"),
            ("retain", "ai/llama3.2", "Retain"),
        ):
            created = api.create_localmodel(ns, name, {"model": model, "contextSize": 2048, "deletionPolicy": policy})
            assert created.status_code == 201, created.text
        for name in ("unload", "delete", "retain"):
            obj = api.wait_ready(ns, name, [op.proc])
            assert kstatus_of(peer_binaries, obj) == "Current"
            assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 1
            assert obj["status"]["engines"][0]["name"] == "emu"
            assert obj["metadata"]["finalizers"] == ["localmodel.io/finalizer"]
        assert configs_of(engine.url, "ai/smollm2:latest") == [{"context-size": 2048}]

        # update: the new contextSize reaches the engine and the status says so for generation 2
        api.patch_spec(ns, "unload", {"contextSize": 4096})
        obj = api.wait_ready(ns, "unload", [op.proc])
        assert obj["metadata"]["generation"] == 2
        assert condition(obj, "Ready")["observedGeneration"] == 2
        assert configs_of(engine.url, "ai/smollm2:latest") == [{"context-size": 4096}]

        for name in ("unload", "delete", "retain"):
            api.delete(ns, name)
        for name in ("unload", "delete", "retain"):
            api.wait_gone(ns, name, [op.proc])
        models = {tag for m in httpx.get(engine.url + "/models").json() for tag in m["tags"]}
        assert configs_of(engine.url, "ai/smollm2:latest") == []  # Unload: config dropped, model kept
        assert any(tag.endswith("ai/smollm2:latest") for tag in models)
        assert not any("qwen3" in tag for tag in models)  # Delete: gone from the store
        assert configs_of(engine.url, "ai/llama3.2:latest") == [{"context-size": 2048}]  # Retain: untouched
        reasons = {e["reason"] for e in api.events(ns, "unload")}
        assert {"Pulled", "Applied", "Unloaded"} <= reasons or {"Applied", "Unloaded"} <= reasons


def test_engine_restart_is_repaired_within_the_drift_interval(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    engine: EmulatorProcess,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    with operator_process(localmodel_cluster, *operator_args(engine.url, ns, drift=DRIFT), workdir=tmp_path) as op:
        assert api.create_localmodel(ns, "smol", {"model": "ai/smollm2", "keepAlive": "10m"}).status_code == 201
        api.wait_ready(ns, "smol", [op.proc])
        httpx.post(engine.url + "/_emulator/restart").raise_for_status()
        assert engine_configs(engine.url) == []
        # At most one drift interval until the next pass, which observes the engine afresh.
        wait_until(
            "config re-applied",
            lambda: bool(configs_of(engine.url, "ai/smollm2:latest")),
            DRIFT + 1.5,
            [op.proc],
            interval=0.05,
        )
        assert configs_of(engine.url, "ai/smollm2:latest") == [{"keep_alive": "10m0s"}]
        # The engine forgot a config this operator had verified: the re-apply is a DriftRepaired event.
        wait_until(
            "DriftRepaired event",
            lambda: "DriftRepaired" in [e["reason"] for e in api.events(ns, "smol")],
            10,
            [op.proc],
        )
        assert [e["reason"] for e in api.events(ns, "smol")].count("Applied") == 1
        api.delete(ns, "smol")
        api.wait_gone(ns, "smol", [op.proc])


def test_an_engine_that_is_gone_does_not_block_deletion(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    with (
        emulator_process("--preload-models", "ai/smollm2") as doomed,
        operator_process(
            localmodel_cluster,
            *operator_args(doomed.url, ns, "--finalize-attempts", "2", drift=DRIFT, name="doomed"),
            workdir=tmp_path,
        ) as op,
    ):
        assert api.create_localmodel(ns, "smol", {"model": "ai/smollm2"}).status_code == 201
        api.wait_ready(ns, "smol", [op.proc])
        doomed.process.terminate()
        doomed.process.wait(10)
        api.delete(ns, "smol")
        api.wait_gone(ns, "smol", [op.proc], timeout=30)
        warnings = [e for e in api.events(ns, "smol") if e["type"] == "Warning"]
        released = [e for e in warnings if e["reason"] == "FinalizerReleased"]
        assert released, warnings
        assert "doomed" in released[0]["message"], warnings


def test_two_node_agents_report_per_node_and_one_aggregator_writes_the_summary(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    suffix = ns.split("-")[-1]
    n1, n2 = f"gpu-a-{suffix}", f"gpu-b-{suffix}"
    api.create_node(n1, {"localmodel-test": suffix, "gpu": "yes"})
    api.create_node(n2, {"localmodel-test": suffix})
    selector = {"localmodel-test": suffix, "gpu": "yes"}
    lease = ("--agent-lease-seconds", "3")
    try:
        with (
            emulator_process("--preload-models", "ai/smollm2") as e1,
            emulator_process("--preload-models", "ai/smollm2") as e2,
            # Short agent Leases: when the agent that aggregates stops, the other takes over within seconds.
            operator_process(
                localmodel_cluster, *agent_args(n1, e1.url, ns, *lease, drift=DRIFT), workdir=tmp_path
            ) as a1,
            operator_process(
                localmodel_cluster, *agent_args(n2, e2.url, ns, *lease, drift=DRIFT), workdir=tmp_path
            ) as a2,
        ):
            procs = [a1.proc, a2.proc]
            spec = {"model": "ai/smollm2", "contextSize": 2048, "nodeSelector": selector}
            assert api.create_localmodel(ns, "smol", spec).status_code == 201
            obj = api.wait_ready(ns, "smol", procs)
            assert obj["status"]["ready"] == "1/1"
            assert api.node_entries(n1, ns)["smol"]["ready"] is True
            assert api.node_entries(n2, ns) == {}  # not targeted: nothing reported
            # One finalizer, the aggregator's, whatever the number of agents.
            assert obj["metadata"]["finalizers"] == ["localmodel.io/finalizer"]
            assert configs_of(e1.url, "ai/smollm2:latest") == [{"context-size": 2048}]
            assert engine_configs(e2.url) == []

            api.label_node(n2, {"gpu": "yes"})  # the selector now picks both nodes
            obj = api.wait_for(
                "both nodes Ready",
                ns,
                "smol",
                lambda o: o is not None and (o.get("status") or {}).get("ready") == "2/2" and ready_verdict(o),
                procs,
            )
            assert obj is not None
            wait_until(
                "both nodes' entries ready and loaded",
                lambda: all(
                    (e := api.node_entries(n, ns).get("smol")) is not None and e["ready"] and e["loaded"]
                    for n in (n1, n2)
                ),
                30,
                procs,
            )
            obj = api.get(ns, "smol")
            assert obj is not None
            # The LocalModel's status has one writer, the aggregator; the agents write only their LocalModelNode.
            managers = {m["manager"] for m in obj["metadata"]["managedFields"] if m.get("subresource") == "status"}
            assert managers == {"localmodel-aggregator"}
            assert configs_of(e2.url, "ai/smollm2:latest") == [{"context-size": 2048}]

            # Both agents keep passing (drift interval) without rewriting anything unchanged.
            version = obj["metadata"]["resourceVersion"]
            reports = {n: api.node_report(n, ns)["metadata"]["resourceVersion"] for n in (n1, n2)}  # type: ignore[index]
            time.sleep(2.5 * DRIFT)
            again = api.get(ns, "smol")
            assert again is not None
            assert again["metadata"]["resourceVersion"] == version
            assert {n: api.node_report(n, ns)["metadata"]["resourceVersion"] for n in (n1, n2)} == reports  # type: ignore[index]

            # Node n2 and its agent go away for good: its report must not block the deletion.
            a2.proc.stop()
            api.delete_node(n2)
            api.delete(ns, "smol")
            api.wait_gone(ns, "smol", [a1.proc])
            assert engine_configs(e1.url) == []
    finally:
        api.delete_node(n1)
        api.delete_node(n2)


def test_the_layout_before_localmodelnodes_is_upgraded_without_a_manual_step(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    tmp_path: Path,
) -> None:
    """An object written by the agents of the previous version (an entry per node in status.engines[], one
    finalizer per agent): the new agents drop both, and the object reads back the new summary."""
    ns = kube_namespace
    node = f"upgraded-{ns.split('-')[-1]}"
    api.create_node(node, {"localmodel-test": ns})
    try:
        assert api.create_localmodel(ns, "smol", {"model": "ai/smollm2"}).status_code == 201
        old_finalizer = f"localmodel.io/agent-{node}"
        api.http.patch(
            api.path(ns, "smol"),
            json={"metadata": {"finalizers": [old_finalizer]}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
        old_entry = {"name": node, "phase": "Ready", "ready": True, "reason": "Applied", "message": "ok"}
        api.http.patch(
            api.path(ns, "smol") + "/status",
            json={"status": {"observedGeneration": 1, "engines": [old_entry]}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
        with (
            emulator_process("--preload-models", "ai/smollm2") as engine,
            operator_process(localmodel_cluster, *agent_args(node, engine.url, ns, drift=DRIFT), workdir=tmp_path) as a,
        ):
            obj = api.wait_for(
                "the new layout",
                ns,
                "smol",
                lambda o: (
                    o is not None
                    and "engines" not in (o.get("status") or {})
                    and (o.get("status") or {}).get("ready") == "1/1"
                    and o["metadata"].get("finalizers") == ["localmodel.io/finalizer"]
                    and ready_verdict(o)
                ),
                [a.proc],
            )
            assert obj is not None
            api.delete(ns, "smol")
            api.wait_gone(ns, "smol", [a.proc])
    finally:
        api.delete_node(node)


@pytest.mark.parametrize(
    ("spec", "code", "message"),
    [
        (
            {"model": "ai/smollm2", "runtimeFlags": ["--threads", "4"], "rawRuntimeFlags": "--threads 4"},
            422,
            "rawRuntimeFlags",
        ),
        ({"model": "ai/smollm2", "keepAlive": "5 minutes"}, 422, "keepAlive"),
        ({"model": "ai/smollm2", "vllm": {"gpuMemoryUtilization": 1.5}}, 422, "gpuMemoryUtilization"),
        # fieldValidation=Strict (kubectl's default): a decoding error, 400, before any schema rule runs
        ({"model": "ai/smollm2", "contextSize": 8192, "contextsize": 1}, 400, 'unknown field "spec.contextsize"'),
    ],
)
def test_invalid_objects_are_rejected_by_the_api_server(
    api: KubeApi, kube_namespace: str, spec: dict, code: int, message: str
) -> None:
    response = api.create_localmodel(kube_namespace, "bad", spec)
    assert response.status_code == code, response.text
    assert message in response.json()["message"]
    assert api.get(kube_namespace, "bad") is None


def test_a_new_object_shows_its_pull_progress_while_the_pull_runs(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    peer_binaries: PeerBinaries,
    tmp_path: Path,
) -> None:
    """A NEW LocalModel whose model takes a long pull: its status says Pulling (observedGeneration, Reconciling
    with the pull's message, pullProgress) before the pull ends, so GitOps tools show why they wait. The pass's
    copy of a new object predates kopf's finalizer patch: progress written with its resourceVersion answered 409
    every time, and the status stayed the CRD's default {observedGeneration: 0} until the pull ended."""
    ns = kube_namespace
    with (
        emulator_process("--pull-seconds", "16") as engine,
        operator_process(localmodel_cluster, *operator_args(engine.url, ns, drift=30), workdir=tmp_path) as op,
    ):
        assert api.create_localmodel(ns, "llama", {"model": "ai/llama3.2"}).status_code == 201

        def entry(obj: dict | None) -> dict:
            return ((obj or {}).get("status") or {}).get("engines", [{}])[0]

        # Whichever comes first: the status shows the pull, or the pull ends (the defect: nothing before Ready).
        seen = api.wait_for(
            "Pulling or Ready",
            ns,
            "llama",
            lambda o: entry(o).get("phase") in ("Pulling", "Ready"),
            [op.proc],
            timeout=60,
        )
        assert seen is not None
        pulled = {tag for m in httpx.get(engine.url + "/models").json() for tag in m["tags"]}
        assert entry(seen)["phase"] == "Pulling", seen["status"]
        assert not any(tag.endswith("ai/llama3.2:latest") for tag in pulled)  # the pull was still running
        assert seen["status"]["observedGeneration"] == seen["metadata"]["generation"] == 1
        assert "pullProgress" in entry(seen)
        reconciling = condition(seen, "Reconciling")
        assert reconciling["status"] == "True"
        assert "pulling ai/llama3.2" in reconciling["message"]
        ks = kstatus(peer_binaries, seen)[0]
        assert ks["status"] == "InProgress"
        assert "pulling ai/llama3.2" in ks["message"], ks
        api.wait_ready(ns, "llama", [op.proc], timeout=60)
        api.delete(ns, "llama")
        api.wait_gone(ns, "llama", [op.proc])
