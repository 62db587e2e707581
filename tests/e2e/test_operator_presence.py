"""Agent presence and central high availability with the real `localmodel operator` processes on the
real kube-apiserver (Leases in deploy/'s namespace, with deploy/'s RBAC): a node without an agent
does not hold Ready back and is named; an agent that dies is no longer expected once its Lease expires
and does not block a deletion; of two central replicas one leads, and when it is killed the other
takes over, with no status write from the standby before."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.operator.election import leader_lease_name
from tests.support.emulator import emulator_process
from tests.support.kstatus import ready_verdict
from tests.support.kube import (
    OPERATOR_NAMESPACE,
    KubeApi,
    OperatorProcess,
    agent_args,
    engine_configs,
    operator_process,
)
from tests.support.peers import KubeAPIServer, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.peers]

LEASE = 3  # seconds: --agent-lease-seconds / --leader-lease-seconds for these tests


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


def reported(api: KubeApi, node: str, ns: str) -> list[str]:
    """The LocalModels the agent on `node` reports in its LocalModelNode."""
    return sorted(api.node_entries(node, ns))


def metric(op: OperatorProcess, name: str, labels: str = "") -> float:
    """One sample of the process's /metrics (0 when absent)."""
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", re.MULTILINE)
    found = pattern.search(op.metrics())
    return float(found.group(1)) if found else 0.0


def written(op: OperatorProcess) -> float:
    return metric(op, "localmodel_operator_status_writes_total", '{result="written"}')


def agent(cluster: KubeAPIServer, node: str, url: str, ns: str, workdir: Path) -> Any:
    return operator_process(cluster, *agent_args(node, url, ns, "--agent-lease-seconds", str(LEASE)), workdir=workdir)


def test_a_node_without_an_agent_is_named_and_does_not_hold_ready_back(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    suffix = ns.split("-")[-1]
    served, bare = f"worker-{suffix}", f"control-plane-{suffix}"  # the DaemonSet does not run on the second
    for node in (served, bare):
        api.create_node(node, {"localmodel-test": suffix})
    try:
        with (
            emulator_process("--preload-models", "ai/smollm2") as engine,
            agent(localmodel_cluster, served, engine.url, ns, tmp_path) as op,
        ):
            spec = {"model": "ai/smollm2", "nodeSelector": {"localmodel-test": suffix}}
            assert api.create_localmodel(ns, "smol", spec).status_code == 201
            obj = api.wait_ready(ns, "smol", [op.proc])
            assert obj["status"]["ready"] == "1/1"
            assert "engines" not in obj["status"]  # the detail is in the node's LocalModelNode
            assert reported(api, served, ns) == ["smol"]
            assert f"no agent on node {bare}" in condition(obj, "Ready")["message"]
            lease = api.http.get(
                f"/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NAMESPACE}/leases/localmodel-agent-{served}"
            ).json()
            assert lease["spec"]["holderIdentity"] == served
            assert lease["metadata"]["labels"]["localmodel.io/lease"] == "agent"
            api.delete(ns, "smol")
            api.wait_gone(ns, "smol", [op.proc])
    finally:
        for node in (served, bare):
            api.delete_node(node)


def test_an_agent_that_dies_is_no_longer_expected_once_its_lease_expires_and_does_not_block_deletion(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    suffix = ns.split("-")[-1]
    n1, n2 = f"live-{suffix}", f"dies-{suffix}"
    for node in (n1, n2):
        api.create_node(node, {"localmodel-test": suffix})
    try:
        with (
            emulator_process("--preload-models", "ai/smollm2") as e1,
            emulator_process("--preload-models", "ai/smollm2") as e2,
            agent(localmodel_cluster, n1, e1.url, ns, tmp_path) as a1,
            agent(localmodel_cluster, n2, e2.url, ns, tmp_path) as a2,
        ):
            spec = {"model": "ai/smollm2", "nodeSelector": {"localmodel-test": suffix}}
            assert api.create_localmodel(ns, "smol", spec).status_code == 201
            obj = api.wait_for(
                "both nodes Ready",
                ns,
                "smol",
                lambda o: o is not None and (o.get("status") or {}).get("ready") == "2/2" and ready_verdict(o),
                [a1.proc, a2.proc],
            )
            assert obj is not None
            # One finalizer, the aggregator's, whatever the node count (no per-agent finalizers any more).
            assert obj["metadata"]["finalizers"] == ["localmodel.io/finalizer"]
            assert reported(api, n1, ns) == reported(api, n2, ns) == ["smol"]

            a2.proc.popen.kill()  # SIGKILL: no clean shutdown, the Lease is simply no longer renewed
            a2.proc.popen.wait(10)
            obj = api.wait_for(
                "the dead agent's node no longer expected",
                ns,
                "smol",
                lambda o: o is not None and (o.get("status") or {}).get("ready") == "1/1",
                [a1.proc],
                timeout=6 * LEASE + 10,
            )
            assert obj is not None
            ready = condition(obj, "Ready")
            assert ready["status"] == "True"
            assert f"no agent on node {n2}" in ready["message"]

            api.delete(ns, "smol")
            api.wait_gone(ns, "smol", [a1.proc])  # the dead agent's report did not block it
            assert reported(api, n1, ns) == []  # the live agent applied deletionPolicy and dropped its entry
            assert engine_configs(e1.url) == []
            assert reported(api, n2, ns) == ["smol"]  # what the dead agent last said, untouched
    finally:
        for node in (n1, n2):
            api.delete_node(node)


def test_two_central_replicas_one_leads_and_the_other_takes_over_when_it_is_killed(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    args = ("--namespace", ns, "--drift-interval", "2", "--leader-lease-seconds", str(LEASE))
    with (
        emulator_process("--preload-models", "ai/smollm2") as engine,
        operator_process(localmodel_cluster, "--engine", f"emu={engine.url}", *args, workdir=tmp_path) as r1,
        operator_process(localmodel_cluster, "--engine", f"emu={engine.url}", *args, workdir=tmp_path) as r2,
    ):
        replicas = [r1, r2]
        procs = [r.proc for r in replicas]
        # Both are ready (/readyz 200: a standby is healthy and ready to lead); exactly one leads.
        wait_until(
            "one leader",
            lambda: sum(metric(r, "localmodel_operator_leader") for r in replicas) == 1,
            2 * LEASE + 10,
            procs,
        )
        assert api.create_localmodel(ns, "first", {"model": "ai/smollm2", "contextSize": 2048}).status_code == 201
        api.wait_ready(ns, "first", procs)
        [leader] = [r for r in replicas if metric(r, "localmodel_operator_leader") == 1]
        [standby] = [r for r in replicas if r is not leader]
        assert httpx.get(standby.health_url + "/readyz", timeout=5).status_code == 200
        # The API server has the write before the writer has counted its answer: wait for the count.
        wait_until("the leader's write counted", lambda: written(leader) >= 1, 10, procs)
        assert written(standby) == 0
        assert metric(standby, "localmodel_operator_reconciles_total", '{result="ready"}') == 0

        leader.proc.popen.kill()  # no release: the standby must wait for the Lease to expire
        leader.proc.popen.wait(10)
        wait_until(
            "the standby takes over",
            lambda: metric(standby, "localmodel_operator_leader") == 1,
            4 * LEASE + 10,
            [standby.proc],
        )
        assert api.create_localmodel(ns, "second", {"model": "ai/llama3.2", "contextSize": 4096}).status_code == 201
        api.wait_ready(ns, "second", [standby.proc])
        wait_until("the new leader's write counted", lambda: written(standby) >= 1, 10, [standby.proc])
        lease = api.http.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NAMESPACE}/leases/{leader_lease_name((ns,))}"
        ).json()
        assert lease["spec"]["leaseTransitions"] >= 1  # taken over from the killed leader
        for name in ("first", "second"):
            api.delete(ns, name)
        for name in ("first", "second"):
            api.wait_gone(ns, name, [standby.proc])
