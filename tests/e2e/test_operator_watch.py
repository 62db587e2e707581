"""The engine watch of the real `localmodel operator` (central mode, default settings: a 30 s drift
pass and a 1 s watch) against the real kube-apiserver and an emulated engine: a restart, another
client's overwrite and a hand unload are each repaired by the watch, and a request in flight during
the repair is not cut. Assertions are on the engine's config and the Kubernetes Event, not timings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.emulator import EmulatorProcess, emulator_process
from tests.support.gitops import kubectl
from tests.support.kube import KubeApi, agent_args, engine_configs, operator_process
from tests.support.peers import KubeAPIServer, PeerBinaries, wait_until
from tests.support.util import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.peers]

MODEL, OTHER = "ai/smollm2", "ai/smollm2:135M-Q4_0"
# Well inside the default 30 s drift pass: only the watch repairs in time.
REPAIR_TIMEOUT = 12.0


@pytest.fixture
def engine() -> Iterator[EmulatorProcess]:
    with emulator_process("--preload-models", f"{MODEL},{OTHER}") as running:
        yield running


def context_of(url: str, model: str) -> object:
    entries = httpx.get(f"{url}/engines/_configure", params={"model": model}, timeout=5).json()
    return entries[0]["Config"].get("context-size") if entries else None


def repaired(api: KubeApi, ns: str, name: str) -> list[str]:
    return [e["message"] for e in api.events(ns, name) if e["reason"] == "DriftRepaired"]


def test_restart_overwrite_unload_and_a_request_in_flight_are_repaired(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    engine: EmulatorProcess,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    with operator_process(
        localmodel_cluster, "--engine", f"emu={engine.url}", "--namespace", ns, workdir=tmp_path
    ) as op:
        assert api.create_localmodel(ns, "smol", {"model": MODEL, "contextSize": 8192}).status_code == 201
        assert api.create_localmodel(ns, "other", {"model": OTHER, "contextSize": 2048}).status_code == 201
        api.wait_ready(ns, "smol", [op.proc])
        api.wait_ready(ns, "other", [op.proc])
        procs = [op.proc]

        def back(what: str, count: int) -> list[str]:
            wait_until(what, lambda: context_of(engine.url, MODEL) == 8192, REPAIR_TIMEOUT, procs, interval=0.05)
            wait_until(f"{what}: event", lambda: len(repaired(api, ns, "smol")) >= count, 10, procs)
            return repaired(api, ns, "smol")

        httpx.post(engine.url + "/_emulator/restart").raise_for_status()
        assert engine_configs(engine.url) == []
        messages = back("config back after the restart", 1)
        assert any("restarted" in m and "config back after" in m for m in messages)

        httpx.post(f"{engine.url}/engines/_configure", json={"model": MODEL, "context-size": 4096}).raise_for_status()
        messages = back("config back after the overwrite", 2)
        assert any("overwritten by another client: context-size" in m for m in messages)

        unload = {"all": False, "backend": "llama.cpp", "models": [MODEL]}
        httpx.post(f"{engine.url}/engines/unload", json=unload).raise_for_status()
        messages = back("config back after the unload", 3)
        assert any("removed by another client" in m for m in messages)

        # A request holds the runner while another client drops the config: the busy runner stays
        # (unload evicts idle runners only; configure answers 409) until the request ends.
        httpx.post(f"{engine.url}/_emulator/busy", json={"model": MODEL, "busy": True}).raise_for_status()
        httpx.post(f"{engine.url}/engines/unload", json=unload).raise_for_status()
        wait_until(
            "the repair waiting for the busy runner",
            lambda: any(e["reason"] == "RunnerBusy" for e in api.events(ns, "smol")),
            REPAIR_TIMEOUT,
            procs,
        )
        runners = httpx.get(f"{engine.url}/_emulator/state").json()["runners"]
        assert any(r["in_use"] for r in runners if r["model_ref"] == MODEL)
        assert context_of(engine.url, MODEL) is None
        httpx.post(f"{engine.url}/_emulator/busy", json={"model": MODEL, "busy": False}).raise_for_status()
        back("config back once the request ended", 4)
        assert context_of(engine.url, OTHER) == 2048  # the other model was never touched


def test_a_node_agents_engine_going_down_and_back_is_one_event_each_on_its_node(
    localmodel_cluster: KubeAPIServer,
    kube_namespace: str,
    api: KubeApi,
    peer_binaries: PeerBinaries,
    tmp_path: Path,
) -> None:
    """Issue 9: one Event when the engine goes down and one when it is back, on the Node whose engine it is
    (`kubectl describe node` shows them), not one per LocalModel. The watch used to log them only."""
    ns = kube_namespace
    node = f"engine-node-{ns.split('-')[-1]}"
    api.create_node(node, {"localmodel-test": ns})
    port = free_port()  # the engine comes back on the same address

    def node_reasons() -> list[str]:
        return [e["reason"] for e in api.events("default", node) if e["involvedObject"].get("kind") == "Node"]

    try:
        with (
            emulator_process("--port", str(port), "--preload-models", MODEL) as first,
            operator_process(localmodel_cluster, *agent_args(node, first.url, ns, drift=30), workdir=tmp_path) as op,
        ):
            assert api.create_localmodel(ns, "smol", {"model": MODEL}).status_code == 201
            assert api.create_localmodel(ns, "other", {"model": OTHER}).status_code == 201
            api.wait_ready(ns, "smol", [op.proc])
            api.wait_ready(ns, "other", [op.proc])
            first.process.terminate()
            first.process.wait(10)
            wait_until("EngineDown on the node", lambda: "EngineDown" in node_reasons(), 30, [op.proc])
            with emulator_process("--port", str(port), "--preload-models", MODEL):
                wait_until("EngineUp on the node", lambda: "EngineUp" in node_reasons(), 30, [op.proc])
                api.wait_ready(ns, "smol", [op.proc])
                # Read while the engine still answers: once it stops, the agent rightly posts another EngineDown.
                reasons = sorted(node_reasons())
                described = kubectl(
                    peer_binaries, "describe", "node", node, kubeconfig=localmodel_cluster.admin_kubeconfig
                )
        assert reasons == ["EngineDown", "EngineUp"]
        down = next(e for e in api.events("default", node) if e["reason"] == "EngineDown")
        assert (down["type"], down["involvedObject"].get("namespace")) == ("Warning", None)
        assert f"engine {node} does not answer" in down["message"]
        assert "EngineDown" in described.stdout, described.stdout
        assert "EngineUp" in described.stdout, described.stdout
        for name in ("smol", "other"):  # not one per LocalModel
            assert not {"EngineDown", "EngineUp"} & {e["reason"] for e in api.events(ns, name)}
    finally:
        api.delete_node(node)
