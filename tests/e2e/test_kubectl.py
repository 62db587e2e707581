"""kubectl and kube-controller-manager (k8s.io/kubernetes at the kube-apiserver's version, tests/peers/kube)
against the real kube-apiserver with the `localmodel operator` process and an emulated engine: what users
type (`kubectl wait`, `kubectl get lm`, `kubectl describe lm`, `kubectl apply -k`), and namespace deletion
with the real namespace controller."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.emulator import EmulatorProcess, emulator_process
from tests.support.gitops import kubectl
from tests.support.kube import KubeApi, operator_args, operator_process
from tests.support.peers import KubeAPIServer, PeerBinaries, Proc, wait_until
from tests.support.util import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.peers]

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kustomize"
# README: what clears a namespace stuck Terminating on our finalizer once the operator is gone for good.
CLEAR_FINALIZERS = (
    "kubectl get localmodels -n NAMESPACE -o name"
    ' | xargs -r -n1 kubectl patch -n NAMESPACE --type=merge -p \'{"metadata":{"finalizers":null}}\''
)


@pytest.fixture
def engine() -> Iterator[EmulatorProcess]:
    with emulator_process("--preload-models", "ai/smollm2", "--pull-seconds", "2") as running:
        yield running


def test_wait_get_and_describe(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    engine: EmulatorProcess,
    peer_binaries: PeerBinaries,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    kc = localmodel_cluster.admin_kubeconfig
    args = operator_args(engine.url, ns, drift=5)
    with operator_process(localmodel_cluster, *args, workdir=tmp_path) as op:
        # pulled first (2 s): `kubectl wait` must not return before Ready
        assert api.create_localmodel(ns, "llama", {"model": "ai/llama3.2", "contextSize": 4096}).status_code == 201
        waited = kubectl(
            peer_binaries, "wait", "-n", ns, "--for=condition=Ready", "lm/llama", "--timeout=60s", kubeconfig=kc
        )
        assert waited.returncode == 0, f"{waited.stderr}\n{api.get(ns, 'llama')}\n{op.proc.log_tail()}"
        assert waited.stdout.strip() == "localmodel.localmodel.io/llama condition met"
        obj = api.get(ns, "llama")
        assert obj is not None
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"

        got = kubectl(peer_binaries, "get", "lm", "-n", ns, kubeconfig=kc)
        assert got.returncode == 0, got.stderr
        header, row = got.stdout.splitlines()
        assert header.split() == ["NAME", "MODEL", "BACKEND", "CONTEXT", "READY", "STATUS", "REASON", "AGE"]
        cells = row.split()
        assert cells[:7] == ["llama", "ai/llama3.2", "llama.cpp", "4096", "1/1", "True", "Applied"], got.stdout
        assert len(cells) == 8  # AGE
        assert "<none>" not in row

        described = kubectl(peer_binaries, "describe", "lm", "llama", "-n", ns, kubeconfig=kc)
        assert described.returncode == 0, described.stderr
        events = described.stdout.split("Events:", 1)[1]
        for reason in ("Pulled", "Applied"):
            assert reason in events, described.stdout


@pytest.mark.parametrize("folder", ["base", "overlays/node-agent"])
def test_kustomize_applies_with_a_server_side_dry_run(
    localmodel_cluster: KubeAPIServer,
    api: KubeApi,
    peer_binaries: PeerBinaries,
    folder: str,
) -> None:
    """Every object the Kustomization builds passes the API server's validation, admission and RBAC
    escalation checks. A dry run does not create the Namespace it declares: it is created here first."""
    created = api.http.post("/api/v1/namespaces", json={"metadata": {"name": "localmodel-system"}})
    assert created.status_code in (201, 409), created.text
    applied = kubectl(
        peer_binaries,
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=localmodel-tests",
        "-k",
        str(KUSTOMIZE / folder),
        kubeconfig=localmodel_cluster.admin_kubeconfig,
    )
    assert applied.returncode == 0, applied.stderr
    lines = applied.stdout.splitlines()
    assert any(
        line.startswith("customresourcedefinition.apiextensions.k8s.io/localmodels.localmodel.io") for line in lines
    )
    assert any(line.startswith(("deployment.apps/", "daemonset.apps/")) for line in lines), applied.stdout
    assert all(line.endswith("(server dry run)") for line in lines), applied.stdout


@pytest.fixture
def controller_manager(
    localmodel_cluster: KubeAPIServer,
    peer_binaries: PeerBinaries,
    tmp_path: Path,
) -> Iterator[Proc]:
    """kube-controller-manager running only the namespace controller (and the garbage collector it needs)."""
    path = peer_binaries.require("kube-controller-manager")["kube-controller-manager"]
    proc = Proc(
        "kube-controller-manager",
        [
            path,
            f"--kubeconfig={localmodel_cluster.admin_kubeconfig}",
            "--controllers=namespace-controller,garbage-collector-controller",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cert-dir={tmp_path / 'kcm-certs'}",
            "--authentication-skip-lookup=true",
            "--v=1",
        ],
        tmp_path / "kube-controller-manager.log",
    )
    try:
        yield proc
    finally:
        proc.stop()


def namespace_phase(api: KubeApi, ns: str) -> str | None:
    response = api.http.get(f"/api/v1/namespaces/{ns}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return str(response.json()["status"]["phase"])


def test_deleting_a_namespace_with_localmodels(
    localmodel_cluster: KubeAPIServer,
    api: KubeApi,
    engine: EmulatorProcess,
    controller_manager: Proc,
    peer_binaries: PeerBinaries,
    tmp_path: Path,
) -> None:
    kc = localmodel_cluster.admin_kubeconfig
    # With the operator running: the namespace controller deletes the LocalModels, the operator applies
    # their deletionPolicy and releases its finalizer, the namespace goes.
    ns = localmodel_cluster.new_namespace("del")
    args = operator_args(engine.url, ns, drift=5)
    with operator_process(localmodel_cluster, *args, workdir=tmp_path) as op:
        for name, model in (("a", "ai/smollm2"), ("b", "ai/llama3.2")):  # one LocalModel per model
            assert api.create_localmodel(ns, name, {"model": model, "deletionPolicy": "Unload"}).status_code == 201
        for name in ("a", "b"):
            api.wait_ready(ns, name, [op.proc])
        deleted = kubectl(peer_binaries, "delete", "namespace", ns, "--wait=true", "--timeout=60s", kubeconfig=kc)
        assert deleted.returncode == 0, deleted.stderr + controller_manager.log_tail()
        assert namespace_phase(api, ns) is None
        op.proc.check_alive()

    # With the operator gone: the namespace stays Terminating, waiting on our finalizer, until it is removed.
    ns = localmodel_cluster.new_namespace("stuck")
    with operator_process(
        localmodel_cluster, "--engine", f"emu={engine.url}", "--namespace", ns, workdir=tmp_path
    ) as op:
        assert api.create_localmodel(ns, "a", {"model": "ai/smollm2"}).status_code == 201
        api.wait_ready(ns, "a", [op.proc])
    assert kubectl(peer_binaries, "delete", "namespace", ns, "--wait=false", kubeconfig=kc).returncode == 0

    def waiting_on_finalizers() -> bool:
        r = api.http.get(f"/api/v1/namespaces/{ns}").json()
        reasons = {c["type"]: c for c in r["status"].get("conditions") or ()}
        remaining = reasons.get("NamespaceFinalizersRemaining", {})
        return remaining.get("status") == "True" and "localmodel.io/finalizer" in remaining.get("message", "")

    wait_until("namespace waiting on the localmodel finalizer", waiting_on_finalizers, 60, [controller_manager])
    assert namespace_phase(api, ns) == "Terminating"
    # The README's one command (with the built kubectl first on PATH):
    kubectl_dir = str(Path(peer_binaries.require("kubectl")["kubectl"]).parent)
    cleared = subprocess.run(
        ["bash", "-c", CLEAR_FINALIZERS.replace("NAMESPACE", ns)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": kubectl_dir + os.pathsep + os.environ["PATH"], "KUBECONFIG": kc},
        check=False,
    )
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.strip() == "localmodel.localmodel.io/a patched"
    wait_until("namespace gone", lambda: namespace_phase(api, ns) is None, 60, [controller_manager])
