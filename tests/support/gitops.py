"""The GitOps tools users drive localmodel with, as real programs (built by tests/peers/build):

- ``kstatus``: ``status.Compute`` of github.com/fluxcd/cli-utils (the version Helm 4 pins), which
  Helm 4's ``--wait`` and Flux's health checks use;
- ``argocd-lua``: deploy/argocd/health.lua run in gopher-lua the way Argo CD runs it;
- ``helm``: helm.sh/helm/v4;
- ``kubectl``: k8s.io/kubernetes at the kube-apiserver's version.

Each helper takes live objects (dicts as the API server returns them) and answers what the tool says.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.peers import PeerBinaries

REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = REPO_ROOT / "deploy" / "argocd" / "health.lua"


def _run_on_objects(argv: list[str], objects: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    proc = subprocess.run(argv, input=body, capture_output=True, text=True, timeout=60, check=False)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode not in (0, 1) or len(lines) != len(objects):
        raise AssertionError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.strip()}\nstdout: {proc.stdout}")
    return lines


def kstatus(binaries: PeerBinaries, *objects: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{"kind", "namespace", "name", "status", "message"}]`` from the real kstatus, one per object."""
    path = binaries.require("kstatus")["kstatus"]
    return _run_on_objects([path], objects)


def kstatus_of(binaries: PeerBinaries, obj: dict[str, Any]) -> str:
    """The kstatus status (InProgress, Current, Failed, Terminating) of one object."""
    return str(kstatus(binaries, obj)[0]["status"])


def argocd_health(binaries: PeerBinaries, *objects: dict[str, Any], script: Path = HEALTH_LUA) -> list[dict[str, Any]]:
    """``[{"name", "status", "message"}]`` from deploy/argocd/health.lua in Argo CD's Lua VM."""
    path = binaries.require("argocd-lua")["argocd-lua"]
    return _run_on_objects([path, str(script)], objects)


def helm(
    binaries: PeerBinaries, *args: str, kubeconfig: str | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``helm ARGS`` (Helm 4) with its caches and config in a throw-away HOME-like set of dirs."""
    path = binaries.require("helm")["helm"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_") and k != "KUBECONFIG"}
    state = Path(os.environ.get("TMPDIR", "/tmp")) / f"localmodel-helm-{os.getpid()}"
    env.update(
        {
            "HELM_CACHE_HOME": str(state / "cache"),
            "HELM_CONFIG_HOME": str(state / "config"),
            "HELM_DATA_HOME": str(state / "data"),
        }
    )
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return subprocess.run(
        [path, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd or REPO_ROOT, check=False
    )


def kubectl(
    binaries: PeerBinaries, *args: str, kubeconfig: str, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``kubectl ARGS`` (k8s.io/kubernetes at the kube-apiserver's version) with ``kubeconfig``."""
    path = binaries.require("kubectl")["kubectl"]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["KUBECONFIG"] = kubeconfig
    env["KUBECACHEDIR"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"localmodel-kubectl-{os.getpid()}")
    return subprocess.run(
        [path, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd or REPO_ROOT, check=False
    )
