"""The DMR emulator over real loopback HTTP: routes, status codes, exact texts, normalisation, runners."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from controller.emulator import RunningEmulator, load_artifacts
from controller.emulator.catalog import format_size
from tests.support.emulator import emulator, emulator_thread

SMOLLM2_ID_TAGS = ["docker.io/ai/smollm2:latest"]
TEXT = "text/plain; charset=utf-8"


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with emulator(preload_models=["ai/smollm2"]) as running:
        yield running


@pytest.fixture
async def http(emu: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emu.url, timeout=10) as client:
        yield client


async def configure(http: httpx.AsyncClient, body: dict[str, Any], backend: str | None = None) -> httpx.Response:
    path = "/engines/_configure" if backend is None else f"/engines/{backend}/_configure"
    return await http.post(path, json=body)


async def configs(http: httpx.AsyncClient, model: str | None = None) -> list[dict[str, Any]]:
    response = await http.get("/engines/_configure", params={"model": model} if model else None)
    assert response.status_code == 200
    return response.json()


async def control(http: httpx.AsyncClient, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await http.post(f"/_emulator/{route}", json=body or {})
    assert response.status_code == 200, response.text
    return response.json()


def pull_lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line.startswith("{")]


# --- health and store ------------------------------------------------------------------------


async def test_root_and_version(http: httpx.AsyncClient) -> None:
    root = await http.get("/")
    assert (root.status_code, root.text) == (200, "Docker Model Runner is running")
    assert (await http.get("/version")).json() == {"version": "v1.2.9-emulator"}


# What model-runner v1.2.9 answers (a differential run against the real server): its inner muxes end
# in a catch-all, so a wrong method is `not found`, never 405; Go's mux redirects subtree roots.
ROUTING = [
    ("GET", "/nope", 404, "404 page not found\n"),
    ("GET", "/version/x", 404, "404 page not found\n"),
    ("GET", "/engines/unload", 404, "not found\n"),
    ("DELETE", "/engines/ps", 404, "not found\n"),
    ("GET", "/v1/chat/completions", 404, "not found\n"),
    ("PUT", "/models", 404, "not found\n"),
    ("GET", "/models/", 404, "model not found\n"),
    ("DELETE", "/models/", 404, "error while deleting model: model not found\n"),
    ("POST", "/", 200, "Docker Model Runner is running"),
    ("GET", "/engines", 307, '<a href="/engines/">Temporary Redirect</a>.\n\n'),
    ("POST", "/models", 307, ""),
]


@pytest.mark.parametrize(("method", "path", "status", "text"), ROUTING)
async def test_unknown_routes_and_methods_answer_like_go(
    http: httpx.AsyncClient, method: str, path: str, status: int, text: str
) -> None:
    response = await http.request(method, path)
    assert (response.status_code, response.text) == (status, text)
    if status == 404:
        assert response.headers["content-type"] == TEXT
    if status == 307:
        assert response.headers["location"] == path + "/"


async def test_model_tags_are_case_sensitive(http: httpx.AsyncClient) -> None:
    assert (await http.get("/models/AI/SmolLM2")).status_code == 200
    assert (await http.get("/models/ai/smollm2:LATEST")).status_code == 404


async def test_pull_streams_ndjson_progress_then_success(emu: RunningEmulator, http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/models/create", json={"from": "ai/qwen3:0.6B-F16"}, headers={"Accept": "application/json"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    lines = pull_lines(response)
    progress, last = lines[:-1], lines[-1]
    assert progress
    assert all(line["type"] == "progress" and line["mode"] == "pull" for line in progress)
    assert all(line["layer"]["id"].startswith("sha256:") and line["total"] == 1_500_000_000 for line in progress)
    assert progress[-1]["layer"]["current"] == progress[-1]["layer"]["size"]
    assert last == {
        "type": "success",
        "message": "Model pulled successfully",
        "total": 0,
        "layer": {"size": 0, "current": 0},
        "mode": "pull",
    }
    tags = [m["tags"] for m in (await http.get("/models")).json()]
    assert ["docker.io/ai/qwen3:0.6B-F16"] in tags


async def test_pull_of_another_tag_of_a_stored_artifact_is_cached(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/models/create", json={"from": "ai/smollm2:360M-Q4_K_M"}, headers={"Accept": "application/json"}
    )
    assert pull_lines(response) == [
        {
            "type": "success",
            "message": "Using cached model: 256.38MiB",
            "total": 0,
            "layer": {"size": 0, "current": 0},
            "mode": "pull",
        }
    ]
    model = (await http.get("/models/ai/smollm2:360M-Q4_K_M")).json()
    assert model["tags"] == ["docker.io/ai/smollm2:latest", "docker.io/ai/smollm2:360M-Q4_K_M"]


async def test_pull_without_accept_json_is_html_escaped_text(http: httpx.AsyncClient) -> None:
    response = await http.post("/models/create", json={"from": "ai/smollm2"})
    assert response.headers["content-type"] == "text/plain"
    assert response.text == (
        "{&#34;type&#34;:&#34;success&#34;,&#34;message&#34;:&#34;Using cached model: "
        "256.38MiB&#34;,&#34;total&#34;:0,&#34;layer&#34;:{&#34;size&#34;:0,&#34;current&#34;:0},"
        "&#34;mode&#34;:&#34;pull&#34;}\n"
    )


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (b'{"from":"ai/Bad Name"}', 400, "Invalid model reference\n"),
        (b'{"from":""}', 400, "Invalid model reference\n"),
        (b'{"from":"ai/not-in-catalog"}', 404, "Model not found\n"),
        (b'{"from":42}', 400, "invalid request body\n"),
        (b"not json", 400, "invalid request body\n"),
    ],
)
async def test_pull_errors_before_streaming(http: httpx.AsyncClient, body: bytes, status: int, text: str) -> None:
    response = await http.post("/models/create", content=body, headers={"Accept": "application/json"})
    assert (response.status_code, response.text, response.headers["content-type"]) == (status, text, TEXT)


async def test_pull_failing_midway_has_an_error_line_and_no_success(http: httpx.AsyncClient) -> None:
    await control(http, "fail-next-pull", {"after_bytes": 1_000_000_000, "message": "connection reset by peer"})
    response = await http.post("/models/create", json={"from": "ai/llama3.2"}, headers={"Accept": "application/json"})
    assert response.status_code == 200
    lines = pull_lines(response)
    assert [line["type"] for line in lines[:-1]] == ["progress"] * len(lines[:-1])
    assert all(line["layer"]["current"] <= 1_000_000_000 for line in lines[:-1])
    assert lines[-1]["type"] == "error"
    assert lines[-1]["message"] == "Error: connection reset by peer"
    assert response.text.endswith("error while pulling model: writing image to store: connection reset by peer\n")
    assert (await http.get("/models/ai/llama3.2")).status_code == 404
    retry = await http.post("/models/create", json={"from": "ai/llama3.2"}, headers={"Accept": "application/json"})
    assert pull_lines(retry)[-1]["message"] == "Model pulled successfully"


async def test_at_most_two_pulls_run_at_once(emu: RunningEmulator, http: httpx.AsyncClient) -> None:
    await emu.state.store.pull_slots.acquire()
    await emu.state.store.pull_slots.acquire()
    third = asyncio.create_task(http.post("/models/create", json={"from": "ai/embeddinggemma"}))
    done, _ = await asyncio.wait({third}, timeout=0.3)
    assert not done
    emu.state.store.pull_slots.release()
    assert (await third).status_code == 200
    emu.state.store.pull_slots.release()


@pytest.mark.parametrize(
    "name", ["ai/smollm2", "ai/smollm2:latest", "docker.io/ai/smollm2:latest", "smollm2", "SMOLLM2"]
)
async def test_get_model_by_tag_or_short_name(http: httpx.AsyncClient, name: str) -> None:
    response = await http.get(f"/models/{name}")
    assert response.status_code == 200
    assert response.json()["tags"] == SMOLLM2_ID_TAGS
    assert response.json()["config"]["context_size"] == 8192


async def test_get_model_by_id_and_not_found(http: httpx.AsyncClient) -> None:
    model_id = (await http.get("/models/smollm2")).json()["id"]
    assert (await http.get(f"/models/{model_id}")).json()["id"] == model_id
    assert (await http.get(f"/models/{model_id.removeprefix('sha256:')[:12]}")).json()["id"] == model_id
    missing = await http.get("/models/ai/nothing")
    assert (missing.status_code, missing.text) == (404, "model not found\n")


async def test_delete_untags_then_needs_force_for_an_id_with_several_tags(http: httpx.AsyncClient) -> None:
    await http.post("/models/create", json={"from": "ai/smollm2:360M-Q4_K_M"})
    model_id = (await http.get("/models/smollm2")).json()["id"]
    conflict = await http.delete(f"/models/{model_id}")
    assert conflict.status_code == 409
    assert conflict.text == (
        f'error while deleting model: unable to delete "{model_id}" (must be forced) due to '
        "multiple tag references: resource conflict\n"
    )
    untag = await http.delete("/models/ai/smollm2:360M-Q4_K_M")
    assert untag.json() == [{"Untagged": "docker.io/ai/smollm2:360M-Q4_K_M"}]
    await http.post("/models/create", json={"from": "ai/smollm2:360M-Q4_K_M"})
    forced = await http.delete(f"/models/{model_id}", params={"force": "true"})
    assert forced.json() == [
        {"Untagged": "docker.io/ai/smollm2:latest"},
        {"Untagged": "docker.io/ai/smollm2:360M-Q4_K_M"},
        {"Deleted": model_id},
    ]
    assert (await http.get("/models")).json() == []
    gone = await http.delete("/models/ai/smollm2")
    assert (gone.status_code, gone.text) == (404, "error while deleting model: model not found\n")


async def test_delete_of_the_last_tag_deletes_the_model(http: httpx.AsyncClient) -> None:
    model_id = (await http.get("/models/smollm2")).json()["id"]
    response = await http.delete("/models/ai/smollm2")
    assert response.json() == [{"Untagged": "docker.io/ai/smollm2:latest"}, {"Deleted": model_id}]


# --- _configure: validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (b"", 400, "invalid request"),
        (b"[]", 400, "invalid request"),
        (b'{"model":"ai/smollm2","mode":"chat"}', 400, "invalid request"),
        (b'{"model":"ai/smollm2","mode":1}', 400, "invalid request"),
        (b'{"model":"ai/smollm2","keep_alive":300}', 400, "invalid request"),
        (b'{"model":"ai/smollm2","keep_alive":"abc"}', 400, "invalid request"),
        (b'{"model":"ai/smollm2","keep_alive":"5"}', 400, "invalid request"),
        (b'{"model":"ai/smollm2","keep_alive":""}', 400, "invalid request"),
        (b'{"model":"ai/smollm2","context-size":2147483648}', 400, "invalid request"),
        (b'{"model":"ai/smollm2","context-size":4096.5}', 400, "invalid request"),
        (b'{"model":"ai/smollm2","context-size":"4096"}', 400, "invalid request"),
        (b'{"model":"ai/smollm2","runtime-flags":"--threads 4"}', 400, "invalid request"),
        (b'{"model":"ai/smollm2","llamacpp":{"reasoning-budget":true}}', 400, "invalid request"),
        (b'{"model":"ai/smollm2","speculative":[]}', 400, "invalid request"),
        (
            b'{"model":"ai/smollm2","runtime-flags":["--foo"]}',
            500,
            'runtime flag "--foo" is not allowed for backend "llama.cpp"',
        ),
        (
            b'{"model":"ai/smollm2","runtime-flags":["--seed","-1"]}',
            500,
            'runtime flag "-1" is not allowed for backend "llama.cpp"',
        ),
        (
            b'{"model":"ai/smollm2","runtime-flags":["--seed=-l"]}',
            500,
            "invalid flag \"--seed=-l\": value cannot start with '-' unless followed by a digit",
        ),
        (
            b'{"model":"ai/smollm2","runtime-flags":["--grammar","a/b"]}',
            500,
            "invalid runtime flag \"a/b\": paths are not allowed (contains '/' or '\\\\')",
        ),
        (
            b'{"model":"ai/smollm2","runtime-flags":["--host","x"]}',
            500,
            'runtime flag "--host" is not allowed for backend "llama.cpp"',
        ),
        (
            b'{"model":"ai/smollm2","runtime-flags":["--max-num-seqs","8"]}',
            500,
            'runtime flag "--max-num-seqs" is not allowed for backend "llama.cpp"',
        ),
        (
            b'{"model":"ai/smollm2","raw-runtime-flags":"--threads \'4"}',
            500,
            "invalid runtime flags: invalid command line string",
        ),
        (
            b'{"model":"ai/smollm2","vllm":{"hf-overrides":{"bad-key":1}}}',
            500,
            'invalid hf_overrides key "bad-key": must contain only alphanumeric characters and underscores, '
            "and start with a letter or underscore",
        ),
        (
            b'{"model":"ai/smollm2","vllm":{"hf-overrides":{"rope":{"x y":1}}}}',
            500,
            'invalid hf_overrides nested key "x y" in "rope": must contain only alphanumeric characters and '
            "underscores, and start with a letter or underscore",
        ),
    ],
)
async def test_configure_rejections(http: httpx.AsyncClient, body: bytes, status: int, text: str) -> None:
    response = await http.post("/engines/_configure", content=body)
    assert (response.status_code, response.text, response.headers["content-type"]) == (status, text + "\n", TEXT)
    assert await configs(http) == []


@pytest.mark.parametrize(
    ("backend", "flags", "text"),
    [
        ("nope", ["--threads", "4"], "backend not found"),
        ("mlx", ["--threads", "4"], 'runtime flag "--threads" is not allowed for backend "mlx"'),
        ("vllm", ["--threads", "4"], 'runtime flag "--threads" is not allowed for backend "vllm"'),
    ],
)
async def test_configure_backend_path(http: httpx.AsyncClient, backend: str, flags: list[str], text: str) -> None:
    response = await configure(http, {"model": "ai/smollm2", "runtime-flags": flags}, backend)
    assert response.text == text + "\n"
    assert response.status_code == (404 if backend == "nope" else 500)


# --- _configure: storage and read-back -------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "read_back"),
    [
        ({"context-size": 4096}, {"context-size": 4096}),
        ({"Context-Size": 4096, "context_size": 99, "unknown": 1}, {"context-size": 4096}),
        ({"keep_alive": "10m"}, {"keep_alive": "10m0s"}),
        ({"keep_alive": "1h"}, {"keep_alive": "1h0m0s"}),
        ({"keep_alive": "0"}, {"keep_alive": "0s"}),
        ({"keep_alive": "-1"}, {"keep_alive": "-1"}),
        ({"keep_alive": "-5m"}, {"keep_alive": "-1"}),
        ({"keep_alive": "90s"}, {"keep_alive": "1m30s"}),
        ({"raw-runtime-flags": "--threads 4 --temp='0.7'"}, {"runtime-flags": ["--threads", "4", "--temp=0.7"]}),
        ({"runtime-flags": ["-t", "2"], "raw-runtime-flags": "--threads 4"}, {"runtime-flags": ["-t", "2"]}),
        ({"runtime-flags": [], "context-size": -1}, {"context-size": -1}),
        (
            {"speculative": {"draft_model": "ai/smollm2:135M-Q4_0", "num_tokens": 0, "min_acceptance_rate": 0.8}},
            {"speculative": {"draft_model": "ai/smollm2:135M-Q4_0", "min_acceptance_rate": 0.8}},
        ),
        ({"speculative": {}}, {"speculative": {}}),
        ({"llamacpp": {"reasoning-budget": -1}}, {"llamacpp": {"reasoning-budget": -1}}),
        (
            {
                "vllm": {
                    "hf-overrides": {"rope_scaling": {"factor": 4.0, "type": "yarn"}},
                    "gpu-memory-utilization": 0.5,
                }
            },
            {"vllm": {"hf-overrides": {"rope_scaling": {"factor": 4, "type": "yarn"}}, "gpu-memory-utilization": 0.5}},
        ),
        ({"vllm": {"hf-overrides": {}}}, {"vllm": {}}),
    ],
)
async def test_configure_read_back_normalisation(
    http: httpx.AsyncClient, sent: dict[str, Any], read_back: dict[str, Any]
) -> None:
    response = await configure(http, {"model": "ai/smollm2", **sent})
    assert (response.status_code, response.text) == (202, "")
    [entry] = await configs(http)
    model_id = (await http.get("/models/smollm2")).json()["id"]
    assert entry == {
        "Backend": "llama.cpp",
        "Model": "docker.io/ai/smollm2:latest",
        "ModelID": model_id,
        "Mode": "completion",
        "Config": read_back,
    }


async def test_configure_replaces_wholesale_and_keys_by_mode(http: httpx.AsyncClient) -> None:
    await configure(http, {"model": "ai/smollm2", "context-size": 4096, "keep_alive": "10m"})
    await configure(http, {"model": "ai/smollm2", "runtime-flags": ["--embeddings"]})
    await configure(http, {"model": "smollm2", "context-size": 2048})
    by_mode = {e["Mode"]: e["Config"] for e in await configs(http, "ai/smollm2")}
    assert by_mode == {"completion": {"context-size": 2048}, "embedding": {"runtime-flags": ["--embeddings"]}}


async def test_safetensors_model_switches_to_vllm(http: httpx.AsyncClient) -> None:
    await http.post("/models/create", json={"from": "ai/smollm2-vllm"})
    assert (await configure(http, {"model": "ai/smollm2-vllm", "context-size": 4096})).status_code == 202
    rejected = await configure(http, {"model": "ai/smollm2-vllm", "runtime-flags": ["--max-num-seqs", "8"]})
    assert rejected.status_code == 500
    accepted = await configure(http, {"model": "ai/smollm2-vllm", "runtime-flags": ["--max-num-seqs", "8"]}, "vllm")
    assert accepted.status_code == 202
    [entry] = await configs(http, "ai/smollm2-vllm")
    assert (entry["Backend"], entry["Config"]) == ("vllm", {"runtime-flags": ["--max-num-seqs", "8"]})


async def test_gguf_configured_on_vllm_path_stays_under_vllm(http: httpx.AsyncClient) -> None:
    assert (await configure(http, {"model": "ai/smollm2", "context-size": 1024}, "vllm")).status_code == 202
    assert [e["Backend"] for e in await configs(http)] == ["vllm"]


async def test_configure_before_pull_is_stored_under_the_raw_reference(
    emu: RunningEmulator, http: httpx.AsyncClient
) -> None:
    assert (await configure(http, {"model": "ai/llama3.2", "context-size": 4096})).status_code == 202
    await emu.state.settle()
    assert await configs(http) == []  # the raw reference is not in the store: omitted
    stored = (await http.get("/_emulator/state")).json()["configs"]
    assert [(c["model_id"], c["config"]) for c in stored] == [("ai/llama3.2", {"context-size": 4096})]
    await http.post("/models/create", json={"from": "ai/llama3.2"})
    [entry] = await configs(http)
    assert (entry["ModelID"], entry["Model"]) == ("ai/llama3.2", "docker.io/ai/llama3.2:latest")
    assert await configs(http, "ai/llama3.2") == []  # the filter compares with the resolved sha256 ID
    await http.post("/engines/v1/chat/completions", json={"model": "ai/llama3.2"}, headers={"X-Preload-Only": "true"})
    [view] = (await http.get("/engines/requests", params={"model": "ai/llama3.2"})).json()
    assert view["config"] == {"context-size": 131072}  # the stored config is never used


# --- runners: preload, busy, eviction --------------------------------------------------------


async def test_preload_after_configure_starts_a_runner_with_the_stored_config(
    emu: RunningEmulator, http: httpx.AsyncClient
) -> None:
    await configure(http, {"model": "ai/smollm2", "context-size": 4096, "keep_alive": "10m"})
    await emu.state.settle()
    [runner] = (await http.get("/engines/ps")).json()
    assert runner["backend_name"] == "llama.cpp"
    assert runner["model_name"] == "ai/smollm2"
    assert runner["mode"] == "completion"
    assert runner["keep_alive"] == "10m0s"
    assert "in_use" not in runner
    assert runner["last_used"] != "0001-01-01T00:00:00Z"
    [view] = (await http.get("/engines/requests")).json()
    assert view == {
        "count": 0,
        "model": emu.state.resolve_id("ai/smollm2"),
        "config": {"context-size": 4096, "keep_alive": "10m0s"},
        "records": [],
    }


async def test_requests_view_without_config_shows_the_packaged_context_size(http: httpx.AsyncClient) -> None:
    assert (await http.get("/engines/requests")).json() == []
    await http.post("/engines/v1/chat/completions", json={"model": "smollm2", "messages": [], "temperature": 1.0})
    [view] = (await http.get("/engines/requests", params={"model": "smollm2"})).json()
    assert (view["count"], view["config"]) == (1, {"context-size": 8192})
    [record] = view["records"]
    assert record["url"] == "/engines/v1/chat/completions"
    assert record["request"] == '{"messages":[],"model":"smollm2","temperature":1}'  # re-encoded like a Go map


async def test_busy_runner_makes_configure_answer_409_and_keeps_the_config(
    emu: RunningEmulator, http: httpx.AsyncClient
) -> None:
    await configure(http, {"model": "ai/smollm2", "context-size": 4096})
    await emu.state.settle()
    await control(http, "busy", {"model": "ai/smollm2"})
    [runner] = (await http.get("/engines/ps")).json()
    assert runner["in_use"] is True
    assert runner["last_used"] == "0001-01-01T00:00:00Z"
    busy = await configure(http, {"model": "ai/smollm2", "context-size": 8192})
    assert (busy.status_code, busy.text) == (409, "runner already active\n")
    assert (await configs(http))[0]["Config"] == {"context-size": 4096}
    same = await configure(http, {"model": "ai/smollm2", "context-size": 4096})
    assert same.status_code == 202  # an equal config is a no-op, busy or not
    await control(http, "busy", {"model": "ai/smollm2", "busy": False})
    assert (await configure(http, {"model": "ai/smollm2", "context-size": 8192})).status_code == 202
    await emu.state.settle()
    [view] = (await http.get("/engines/requests")).json()
    assert view["config"] == {"context-size": 8192}  # the idle runner was evicted and reloaded


async def test_conflict_storm(http: httpx.AsyncClient) -> None:
    await control(http, "conflicts", {"count": 2})
    statuses = [(await configure(http, {"model": "ai/smollm2", "context-size": n})).status_code for n in (1, 2, 3)]
    assert statuses == [409, 409, 202]


async def test_configure_while_loading_leaves_the_loading_runner_with_the_old_config(
    emu: RunningEmulator, http: httpx.AsyncClient
) -> None:
    await configure(http, {"model": "ai/smollm2", "context-size": 2048})
    await emu.state.settle()
    await http.post("/engines/unload", json={"models": ["ai/smollm2"]})
    await control(http, "loading", {"model": "ai/smollm2"})
    [loading] = (await http.get("/engines/ps")).json()
    assert loading["loading"] is True
    assert loading["last_used"] == "0001-01-01T00:00:00Z"
    assert (await configure(http, {"model": "ai/smollm2", "context-size": 8192})).status_code == 202
    await control(http, "loading", {"model": "ai/smollm2", "loading": False})
    await emu.state.settle()
    assert (await configs(http))[0]["Config"] == {"context-size": 8192}
    [view] = (await http.get("/engines/requests")).json()
    assert view["config"] == {"context-size": 2048}


@pytest.mark.parametrize(
    ("keep_alive", "before", "after"),
    [(None, 299, 1), ("10m", 599, 1), ("90s", 89, 1)],
)
async def test_idle_runner_is_evicted_after_its_keep_alive(
    emu: RunningEmulator, http: httpx.AsyncClient, keep_alive: str | None, before: float, after: float
) -> None:
    body: dict[str, Any] = {"model": "ai/smollm2", "context-size": 4096}
    if keep_alive:
        body["keep_alive"] = keep_alive
    await configure(http, body)
    await emu.state.settle()
    assert (await control(http, "advance", {"seconds": before}))["evicted"] == 0
    assert len((await http.get("/engines/ps")).json()) == 1
    assert (await control(http, "advance", {"seconds": after}))["evicted"] == 1
    assert (await http.get("/engines/ps")).json() == []
    assert (await http.get("/engines/requests")).json() == []  # the live-runner view goes with the runner
    assert len(await configs(http)) == 1  # the stored config stays


async def test_keep_alive_zero_evicts_at_once_and_minus_one_never(
    emu: RunningEmulator, http: httpx.AsyncClient
) -> None:
    await configure(http, {"model": "ai/smollm2", "keep_alive": "0"})
    await emu.state.settle()
    assert (await http.get("/engines/ps")).json() == []
    await configure(http, {"model": "ai/smollm2", "keep_alive": "-1"})
    await emu.state.settle()
    await control(http, "advance", {"seconds": 10**7})
    assert [r["keep_alive"] for r in (await http.get("/engines/ps")).json()] == ["-1"]


async def test_busy_runner_is_not_evicted(emu: RunningEmulator, http: httpx.AsyncClient) -> None:
    await control(http, "busy", {"model": "ai/smollm2"})
    assert (await control(http, "advance", {"seconds": 3600}))["evicted"] == 0


async def test_unload_semantics(emu: RunningEmulator, http: httpx.AsyncClient) -> None:
    await http.post("/models/create", json={"from": "ai/qwen3:0.6B-F16"})
    for model in ("ai/smollm2", "ai/qwen3:0.6B-F16"):
        await configure(http, {"model": model, "context-size": 1024})
        await configure(http, {"model": model, "mode": "embedding"})
        await http.post("/engines/v1/embeddings", json={"model": model}, headers={"X-Preload-Only": "true"})
    await emu.state.settle()
    assert len((await http.get("/engines/ps")).json()) == 4

    evict_only = await http.post("/engines/unload", json={"models": ["ai/smollm2"]})
    assert evict_only.json() == {"unloaded_runners": 2}
    assert len(await configs(http, "ai/smollm2")) == 2

    with_backend = await http.post("/engines/unload", json={"models": ["ai/qwen3:0.6B-F16"], "backend": "llama.cpp"})
    assert with_backend.json() == {"unloaded_runners": 2}
    assert await configs(http, "ai/qwen3:0.6B-F16") == []

    await control(http, "busy", {"model": "ai/smollm2"})
    everything = await http.post("/engines/unload", json={"all": True})
    assert everything.json() == {"unloaded_runners": 0}  # busy runners stay
    assert await configs(http) == []
    assert len((await http.get("/engines/ps")).json()) == 1

    bad = await http.post("/engines/unload", content=b'{"all":"yes"}')
    assert (bad.status_code, bad.text) == (400, "invalid request\n")


async def test_restart_forgets_configs_and_runners_but_keeps_models(
    emu: RunningEmulator, http: httpx.AsyncClient
) -> None:
    await configure(http, {"model": "ai/smollm2", "context-size": 4096})
    await emu.state.settle()
    boot = (await http.get("/_emulator/state")).json()["boot_id"]
    assert (await control(http, "restart"))["boot_id"] != boot
    assert await configs(http) == []
    assert (await http.get("/engines/ps")).json() == []
    assert (await http.get("/engines/requests")).json() == []
    assert [m["tags"] for m in (await http.get("/models")).json()] == [SMOLLM2_ID_TAGS]


# --- inference -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/engines/v1/chat/completions", "chat.completion"),
        ("/engines/llama.cpp/v1/chat/completions", "chat.completion"),
        ("/v1/chat/completions", "chat.completion"),
        ("/engines/v1/completions", "text_completion"),
        ("/v1/embeddings", "list"),
    ],
)
async def test_inference_answers(http: httpx.AsyncClient, path: str, kind: str) -> None:
    response = await http.post(path, json={"model": "ai/smollm2"})
    assert response.status_code == 200
    assert response.json()["object"] == kind


async def test_preload_only_answers_empty_once_ready(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/engines/v1/chat/completions", json={"model": "ai/smollm2"}, headers={"X-Preload-Only": "true"}
    )
    assert (response.status_code, response.content) == (200, b"")
    assert len((await http.get("/engines/ps")).json()) == 1


@pytest.mark.parametrize(
    ("path", "body", "status", "text"),
    [
        ("/engines/nope/v1/chat/completions", {"model": "ai/smollm2"}, 404, "backend not found"),
        ("/engines/v1/chat/completions", {}, 400, "model is required"),
        ("/engines/v1/chat/completions", {"model": 1}, 400, "invalid request"),
        (
            "/engines/v1/chat/completions",
            {"model": "ai/nothing"},
            404,
            "error while getting model: get model '\"ai/nothing\"': model not found",
        ),
        (
            "/engines/mlx/v1/chat/completions",
            {"model": "ai/smollm2"},
            503,
            "backend installation failed: MLX is only available on macOS ARM64",
        ),
        (
            "/engines/v1/images/generations",
            {"model": "ai/smollm2"},
            500,
            "unable to load runner: error waiting for runner to be ready: failed to get args for llama.cpp: "
            'unsupported backend mode "image-generation"',
        ),
    ],
)
async def test_inference_errors(
    http: httpx.AsyncClient, path: str, body: dict[str, Any], status: int, text: str
) -> None:
    response = await http.post(path, json=body)
    assert (response.status_code, response.text) == (status, text + "\n")


async def test_load_errors_surface_on_inference(http: httpx.AsyncClient) -> None:
    await http.post("/models/create", json={"from": "ai/smollm2-vllm"})
    await configure(http, {"model": "ai/smollm2-vllm", "vllm": {"gpu-memory-utilization": 1.5}}, "vllm")
    vllm = await http.post("/engines/v1/chat/completions", json={"model": "ai/smollm2-vllm"})
    assert (vllm.status_code, vllm.text) == (
        500,
        "unable to load runner: error waiting for runner to be ready: failed to get vLLM arguments: "
        "gpu-memory-utilization must be between 0.0 and 1.0, got 1.500000\n",
    )
    await configure(http, {"model": "ai/smollm2", "speculative": {"draft_model": "ai/smollm2:135M-Q4_0"}})
    draft = await http.post("/engines/v1/chat/completions", json={"model": "ai/smollm2"})
    assert draft.text == (
        "unable to load runner: error waiting for runner to be ready: failed to get draft model: "
        "error while getting model bundle: find model content: model not found\n"
    )
    assert (await http.get("/engines/ps")).json() == []


# --- CORS, counters, process -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (None, 200),
        ("http://localhost", 200),
        ("https://127.0.0.1", 200),
        ("http://evil.example", 403),
        ("http://localhost:3000", 403),
        ("https://ci.example", 200),
    ],
)
async def test_cors(origin: str | None, status: int) -> None:
    async with emulator(allowed_origins=["https://ci.example"]) as emu, httpx.AsyncClient(base_url=emu.url) as http:
        headers = {"Origin": origin} if origin else {}
        for path in ("/models", "/engines/ps", "/engines/_configure"):
            response = await http.get(path, headers=headers)
            assert response.status_code == status
            if status == 403:
                assert response.text == "Origin not allowed\n"
        assert (await http.get("/", headers={"Origin": "http://evil.example"})).status_code == 200


async def test_counters_count_engine_requests_per_route(http: httpx.AsyncClient) -> None:
    await control(http, "reset-counters")
    await configure(http, {"model": "ai/smollm2"})
    await configure(http, {"model": "ai/smollm2"}, "llama.cpp")
    await http.get("/engines/_configure")
    counters = (await http.get("/_emulator/state")).json()["counters"]
    assert counters == {
        "POST /engines/_configure": 1,
        "POST /engines/{backend}/_configure": 1,
        "GET /engines/_configure": 1,
    }


async def test_status_df_and_openai_models(http: httpx.AsyncClient) -> None:
    status = (await http.get("/engines/status")).json()
    assert status["llama.cpp"].startswith("Running")
    assert status["vllm"].startswith("Running")
    assert status["mlx"].startswith("Not Installed")
    assert (await http.get("/engines/df")).json()["models_disk_usage"] == 268_836_256
    listing = (await http.get("/engines/v1/models")).json()
    assert listing["object"] == "list"
    assert [(m["id"], m["dmr"]["context_window"]) for m in listing["data"]] == [("docker.io/ai/smollm2:latest", 8192)]


async def test_hugging_face_references_are_stored_under_huggingface_co(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/models/create",
        json={"from": "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF"},
        headers={"Accept": "application/json"},
    )
    assert pull_lines(response)[-1]["type"] == "success"
    model = (await http.get("/models/huggingface.co/bartowski/smollm2-135m-instruct-gguf")).json()
    assert model["tags"] == ["huggingface.co/bartowski/smollm2-135m-instruct-gguf:latest"]


async def test_control_catalog_adds_pullable_and_prepulled_models(http: httpx.AsyncClient) -> None:
    added = await control(http, "catalog", {"name": "ai/tiny", "tags": ["latest", "1M"], "context_size": 512})
    assert added["refs"] == ["ai/tiny:latest", "ai/tiny:1M"]
    assert (await http.get("/models/ai/tiny")).status_code == 404
    await http.post("/models/create", json={"from": "ai/tiny:1M"})
    assert (await http.get("/models/ai/tiny:1M")).json()["config"]["context_size"] == 512
    await control(http, "catalog", {"name": "ai/other", "pulled": True})
    assert (await http.get("/models/other")).status_code == 200
    bad = await http.post("/_emulator/catalog", json={"name": "ai/x", "colour": "red"})
    assert bad.status_code == 400


async def test_latency_delays_engine_requests_but_not_the_control_api(http: httpx.AsyncClient) -> None:
    await control(http, "latency", {"seconds": 0.2})
    loop = asyncio.get_running_loop()
    started = loop.time()
    await http.get("/engines/ps")
    assert loop.time() - started >= 0.2
    await control(http, "latency", {"seconds": 0})


def test_emulator_thread_serves_synchronous_code() -> None:
    with emulator_thread(preload_models=["ai/smollm2"]) as emu:
        response = httpx.post(emu.url + "/engines/_configure", json={"model": "ai/smollm2", "context-size": 1024})
        assert response.status_code == 202
        assert len(emu.state.config_entries()) == 1


def test_catalog_file_entries_and_errors(tmp_path: Any) -> None:
    good = tmp_path / "catalog.yaml"
    good.write_text("- name: ai/tiny\n  tags: [latest, 1M]\n  format: safetensors\n  context_size: 512\n")
    [artifact] = load_artifacts(good)
    assert (artifact.refs(), artifact.format, artifact.context_size) == (
        ["ai/tiny:latest", "ai/tiny:1M"],
        "safetensors",
        512,
    )
    bad = tmp_path / "catalog.json"
    bad.write_text('[{"tags": ["latest"]}]')
    with pytest.raises(ValueError, match="entry 0 needs a string 'name'"):
        load_artifacts(bad)


@pytest.mark.parametrize(
    ("size_bytes", "fmt", "text"),
    [
        (864, "gguf", "864B"),
        (3_147_744, "gguf", "3MiB"),
        (268_836_256, "gguf", "256.38MiB"),
        (1_000_500, "gguf", "1MB"),
        (724_000_000, "safetensors", "724.00MB"),
        (0, "safetensors", "n/a"),
    ],
)
def test_sizes_are_written_as_model_runner_writes_them(size_bytes: int, fmt: str, text: str) -> None:
    assert format_size(size_bytes, fmt) == text
