"""Faults on the operator: the real `localmodel operator` process against the real kube-apiserver and
etcd (tests/support/peers.py), with emulated engines (`localmodel emulator` processes)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import full_only
from tests.faults.helpers import kill_peer, log_lines, log_size, metric, start_peer_again
from tests.support.emulator import EmulatorProcess, emulator_process
from tests.support.kube import (
    OPERATOR_NAMESPACE,
    KubeApi,
    OperatorProcess,
    deploy_rbac_for_user,
    engine_configs,
    operator_args,
    operator_process,
)
from tests.support.peers import KubeAPIServer, apply_manifest, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.peers, pytest.mark.faults]

WRITES = "localmodel_operator_status_writes_total"
PASSES = "localmodel_operator_reconciles_total"
# One object each (the engine keeps one config per model and mode).
MODELS = ["ai/smollm2", "ai/llama3.2", "ai/qwen3:14B", "ai/qwen3:8B", "ai/qwen3:0.6B-F16", "ai/embeddinggemma"]


@pytest.fixture
def engine() -> Iterator[EmulatorProcess]:
    with emulator_process("--preload-models", "ai/smollm2,ai/llama3.2") as running:
        yield running


def versions(api: KubeApi, namespace: str, names: list[str]) -> dict[str, str]:
    return {name: api.get(namespace, name)["metadata"]["resourceVersion"] for name in names}  # type: ignore[index]


def create_all_ready(api: KubeApi, ns: str, names: list[str], op: OperatorProcess) -> None:
    """One LocalModel per name, on the model of MODELS at its index, then each Ready."""
    for i, name in enumerate(names):
        assert api.create_localmodel(ns, name, {"model": MODELS[i], "contextSize": 1024 + i}).status_code == 201
    for name in names:
        api.wait_ready(ns, name, [op.proc], timeout=60)


def test_a_restarted_operator_writes_no_status_for_unchanged_objects(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    engine: EmulatorProcess,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    names = [f"m{i}" for i in range(len(MODELS))]
    args = operator_args(engine.url, ns)
    with operator_process(localmodel_cluster, *args, workdir=tmp_path) as op:
        create_all_ready(api, ns, names, op)
        # An engine restart makes the next pass re-apply (DriftRepaired): that status must survive too.
        httpx.post(engine.url + "/_emulator/restart").raise_for_status()
        # Then every runner loads (a configure starts a load): the statuses settle with `loaded: true`.
        wait_until(
            "drift repaired and loaded",
            lambda: all(
                entry["reason"] == "DriftRepaired" and entry["loaded"]
                for entry in (api.get(ns, n)["status"]["engines"][0] for n in names)  # type: ignore[index]
            ),
            30,
            [op.proc],
        )
    before = versions(api, ns, names)
    assert all(api.get(ns, n)["status"]["engines"][0].get("lastAppliedTime") for n in names)  # type: ignore[index]
    with operator_process(localmodel_cluster, *args, workdir=tmp_path) as op:
        # Every object has had its first pass (and a drift pass) in the new process.
        wait_until(
            "two passes per object",
            lambda: metric(op.health_url, PASSES, result="ready") >= 2 * len(names),
            60,
            [op.proc],
        )
        written = metric(op.health_url, WRITES, result="written")
        unchanged = metric(op.health_url, WRITES, result="unchanged")
    assert written == 0, f"{written} status writes after a restart ({unchanged} unchanged)"
    assert versions(api, ns, names) == before


def test_the_first_status_write_of_a_new_object_does_not_conflict(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    engine: EmulatorProcess,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    names = [f"c{i}" for i in range(len(MODELS))]
    with operator_process(localmodel_cluster, *operator_args(engine.url, ns), workdir=tmp_path) as op:
        create_all_ready(api, ns, names, op)
        conflicts = metric(op.health_url, WRITES, result="conflict")
        written = metric(op.health_url, WRITES, result="written")
    assert written >= len(names)
    assert conflicts == 0, f"{conflicts} of {written} status writes answered 409"


@contextlib.contextmanager
def without_status_permission(cluster: KubeAPIServer) -> Iterator[None]:
    """The deploy/ ClusterRole without `patch` on localmodels/status, restored afterwards."""
    docs = deploy_rbac_for_user(cluster.operator_user)
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    reduced = copy.deepcopy(role)
    reduced["rules"] = [r for r in reduced["rules"] if "localmodels/status" not in r.get("resources", [])]
    with cluster.http() as http:
        http.put(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role['metadata']['name']}", json=reduced)
    try:
        yield
    finally:
        apply_manifest(cluster.admin_kubeconfig, role)


def test_a_missing_status_permission_is_visible_and_heals_when_granted(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    engine: EmulatorProcess,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    with operator_process(localmodel_cluster, *operator_args(engine.url, ns), workdir=tmp_path) as op:
        with without_status_permission(localmodel_cluster):
            assert api.create_localmodel(ns, "smol", {"model": "ai/smollm2", "contextSize": 2048}).status_code == 201
            wait_until(
                "StatusWriteForbidden event",
                lambda: any(e["reason"] == "StatusWriteForbidden" for e in api.events(ns, "smol")),
                30,
                [op.proc],
            )
            readyz = httpx.get(op.health_url + "/readyz", timeout=5)
            assert readyz.status_code == 503
            assert f"missing permission: patch localmodels/status (localmodel.io) in namespace {ns}" in readyz.text
            events = api.events(ns, "smol")
            assert [e["type"] for e in events] == ["Warning"], events  # no Normal "applied and verified"
            assert "grant it" in events[0]["message"]
            assert not ((api.get(ns, "smol") or {}).get("status") or {}).get("conditions")
        # Granted again: the object is Ready within seconds (not after a 5-minute backoff), /readyz is 200.
        api.wait_ready(ns, "smol", [op.proc], timeout=30)
        wait_until("/readyz 200", lambda: httpx.get(op.health_url + "/readyz", timeout=5).status_code == 200, 10)
        assert metric(op.health_url, WRITES, result="forbidden") <= 3  # backoff, not a write every 10 s


def test_configs_left_by_a_released_finalizer_are_removed_when_the_engine_answers_again(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    engine: EmulatorProcess,
    tmp_path: Path,
) -> None:
    """The engine is frozen (SIGSTOP) during a deletion: the finalizer is released (the delete does not
    hang), the clean-up is recorded in the ConfigMap, survives the operator process, and is applied by
    the next process once the engine answers (SIGCONT)."""
    ns = kube_namespace
    args = operator_args(engine.url, ns, "--finalize-attempts", "1")
    with operator_process(localmodel_cluster, *args, workdir=tmp_path) as op:
        assert api.create_localmodel(ns, "smol", {"model": "ai/smollm2", "contextSize": 2048}).status_code == 201
        api.wait_ready(ns, "smol", [op.proc])
        os.kill(engine.process.pid, signal.SIGSTOP)
        try:
            api.delete(ns, "smol")
            api.wait_gone(ns, "smol", [op.proc], timeout=60)
            released = [e for e in api.events(ns, "smol") if e["reason"] == "FinalizerReleased"]
            assert released
            assert "recorded in ConfigMap localmodel-cleanups" in released[0]["message"]
            assert metric(op.health_url, "localmodel_operator_pending_cleanups") == 1
        finally:
            os.kill(engine.process.pid, signal.SIGCONT)
    assert [c["Config"] for c in engine_configs(engine.url)] == [{"context-size": 2048}]  # left behind
    record = api.http.get(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps/localmodel-cleanups").json()
    assert ns + "/smol" in record["data"]["central"]
    with operator_process(localmodel_cluster, *args, workdir=tmp_path) as op:
        wait_until("the owed clean-up applied", lambda: engine_configs(engine.url) == [], 30, [op.proc])
        wait_until(
            "CleanedUp event", lambda: any(e["reason"] == "CleanedUp" for e in api.events(ns, "smol")), 10, [op.proc]
        )
        assert metric(op.health_url, "localmodel_operator_pending_cleanups") == 0
    record = api.http.get(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps/localmodel-cleanups").json()
    assert json.loads(record["data"]["central"]) == []


def apiserver_outage(
    cluster: KubeAPIServer, api: KubeApi, ns: str, engine: EmulatorProcess, workdir: Path, *, peer: str, down: float
) -> None:
    """Kill `peer` (the API server or etcd) for `down` seconds under a running operator; then an edit
    must reach the engine (the watch came back), with one log line for the outage and one after it.

    The outage handling itself is measured on a single replica, without leader election: an outage that
    outlasts the renew deadline (10 s, and the API server's own restart takes several seconds) makes an
    elected leader exit on purpose, as kube-controller-manager does (election.py; the Deployment restarts
    it and a standby may take over). test_operator_presence covers the election."""
    with operator_process(cluster, *operator_args(engine.url, ns, "--no-leader-election"), workdir=workdir) as op:
        assert api.create_localmodel(ns, "smol", {"model": "ai/smollm2", "contextSize": 2048}).status_code == 201
        api.wait_ready(ns, "smol", [op.proc])
        start = log_size(op.proc.log_path)
        dead = kill_peer(cluster, peer)
        time.sleep(down)
        start_peer_again(cluster, dead)
        api.patch_spec(ns, "smol", {"contextSize": 4096})
        wait_until(
            "the edit applied after the outage",
            lambda: [c["Config"] for c in engine_configs(engine.url)] == [{"context-size": 4096}],
            30,
            [op.proc],
        )
        api.wait_ready(ns, "smol", [op.proc])
        lines = log_lines(op.proc.log_path, since=start)
    loud = [line for line in lines if line.get("level") in ("warning", "error", "critical")]
    events = [line.get("event") for line in lines]
    # One line when the outage starts and one when it ends; none at all when the API server rode it out
    # (etcd down: the API server keeps the watches open and the operator had nothing to write).
    assert events.count("ApiServerDown") == events.count("ApiServerUp") <= 1, loud
    if peer == "kube-apiserver":
        assert events.count("ApiServerDown") == 1, loud
    assert len(loud) <= 3, loud  # the outage line, and at most a line or two of the edges
    assert not any("escalating" in line.get("message", "") for line in lines)


@pytest.mark.parametrize("down", [pytest.param(8, id="8s"), pytest.param(15, id="15s", marks=full_only)])
def test_an_api_server_killed_costs_two_log_lines_and_no_lost_edit(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    engine: EmulatorProcess,
    tmp_path: Path,
    down: float,
) -> None:
    apiserver_outage(localmodel_cluster, api, kube_namespace, engine, tmp_path, peer="kube-apiserver", down=down)


@full_only
def test_an_api_server_killed_for_90_s_costs_two_log_lines_and_no_lost_edit(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    engine: EmulatorProcess,
    tmp_path: Path,
) -> None:
    apiserver_outage(localmodel_cluster, api, kube_namespace, engine, tmp_path, peer="kube-apiserver", down=90)


@full_only
def test_etcd_killed_for_20_s(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    engine: EmulatorProcess,
    tmp_path: Path,
) -> None:
    apiserver_outage(localmodel_cluster, api, kube_namespace, engine, tmp_path, peer="etcd", down=20)
