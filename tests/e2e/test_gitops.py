"""The GitOps tools users wait with, run for real on live LocalModels: kstatus (the library Helm 4's
`--wait` and Flux use, github.com/fluxcd/cli-utils as Helm 4.3 pins it) and deploy/argocd/health.lua in
Argo CD's Lua VM (gopher-lua), against the real kube-apiserver with the `localmodel operator` process and
an emulated engine. The objects each tool reads are the ones the API server returns at that moment."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.emulator import EmulatorProcess, emulator_process
from tests.support.gitops import argocd_health, kstatus
from tests.support.kube import KubeApi, operator_args, operator_process
from tests.support.peers import KubeAPIServer, PeerBinaries, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.peers]

PULL_SECONDS = 6.0  # the emulator's pull of a model it does not have yet
ARGOCD_TESTDATA = Path(__file__).resolve().parents[2] / "deploy" / "argocd" / "testdata"
# LOCALMODEL_CAPTURE_ARGOCD_TESTDATA=1 writes the live objects of each stage to deploy/argocd/testdata/live_*.yaml
# (the fixtures of tests/unit/test_argocd_health.py; their expected results go in health_test.yaml). Not the
# deleted object: Argo CD answers "Pending deletion" before running the script, and its own test harness
# (which reads health_test.yaml) runs the script.
CAPTURE = os.environ.get("LOCALMODEL_CAPTURE_ARGOCD_TESTDATA") == "1"
CAPTURED = {
    "ready: created, not yet observed": "live_created.yaml",
    "pulling: pulling": "live_pulling.yaml",
    "ready: Ready": "live_ready.yaml",
    "stalled: Stalled": "live_stalled.yaml",
    "busy: Reconciling (runner busy)": "live_reconciling.yaml",
    "ready: spec changed, not yet observed": "live_spec_changed.yaml",
}


@pytest.fixture
def engine() -> Iterator[EmulatorProcess]:
    with emulator_process(
        "--preload-models", "ai/smollm2,ai/qwen3:0.6B-F16", "--pull-seconds", str(PULL_SECONDS)
    ) as running:
        yield running


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    assert obj is not None
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == kind), {})


def engine_phase(obj: dict[str, Any] | None) -> str | None:
    engines = ((obj or {}).get("status") or {}).get("engines") or [{}]
    return engines[0].get("phase")


def pulls(url: str) -> int:
    return int(httpx.get(url + "/_emulator/state", timeout=5).json()["counters"].get("POST /models/create", 0))


def set_busy(url: str, model: str, *, busy: bool) -> None:
    httpx.post(url + "/_emulator/busy", json={"model": model, "busy": busy}, timeout=5).raise_for_status()


def engine_tags(url: str) -> set[str]:
    return {tag for m in httpx.get(url + "/models", timeout=5).json() for tag in m["tags"]}


def capture(stage: str, name: str, obj: dict[str, Any]) -> None:
    """The live object as an Argo CD test fixture: the server's bookkeeping and the test's names left out."""
    meta = {k: v for k, v in obj["metadata"].items() if k in ("name", "generation", "finalizers", "deletionTimestamp")}
    meta["name"], meta["namespace"] = "smollm2", "models"
    fixture = {**obj, "metadata": meta}
    text = yaml.safe_dump(fixture, sort_keys=False)
    text = re.sub(r"http://127\.0\.0\.1:[0-9]+", "http://127.0.0.1:12434", text)
    (ARGOCD_TESTDATA / name).write_text(
        f"# Captured from the live object by tests/e2e/test_gitops.py ({stage}).\n{text}"
    )


def verdicts(binaries: PeerBinaries, obj: dict[str, Any] | None) -> tuple[str, str, str, str]:
    """(kstatus status, kstatus message, Argo CD health, Argo CD message) of one live object."""
    assert obj is not None
    ks = kstatus(binaries, obj)[0]
    argo = argocd_health(binaries, obj)[0]
    assert "error" not in argo, argo
    return ks["status"], ks["message"], argo["status"], argo["message"]


def test_a_new_localmodel_is_in_progress_until_the_operator_observes_it(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    peer_binaries: PeerBinaries,
) -> None:
    """No operator runs: nothing has observed the object, so a GitOps tool must keep waiting. kstatus read
    a LocalModel without status as Current ("Resource is current"), so `helm install --wait` returned at once."""
    created = api.create_localmodel(kube_namespace, "fresh", {"model": "ai/smollm2"})
    assert created.status_code == 201, created.text
    obj = api.get(kube_namespace, "fresh")
    assert obj is not None
    ks, ks_message, argo, argo_message = verdicts(peer_binaries, obj)
    assert (ks, argo) == ("InProgress", "Progressing"), (ks_message, argo_message)
    assert obj["status"] == {"observedGeneration": 0}  # the CRD's status default
    assert ks_message == "LocalModel generation is 1, but latest observed generation is 0"
    assert argo_message == "Waiting for the localmodel controller to observe generation 1"


def test_kstatus_and_argocd_health_at_every_stage(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    engine: EmulatorProcess,
    peer_binaries: PeerBinaries,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    seen: dict[str, tuple[str, str, str, str]] = {}

    def record(stage: str, obj: dict[str, Any] | None) -> None:
        seen[stage] = verdicts(peer_binaries, obj)
        if CAPTURE and obj is not None and stage in CAPTURED:
            capture(stage, CAPTURED[stage], obj)

    args = operator_args(engine.url, ns, drift=2)

    # A runner serving a request: the engine answers the configure with 409 until it is idle.
    set_busy(engine.url, "ai/qwen3:0.6B-F16", busy=True)
    for name, spec in (
        ("ready", {"model": "ai/smollm2", "contextSize": 2048}),
        ("pulling", {"model": "ai/llama3.2"}),
        ("stalled", {"model": "ai/no-such-model"}),
        ("busy", {"model": "ai/qwen3:0.6B-F16"}),
    ):
        assert api.create_localmodel(ns, name, spec).status_code == 201
        record(f"{name}: created, not yet observed", api.get(ns, name))

    with operator_process(localmodel_cluster, *args, workdir=tmp_path) as op:
        # Both pulls asked for (the unknown model's fails at once), ai/llama3.2's still streaming.
        wait_until("pulls started", lambda: pulls(engine.url) >= 2, 30, [op.proc])
        # The status shows the pull while it runs (it stayed {observedGeneration: 0} for a new object until the
        # pull ended); whichever comes first, so that a missing progress write fails rather than waits.
        pulling = api.wait_for(
            "pull progress or Ready", ns, "pulling", lambda o: engine_phase(o) in ("Pulling", "Ready"), [op.proc]
        )
        assert not any(tag.endswith("ai/llama3.2:latest") for tag in engine_tags(engine.url))
        assert engine_phase(pulling) == "Pulling", pulling
        record("pulling: pulling", pulling)
        record("ready: Ready", api.wait_ready(ns, "ready", [op.proc]))
        stalled = api.wait_for(
            "Stalled", ns, "stalled", lambda o: condition(o, "Stalled").get("status") == "True", [op.proc]
        )
        record("stalled: Stalled", stalled)
        busy = api.wait_for(
            "Reconciling", ns, "busy", lambda o: condition(o, "Reconciling").get("status") == "True", [op.proc]
        )
        record("busy: Reconciling (runner busy)", busy)
        set_busy(engine.url, "ai/qwen3:0.6B-F16", busy=False)
        record("busy: Ready", api.wait_ready(ns, "busy", [op.proc]))
        pulled = api.wait_ready(ns, "pulling", [op.proc], timeout=PULL_SECONDS + 30)
        record("pulling: Ready", pulled)

    # The operator is stopped: a spec change and a deletion wait for it.
    api.patch_spec(ns, "ready", {"contextSize": 4096})
    record("ready: spec changed, not yet observed", api.get(ns, "ready"))
    api.delete(ns, "pulling")
    terminating = api.get(ns, "pulling")
    assert terminating is not None
    assert terminating["metadata"]["finalizers"]
    record("pulling: deleted, finalizer held", terminating)

    with operator_process(localmodel_cluster, *args, workdir=tmp_path) as op:
        record("ready: new spec Ready", api.wait_ready(ns, "ready", [op.proc]))
        api.wait_gone(ns, "pulling", [op.proc])

    got = {stage: (v[0], v[2]) for stage, v in seen.items()}
    assert got == {
        "ready: created, not yet observed": ("InProgress", "Progressing"),
        "pulling: created, not yet observed": ("InProgress", "Progressing"),
        "stalled: created, not yet observed": ("InProgress", "Progressing"),
        "pulling: pulling": ("InProgress", "Progressing"),
        "ready: Ready": ("Current", "Healthy"),
        "stalled: Stalled": ("Failed", "Degraded"),
        "busy: created, not yet observed": ("InProgress", "Progressing"),
        "busy: Reconciling (runner busy)": ("InProgress", "Progressing"),
        "busy: Ready": ("Current", "Healthy"),
        "pulling: Ready": ("Current", "Healthy"),
        "ready: spec changed, not yet observed": ("InProgress", "Progressing"),
        "pulling: deleted, finalizer held": ("Terminating", "Progressing"),
        "ready: new spec Ready": ("Current", "Healthy"),
    }, "\n".join(f"{stage}: {v}" for stage, v in seen.items())
    # While the pull runs, both tools say why they wait (not "waiting to observe generation 1").
    assert "pulling ai/llama3.2" in seen["pulling: pulling"][1], seen["pulling: pulling"]
    assert "pulling ai/llama3.2" in seen["pulling: pulling"][3], seen["pulling: pulling"]
    # Helm 4 fails with kstatus's message for a Failed resource: it must be our Stalled message.
    stalled_message = seen["stalled: Stalled"][1]
    assert stalled_message == condition(stalled, "Stalled")["message"]
