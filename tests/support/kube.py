"""Helpers for the operator's end-to-end tests against the real kube-apiserver (tests/support/peers.py):
the CRD and the RBAC of deploy/ installed for the unprivileged operator user, the `localmodel operator`
process, and a small admin client for LocalModels, Nodes and Events. A pytest plugin (tests/conftest.py):
the fixtures `localmodel_cluster` and `api` need no import.

    def test_x(localmodel_cluster, kube_namespace, api):
        with operator_process(localmodel_cluster, *operator_args(url, kube_namespace), workdir=tmp_path) as op:
            api.create_localmodel(kube_namespace, "smol", {"model": "ai/smollm2"})
            api.wait_ready(kube_namespace, "smol", [op.proc])
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from controller.crd import GROUP, NODE_PLURAL, PLURAL, VERSION
from controller.crd import NAME as CRD_NAME
from controller.crd import NODE_NAME as NODE_CRD_NAME
from controller.operator.nodereport import report_name, report_scope
from controller.spec import API_VERSION, KIND
from tests.support.kstatus import ready_verdict
from tests.support.peers import KubeAPIServer, Proc, apply_manifest, wait_for_crd_established, wait_until
from tests.support.util import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crds" / "localmodels.localmodel.io.yaml"
NODE_CRD_FILE = REPO_ROOT / "crds" / "localmodelnodes.localmodel.io.yaml"
RBAC_FILE = REPO_ROOT / "deploy" / "kustomize" / "base" / "rbac.yaml"
LEASES_FILE = REPO_ROOT / "deploy" / "kustomize" / "base" / "leases.yaml"
CLEANUPS_FILE = REPO_ROOT / "deploy" / "kustomize" / "base" / "cleanups.yaml"
OPERATOR_NAMESPACE = "localmodel-system"  # deploy/'s namespace: the operator processes run "in" it
NODE_AGENT_KUSTOMIZATION = REPO_ROOT / "deploy" / "kustomize" / "overlays" / "node-agent" / "kustomization.yaml"


def deploy_rbac_for_user(user: str) -> list[dict[str, Any]]:
    """The ClusterRole and binding of deploy/kustomize/base, with the node-agent overlay's extra
    rules patched in (JSON-patch `add /rules/-`, as kustomize would), bound to `user` instead of
    the ServiceAccount: the operator process authenticates as that user."""
    docs = [d for path in (RBAC_FILE, LEASES_FILE) for d in yaml.safe_load_all(path.read_text()) if d]
    overlay = yaml.safe_load(NODE_AGENT_KUSTOMIZATION.read_text())
    for patch in overlay.get("patches", []):
        target = patch.get("target") or {}
        if target.get("kind") not in ("ClusterRole", "Role"):
            continue
        for op in yaml.safe_load(patch["patch"]):
            assert op["op"] == "add", f"unexpected RBAC patch {op}"
            assert op["path"] == "/rules/-", f"unexpected RBAC patch {op}"
            role = next(d for d in docs if (d["kind"], d["metadata"]["name"]) == (target["kind"], target["name"]))
            role["rules"].append(op["value"])
    for doc in docs:
        if doc["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            doc["subjects"] = [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]
    return docs


def install_localmodel(cluster: KubeAPIServer) -> KubeAPIServer:
    """Install on `cluster` what deploy/ installs for the operator: the CRDs (waited for), the
    operator's namespace with the (empty) record of pending clean-ups, and its RBAC for the operator user."""
    for crd_file, crd_name in ((CRD_FILE, CRD_NAME), (NODE_CRD_FILE, NODE_CRD_NAME)):
        apply_manifest(cluster.admin_kubeconfig, crd_file)
        wait_for_crd_established(cluster.admin_kubeconfig, crd_name)
    apply_manifest(cluster.admin_kubeconfig, REPO_ROOT / "deploy" / "kustomize" / "base" / "namespace.yaml")
    apply_manifest(cluster.admin_kubeconfig, CLEANUPS_FILE)
    apply_manifest(cluster.admin_kubeconfig, deploy_rbac_for_user(cluster.operator_user))
    return cluster


@pytest.fixture(scope="session")
def localmodel_cluster(kube_apiserver: KubeAPIServer) -> KubeAPIServer:
    """The real API server with the LocalModel CRD and the operator's RBAC (deploy/) installed."""
    return install_localmodel(kube_apiserver)


@pytest.fixture
def api(localmodel_cluster: KubeAPIServer) -> Iterator[KubeApi]:
    """An admin client of the cluster with the CRD installed, closed after the test."""
    client = KubeApi(localmodel_cluster)
    yield client
    client.close()


def operator_args(engine_url: str, namespace: str, *extra: str, drift: float = 2.0, name: str = "emu") -> list[str]:
    """The arguments of a central operator on one engine (`name`) watching one namespace."""
    return ["--engine", f"{name}={engine_url}", "--namespace", namespace, "--drift-interval", str(drift), *extra]


def agent_args(node: str, engine_url: str, namespace: str, *extra: str, drift: float = 2.0) -> list[str]:
    """The arguments of a node agent for `node` on one engine, watching one namespace."""
    agent = ["--mode", "node-agent", "--node-name", node, "--engine", engine_url, "--namespace", namespace]
    return [*agent, "--drift-interval", str(drift), *extra]


@dataclass
class OperatorProcess:
    proc: Proc
    health_url: str

    def metrics(self) -> str:
        return httpx.get(self.health_url + "/metrics", timeout=5).text


@contextlib.contextmanager
def operator_process(
    cluster: KubeAPIServer, *args: str, workdir: Path, kubeconfig: str | None = None, timeout: float = 30.0
) -> Iterator[OperatorProcess]:
    """`localmodel operator ARGS` with the unprivileged operator kubeconfig, until /readyz answers."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "controller",
        "operator",
        "--kubeconfig",
        kubeconfig or cluster.operator_kubeconfig,
        "--health-addr",
        f"127.0.0.1:{port}",
        "--log-format",
        "json",
        "--operator-namespace",
        OPERATOR_NAMESPACE,
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    workdir.mkdir(parents=True, exist_ok=True)
    proc = Proc("localmodel-operator", argv, workdir / f"operator-{port}.log", env=env, cwd=REPO_ROOT)
    health = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            "operator /readyz",
            lambda: httpx.get(health + "/readyz", timeout=1).status_code == 200,
            timeout,
            [proc],
            interval=0.1,
        )
        yield OperatorProcess(proc, health)
    finally:
        proc.stop()


class KubeApi:
    """Admin calls the tests make (the operator itself uses its own, unprivileged, credentials)."""

    def __init__(self, cluster: KubeAPIServer) -> None:
        self.http = cluster.http()

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def path(namespace: str, name: str = "") -> str:
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        return f"{base}/{name}" if name else base

    def create_localmodel(self, namespace: str, name: str, spec: dict[str, Any]) -> httpx.Response:
        """Create with strict field validation (as `kubectl create --validate=strict`)."""
        body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}
        return self.http.post(self.path(namespace), json=body, params={"fieldValidation": "Strict"})

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = self.http.get(self.path(namespace, name))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def patch_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        response = self.http.patch(
            self.path(namespace, name), json={"spec": spec}, headers={"Content-Type": "application/merge-patch+json"}
        )
        response.raise_for_status()
        return response.json()

    def delete(self, namespace: str, name: str) -> None:
        self.http.delete(self.path(namespace, name)).raise_for_status()

    def node_report(self, node: str, namespace: str) -> dict[str, Any] | None:
        """The LocalModelNode of the agent on `node` that watches `namespace` (agent_args)."""
        name = report_name(node, report_scope((namespace,)))
        response = self.http.get(f"/apis/{GROUP}/{VERSION}/{NODE_PLURAL}/{name}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def node_entries(self, node: str, namespace: str) -> dict[str, dict[str, Any]]:
        """The entries of that LocalModelNode by LocalModel name."""
        models = ((self.node_report(node, namespace) or {}).get("status") or {}).get("models") or []
        return {entry["name"]: entry for entry in models if entry.get("namespace") == namespace}

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        items = self.http.get(f"/api/v1/namespaces/{namespace}/events").json()["items"]
        return [e for e in items if e["involvedObject"].get("name") == name]

    def create_node(self, name: str, labels: dict[str, str]) -> None:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
        self.http.post("/api/v1/nodes", json=body).raise_for_status()

    def label_node(self, name: str, labels: dict[str, str | None]) -> None:
        self.http.patch(
            f"/api/v1/nodes/{name}",
            json={"metadata": {"labels": labels}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()

    def delete_node(self, name: str) -> None:
        self.http.delete(f"/api/v1/nodes/{name}")

    # ---- waiting -------------------------------------------------------------------------------

    def wait_for(
        self,
        what: str,
        namespace: str,
        name: str,
        check: Callable[[dict[str, Any] | None], bool],
        procs: list[Proc],
        timeout: float = 30.0,
    ) -> dict[str, Any] | None:
        latest: dict[str, Any] = {}

        def poll() -> bool:
            latest["obj"] = self.get(namespace, name)
            return check(copy.deepcopy(latest["obj"]))

        try:
            wait_until(what, poll, timeout, procs, interval=0.1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\nlast seen: {yaml.safe_dump(latest.get('obj'))}") from None
        return latest["obj"]

    def wait_ready(self, namespace: str, name: str, procs: list[Proc], timeout: float = 30.0) -> dict[str, Any]:
        """`kubectl wait --for=condition=Ready`, for the current generation."""
        obj = self.wait_for(
            f"{name} Ready", namespace, name, lambda o: o is not None and ready_verdict(o), procs, timeout
        )
        assert obj is not None
        return obj

    def wait_gone(self, namespace: str, name: str, procs: list[Proc], timeout: float = 30.0) -> None:
        self.wait_for(f"{name} deleted", namespace, name, lambda o: o is None, procs, timeout)


def engine_configs(url: str) -> list[dict[str, Any]]:
    return httpx.get(url + "/engines/_configure", timeout=5).json()
