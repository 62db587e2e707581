"""Helm 4 (helm.sh/helm/v4 v4.3.2, tests/peers/helm) against the real kube-apiserver: the operator's chart
installed with a server-side dry run, and a users' chart of LocalModels (examples/helm-models) installed and
upgraded with `--wait` while the `localmodel operator` process reconciles them on an emulated engine.

Helm 4's `--wait` (the watcher strategy) reads every resource with kstatus: it must return only once every
LocalModel is Ready for its current generation, and fail with our Stalled message when one cannot be applied."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.emulator import EmulatorProcess, emulator_process
from tests.support.gitops import helm, kstatus
from tests.support.kube import KubeApi, operator_args, operator_process
from tests.support.peers import KubeAPIServer, PeerBinaries

pytestmark = [pytest.mark.e2e, pytest.mark.peers]

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_CHART = ROOT / "deploy" / "helm" / "localmodel"
MODELS_CHART = ROOT / "examples" / "helm-models"
PULL_SECONDS = 2.0  # every model of the chart is pulled: the operator needs a while for each


@pytest.fixture
def engine() -> Iterator[EmulatorProcess]:
    with emulator_process("--pull-seconds", str(PULL_SECONDS)) as running:
        yield running


def chart_models() -> list[dict[str, Any]]:
    return list(yaml.safe_load((MODELS_CHART / "values.yaml").read_text())["localModels"])


def models_chart(
    binaries: PeerBinaries, verb: str, ns: str, kubeconfig: str, *values: str
) -> subprocess.CompletedProcess[str]:
    """`helm VERB models examples/helm-models --namespace NS VALUES... --wait --timeout 60s` (install or upgrade)."""
    chart = ("models", str(MODELS_CHART), "--namespace", ns, *values, "--wait", "--timeout", "60s")
    return helm(binaries, verb, *chart, kubeconfig=kubeconfig)


def ready_for_current_generation(obj: dict[str, Any] | None) -> bool:
    if obj is None:
        return False
    generation = obj["metadata"]["generation"]
    status = obj.get("status") or {}
    ready = next((c for c in status.get("conditions") or () if c["type"] == "Ready"), {})
    return (
        status.get("observedGeneration") == generation
        and ready.get("status") == "True"
        and ready.get("observedGeneration") == generation
    )


@pytest.mark.parametrize("mode", ["central", "node-agent"])
def test_operator_chart_installs_with_a_server_side_dry_run(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    peer_binaries: PeerBinaries,
    mode: str,
) -> None:
    """The API server validates every object the chart renders (schemas, RBAC rules, the CRD) without
    keeping any of them."""
    result = helm(
        peer_binaries,
        "install",
        f"lm-{mode}",
        str(OPERATOR_CHART),
        "--namespace",
        kube_namespace,
        "--set",
        f"mode={mode}",
        "--dry-run=server",
        kubeconfig=localmodel_cluster.admin_kubeconfig,
    )
    assert result.returncode == 0, result.stderr
    kinds = {
        d["kind"] for d in yaml.safe_load_all(result.stdout.split("MANIFEST:", 1)[-1].split("\nNOTES:", 1)[0]) if d
    }
    assert {"ClusterRole", "ClusterRoleBinding", "ServiceAccount"} <= kinds
    assert ("DaemonSet" if mode == "node-agent" else "Deployment") in kinds


def test_helm_wait_returns_once_every_model_is_ready_and_fails_with_the_stalled_message(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    engine: EmulatorProcess,
    peer_binaries: PeerBinaries,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    kubeconfig = localmodel_cluster.admin_kubeconfig
    names = [m["name"] for m in chart_models()]
    args = operator_args(engine.url, ns, drift=5)
    with operator_process(localmodel_cluster, *args, workdir=tmp_path) as op:
        # install --wait: returns only when every LocalModel is Ready (kstatus Current) for generation 1
        t0 = time.monotonic()
        installed = models_chart(peer_binaries, "install", ns, kubeconfig)
        install_seconds = time.monotonic() - t0
        assert installed.returncode == 0, installed.stderr
        objs = [api.get(ns, name) for name in names]
        not_ready = {o["metadata"]["name"]: o.get("status") for o in objs if o and not ready_for_current_generation(o)}
        assert not not_ready, f"helm --wait returned after {install_seconds:.1f}s with models not Ready: {not_ready}"
        assert {r["status"] for r in kstatus(peer_binaries, *[o for o in objs if o])} == {"Current"}

        # upgrade --wait with a new contextSize: returns once generation 2 is observed and Ready
        smollm2_8192 = "localModels[0].name=smollm2,localModels[0].model=ai/smollm2,localModels[0].contextSize=8192"
        upgraded = models_chart(peer_binaries, "upgrade", ns, kubeconfig, "--set", smollm2_8192)
        assert upgraded.returncode == 0, upgraded.stderr
        smol = api.get(ns, "smollm2")
        assert smol is not None
        assert smol["spec"]["contextSize"] == 8192
        assert smol["metadata"]["generation"] == 2
        assert ready_for_current_generation(smol), smol.get("status")

        # a model that cannot be pulled: helm fails with the Stalled message, not at its timeout
        values = tmp_path / "broken.yaml"
        values.write_text(
            yaml.safe_dump({"localModels": [*chart_models(), {"name": "broken", "model": "ai/no-such-model"}]})
        )
        t0 = time.monotonic()
        failed = models_chart(peer_binaries, "upgrade", ns, kubeconfig, "--values", str(values))
        failed_seconds = time.monotonic() - t0
        assert failed.returncode != 0, failed.stdout
        broken = api.get(ns, "broken")
        assert broken is not None
        stalled = next(c for c in broken["status"]["conditions"] if c["type"] == "Stalled")
        assert stalled["status"] == "True"
        assert stalled["message"] in failed.stderr, failed.stderr
        # What the user reads names the model and the field to fix (it was "Model not found (404 from URL)").
        assert "model ai/no-such-model:latest was not found in its registry" in failed.stderr, failed.stderr
        assert "check spec.model's name and tag" in failed.stderr, failed.stderr
        op.proc.check_alive()
    print(f"helm install --wait: {install_seconds:.1f}s; upgrade failing on Stalled: {failed_seconds:.1f}s")
