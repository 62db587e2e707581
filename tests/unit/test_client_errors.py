"""EngineClient at the transport level (httpx.MockTransport): status codes to typed errors, defensive parsing,
request shapes. The behaviour against a real HTTP server is in tests/contract."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from controller.engine.client import MAX_EXCHANGES, EngineClient
from controller.engine.errors import (
    BackendNotInstalled,
    BadRequest,
    DeleteConflict,
    EngineError,
    EngineRejected,
    EngineTooSlow,
    EngineUnreachable,
    LoadFailed,
    ModelNotInRegistry,
    NotFound,
    PullFailed,
    PullRejected,
    RunnerBusy,
    ServerError,
)
from controller.engine.types import Endpoint, PullProgress

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, endpoint: Endpoint | str = "http://engine:12434") -> EngineClient:
    return EngineClient(endpoint, transport=httpx.MockTransport(handler))


def answer(status: int, body: str = "", content_type: str = "text/plain; charset=utf-8") -> Handler:
    return lambda request: httpx.Response(status, text=body, headers={"Content-Type": content_type})


CONFIGURE_ERRORS = [
    (409, "runner already active\n", RunnerBusy, "runner already active", True),
    (
        500,
        'runtime flag "--foo" is not allowed for backend "llama.cpp"\n',
        EngineRejected,
        'runtime flag "--foo" is not allowed for backend "llama.cpp"',
        False,
    ),
    (400, "invalid request\n", BadRequest, "invalid request", False),
    (404, "backend not found\n", NotFound, "backend not found", False),
    (503, "service unavailable\n", ServerError, "unexpected answer 503: service unavailable", True),
]


@pytest.mark.parametrize(("status", "body", "error", "message", "retryable"), CONFIGURE_ERRORS)
async def test_configure_errors_keep_the_engine_text(
    status: int, body: str, error: type[EngineError], message: str, retryable: bool
) -> None:
    async with client_for(answer(status, body)) as engine:
        with pytest.raises(error) as caught:
            await engine.configure({"model": "ai/x"}, backend="llama.cpp")
    assert type(caught.value) is error
    assert caught.value.message == message
    assert caught.value.status == status
    assert caught.value.url == "http://engine:12434/engines/llama.cpp/_configure"
    assert caught.value.retryable is retryable


async def test_configure_sends_the_body_as_json_without_origin() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    async with client_for(handler) as engine:
        await engine.configure({"model": "ai/x", "context-size": 8192})
    assert seen[0].method == "POST"
    assert seen[0].url.path == "/engines/_configure"
    assert json.loads(seen[0].content) == {"model": "ai/x", "context-size": 8192}
    assert "origin" not in seen[0].headers
    assert engine.requests_sent == 1


async def test_desktop_prefix_is_on_every_path() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json={"llama.cpp": "Running: llama.cpp"})

    async with client_for(handler, Endpoint(url="http://localhost", prefix="/exp/vDD4.40")) as engine:
        assert await engine.status() == {"llama.cpp": "Running: llama.cpp"}
    assert paths == ["/exp/vDD4.40/engines/status"]


MALFORMED = [
    ("not json", "<html>oops</html>", "not JSON"),
    ("wrong type", '{"a": 1}', "body: expected list, got {'a': 1}"),
    ("missing key", '[{"Model": "ai/x"}]', "missing 'Backend'"),
    ("wrong field type", '[{"Backend": 1, "ModelID": "sha256:a"}]', "field 'Backend': expected str, got 1"),
    ("config not an object", '[{"Backend": "llama.cpp", "ModelID": "x", "Config": []}]', "field 'Config'"),
]


@pytest.mark.parametrize(("body", "detail"), [(b, d) for _, b, d in MALFORMED], ids=[n for n, _, _ in MALFORMED])
async def test_malformed_answers_are_server_errors(body: str, detail: str) -> None:
    async with client_for(answer(200, body, "application/json")) as engine:
        with pytest.raises(ServerError, match="malformed answer from the engine") as caught:
            await engine.stored_configs()
    assert detail in caught.value.message
    assert (caught.value.status, caught.value.url) == (200, "http://engine:12434/engines/_configure")


async def test_null_list_is_empty() -> None:
    async with client_for(answer(200, "null", "application/json")) as engine:
        assert await engine.ps() == []


async def test_connection_refused_is_unreachable_with_the_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("All connection attempts failed", request=request)

    async with client_for(handler) as engine:
        with pytest.raises(EngineUnreachable, match="http://engine:12434/version") as caught:
            await engine.version()
        assert await engine.ping() is False
    assert caught.value.retryable
    assert engine.requests_sent == 2


def ndjson(*lines: dict[str, Any]) -> Handler:
    body = "".join(json.dumps(line) + "\n" for line in lines)
    return lambda request: httpx.Response(200, text=body, headers={"Content-Type": "application/json"})


PROGRESS = {
    "type": "progress",
    "message": "Downloaded 1 MB",
    "total": 10,
    "layer": {"id": "sha256:l", "size": 10, "current": 1},
}


async def test_pull_reports_each_line_and_the_success() -> None:
    seen: list[PullProgress] = []
    success = {"type": "success", "message": "Model pulled successfully"}
    async with client_for(ndjson(PROGRESS, success)) as engine:
        result = await engine.pull("ai/x", on_progress=seen.append)
    assert [p.type for p in seen] == ["progress", "success"]
    assert seen[0] == PullProgress(type="progress", message="Downloaded 1 MB", total=10, current=1, layer="sha256:l")
    assert (result.message, result.cached) == ("Model pulled successfully", False)


@pytest.mark.parametrize(
    ("handler", "error", "message"),
    [
        (ndjson(PROGRESS, {"type": "error", "message": "Error: unexpected EOF"}), PullFailed, "Error: unexpected EOF"),
        (ndjson(PROGRESS), PullFailed, "pull stream ended without success"),
        (answer(200, "{not json\n", "application/json"), ServerError, "malformed answer"),
        (answer(404, "Model not found\n"), ModelNotInRegistry, "Model not found"),
        (answer(400, "Invalid model reference\n"), BadRequest, "Invalid model reference"),
        (answer(401, "Unauthorized\n"), PullRejected, "Unauthorized"),
        (answer(422, "unsupported media type\n"), PullRejected, "unsupported media type"),
        (answer(500, "registry said no\n"), PullFailed, "registry said no"),
        (
            answer(500, "error while pulling model: dial tcp: lookup registry-1.docker.io: i/o timeout\n"),
            PullFailed,
            "i/o timeout",
        ),
        (
            answer(
                500,
                "error while pulling model: failed to resolve reference: unexpected status from HEAD request"
                ": 401 Unauthorized (insufficient_scope)\n",
            ),
            ModelNotInRegistry,
            "insufficient_scope",
        ),
    ],
)
async def test_pull_failures(handler: Handler, error: type[EngineError], message: str) -> None:
    async with client_for(handler) as engine:
        with pytest.raises(error) as caught:
            await engine.pull("ai/x")
    assert type(caught.value) is error
    assert message in caught.value.message


async def test_pull_sends_ref_token_and_accept_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ndjson({"type": "success", "message": "Using cached model: 256 MiB"})(request)

    async with client_for(handler) as engine:
        result = await engine.pull("ai/x", bearer_token="t0k")
    assert result.cached
    assert json.loads(seen[0].content) == {"from": "ai/x", "bearer-token": "t0k"}
    assert seen[0].headers["accept"] == "application/json"


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, LoadFailed), (404, NotFound), (412, BackendNotInstalled), (503, ServerError)],
)
async def test_preload_errors(status: int, error: type[EngineError]) -> None:
    async with client_for(answer(status, "unable to load runner: boom\n")) as engine:
        with pytest.raises(error) as caught:
            await engine.preload("ai/x", backend="vllm")
    assert type(caught.value) is error
    assert caught.value.url == "http://engine:12434/engines/vllm/v1/chat/completions"


async def test_preload_of_a_backend_that_cannot_be_installed_is_not_retried() -> None:
    text = "backend installation failed: MLX is only available on macOS ARM64"
    async with client_for(answer(503, text + "\n")) as engine:
        with pytest.raises(BackendNotInstalled) as caught:
            await engine.preload("ai/x", backend="mlx")
    assert (caught.value.message, caught.value.status, caught.value.retryable) == (text, 503, False)


async def test_preload_marks_the_request_preload_only() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    async with client_for(handler) as engine:
        await engine.preload("ai/x")
    assert seen[0].headers["x-preload-only"] == "true"
    assert json.loads(seen[0].content) == {"model": "ai/x"}


async def test_delete_with_several_tags_says_use_force() -> None:
    async with client_for(answer(409, "model has multiple tags\n")) as engine:
        with pytest.raises(DeleteConflict, match="delete with force"):
            await engine.delete_model("ai/x")


async def test_unload_sends_every_field_and_returns_the_count() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"unloaded_runners": 2})

    async with client_for(handler) as engine:
        assert await engine.unload(models=["ai/x"], backend="llama.cpp") == 2
    assert json.loads(seen[0].content) == {"all": False, "backend": "llama.cpp", "models": ["ai/x"]}


async def test_runner_configs_skip_models_without_a_live_runner() -> None:
    body = [
        {"count": 1, "model": "sha256:a", "config": {"context-size": 4096}, "records": []},
        {"count": 3, "model": "sha256:b", "records": []},
        {"count": 0, "model": "sha256:c", "config": None, "records": []},
        {"count": 0, "model": "sha256:d", "config": {}, "records": []},
    ]
    async with client_for(answer(200, json.dumps(body), "application/json")) as engine:
        live = await engine.runner_configs()
    assert [(r.model_id, r.config) for r in live] == [("sha256:a", {"context-size": 4096}), ("sha256:d", {})]


async def test_ps_zero_time_is_no_last_use() -> None:
    body = [
        {
            "backend_name": "llama.cpp",
            "model_name": "ai/x",
            "mode": "completion",
            "last_used": "0001-01-01T00:00:00Z",
            "in_use": True,
        }
    ]
    async with client_for(answer(200, json.dumps(body), "application/json")) as engine:
        (runner,) = await engine.ps()
    assert runner.in_use
    assert not runner.loading
    assert runner.last_used is None
    assert runner.keep_alive is None


async def test_a_client_has_at_most_a_few_short_exchanges_in_flight_and_a_preload_never_waits_for_them() -> None:
    in_flight: list[str] = []
    most = 0
    answered, full = asyncio.Event(), asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal most
        in_flight.append(request.url.path)
        most = max(most, len(in_flight))
        if len(in_flight) >= MAX_EXCHANGES:
            full.set()
        try:
            if request.headers.get("X-Preload-Only") != "true":
                await answered.wait()  # a slow engine: the short exchanges hang until the test says
            return httpx.Response(200, json=[])
        finally:
            in_flight.remove(request.url.path)

    client = EngineClient("http://engine:12434", transport=httpx.MockTransport(handler))
    reads = [asyncio.create_task(client.stored_configs()) for _ in range(3 * MAX_EXCHANGES)]
    await asyncio.wait_for(full.wait(), 5)
    await asyncio.sleep(0.05)  # time for more to arrive, were there no turns
    assert len(in_flight) == MAX_EXCHANGES  # the others wait for a turn
    await asyncio.wait_for(client.preload("ai/smollm2"), 5)  # not queued behind them
    answered.set()
    assert await asyncio.gather(*reads) == [[]] * (3 * MAX_EXCHANGES)
    assert most == MAX_EXCHANGES + 1  # the preload beside the short ones


async def test_the_wait_for_a_turn_counts_in_the_deadline_and_says_the_request_was_not_sent() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(60)  # an engine that never answers
        return httpx.Response(200, json=[])

    client = EngineClient("http://engine:12434", transport=httpx.MockTransport(hang), deadline=0.3)
    results = await asyncio.gather(*(client.stored_configs() for _ in range(MAX_EXCHANGES + 1)), return_exceptions=True)
    # The last one's deadline ran out while it waited for a turn: it was never sent.
    messages = sorted(str(error) for error in results if isinstance(error, EngineTooSlow))
    assert len(messages) == MAX_EXCHANGES + 1, results
    assert sum("did not finish answering GET /engines/_configure within 0.3 s" in m for m in messages) == MAX_EXCHANGES
    assert sum(f"was not sent: the engine was still answering the {MAX_EXCHANGES} requests" in m for m in messages) == 1
