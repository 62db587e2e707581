"""Smoke tests for the real peers built by tests/peers/build."""

from __future__ import annotations

import httpx
import pytest

from tests.support.peers import (
    DRAFT_MODEL,
    MAIN_MODEL,
    DMRServer,
    KubeAPIServer,
    apply_manifest,
    wait_for_crd_established,
)

pytestmark = pytest.mark.peers


# --------------------------------------------------------------------------- kube


def test_apiserver_readyz(kube_apiserver: KubeAPIServer) -> None:
    with kube_apiserver.http() as c:
        r = c.get("/readyz")
    assert r.status_code == 200, r.text


def test_admin_can_create_namespace(kube_apiserver: KubeAPIServer) -> None:
    ns = kube_apiserver.new_namespace("smoke")
    with kube_apiserver.http() as c:
        r = c.get(f"/api/v1/namespaces/{ns}")
    assert r.status_code == 200
    assert r.json()["metadata"]["name"] == ns


def test_operator_cannot_list_secrets_cluster_wide(kube_apiserver: KubeAPIServer) -> None:
    with kube_apiserver.http(kube_apiserver.operator_token) as c:
        r = c.get("/api/v1/secrets")
        who = c.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    assert r.status_code == 403, r.text
    assert who.json()["status"]["userInfo"]["username"] == kube_apiserver.operator_user


def test_kubeconfigs_work_with_python_client(kube_apiserver: KubeAPIServer, kube_namespace: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with kube_apiserver.api_client() as api:
        names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
    assert kube_namespace in names
    with kube_apiserver.api_client(kube_apiserver.operator_kubeconfig) as api, pytest.raises(ApiException) as exc:
        client.CoreV1Api(api).list_namespaced_config_map(kube_namespace)
    assert exc.value.status == 403


def test_apply_crd_and_custom_resource(kube_apiserver: KubeAPIServer, kube_namespace: str) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.smoke.localmodel.io"},
        "spec": {
            "group": "smoke.localmodel.io",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    "subresources": {"status": {}},
                }
            ],
        },
    }
    apply_manifest(kube_apiserver.admin_kubeconfig, crd)
    wait_for_crd_established(kube_apiserver.admin_kubeconfig, "widgets.smoke.localmodel.io")
    out = kube_apiserver.apply(
        "apiVersion: smoke.localmodel.io/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n",
        namespace=kube_namespace,
    )
    assert out[0]["metadata"]["namespace"] == kube_namespace
    # Applying again is idempotent (server-side apply).
    out2 = kube_apiserver.apply(
        {
            "apiVersion": "smoke.localmodel.io/v1",
            "kind": "Widget",
            "metadata": {"name": "w1", "namespace": kube_namespace},
            "spec": {"size": 4},
        }
    )
    assert out2[0]["spec"]["size"] == 4


# --------------------------------------------------------------------------- DMR


def test_dmr_status_and_models(dmr_server: DMRServer) -> None:
    status = httpx.get(f"{dmr_server.url}/engines/status").json()
    assert status["llama.cpp"].startswith("Running"), status
    models = httpx.get(f"{dmr_server.url}/models").json()
    tags = {t for m in models for t in m["tags"]}
    assert f"docker.io/{MAIN_MODEL}" in tags
    assert f"docker.io/{DRAFT_MODEL}" in tags
    assert dmr_server.models[MAIN_MODEL] == f"docker.io/{MAIN_MODEL}"
    assert all(m["config"]["format"] == "gguf" for m in models)


def test_dmr_configure_roundtrip(dmr_server: DMRServer) -> None:
    r = httpx.post(f"{dmr_server.url}/engines/_configure", json={"model": MAIN_MODEL, "context-size": 2048})
    assert r.status_code == 202, r.text
    got = httpx.get(f"{dmr_server.url}/engines/_configure", params={"model": MAIN_MODEL}).json()
    assert len(got) == 1, got
    assert got[0]["Backend"] == "llama.cpp"
    assert got[0]["Config"]["context-size"] == 2048
    assert got[0]["Model"] == f"docker.io/{MAIN_MODEL}"


def test_dmr_rejects_unknown_runtime_flag(dmr_server: DMRServer) -> None:
    r = httpx.post(f"{dmr_server.url}/engines/_configure", json={"model": MAIN_MODEL, "runtime-flags": ["--foo"]})
    assert r.status_code == 500
    assert '"--foo" is not allowed' in r.text


def test_dmr_inference_reaches_fake_engine_with_configured_flags(dmr_server: DMRServer) -> None:
    r = httpx.post(
        f"{dmr_server.url}/engines/_configure",
        json={"model": MAIN_MODEL, "context-size": 4096, "speculative": {"draft_model": DRAFT_MODEL}},
    )
    assert r.status_code == 202, r.text
    r = httpx.post(
        f"{dmr_server.url}/engines/v1/chat/completions",
        timeout=60,
        json={"model": MAIN_MODEL, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"]
    argv = body["fake_llama_server"]["argv"]
    assert argv[argv.index("--ctx-size") + 1] == "4096"
    assert "--model-draft" in argv
    assert any("--ctx-size" in a for a in dmr_server.llama_argv())


def test_dmr_restart_forgets_configs_keeps_models(dmr_server: DMRServer) -> None:
    assert (
        httpx.post(f"{dmr_server.url}/engines/_configure", json={"model": MAIN_MODEL, "context-size": 2048}).status_code
        == 202
    )
    dmr_server.restart()
    assert httpx.get(f"{dmr_server.url}/engines/_configure").json() == []
    assert len(httpx.get(f"{dmr_server.url}/models").json()) == 3
