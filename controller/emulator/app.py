"""HTTP layer of the emulator: DMR's routes on aiohttp, rendering `EmulatorState` the way the Go server does.

Fidelity details kept on purpose: error bodies are `text/plain; charset=utf-8` with the message and
a newline (Go's http.Error); JSON bodies end with a newline and escape `<`, `>`, `&` (Go's encoder);
unknown paths answer `404 page not found`, and `not found` under /engines, /models and the /v1,
/rerank, /score aliases, wrong methods there included (the engine's inner muxes end in a catch-all,
so Go never answers 405); `/` and `/version` answer any method; `/engines` and `/v1` redirect (307)
to their subtree, as do POST and DELETE on `/models`; a pull that fails midway has already answered 200, so it ends
with an `error` line and then the plain-text http.Error line the Go handler appends.
The control API under /_emulator/ is documented in `controller.emulator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from controller import wire
from controller.emulator import control
from controller.emulator.catalog import CREATED, Artifact, normalize_units
from controller.emulator.config import DecodeError, decode_object, go_encoded, plain
from controller.emulator.render import (
    CONNECTIONS_KEY,
    STATE_KEY,
    go_error,
    go_json,
    go_json_text,
    html_escape,
    state_of,
)
from controller.emulator.runners import BACKEND_STATUS, Runner
from controller.emulator.state import EmulatorState
from controller.emulator.store import PullFailure
from controller.engine import capabilities as caps
from controller.engine.errors import BadRequest, EngineError, NotFound

VERSION = "v1.2.9-emulator"
MAX_BODY = 10 * 1024 * 1024
# The engine's CORS check covers /models, /engines and the aliases; the control API gets the same check (a web
# page must not restart the emulator or change its latency with a cross-site `text/plain` POST).
_CORS_PREFIXES = ("/models", "/engines", "/v1/", "/rerank", "/score", control.PREFIX)
_INFERENCE_OPS = ("v1/chat/completions", "v1/completions", "v1/embeddings", "v1/images/generations", "rerank", "score")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- middlewares -----------------------------------------------------------------------------


@web.middleware
async def go_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Engine errors and aiohttp's routing misses, rendered as the Go server renders them."""
    try:
        return await handler(request)
    except EngineError as exc:
        return go_error(exc.status or 500, exc.message)
    except web.HTTPMethodNotAllowed as exc:
        if not request.path.startswith(control.PREFIX):
            return go_error(404, "not found")  # the inner mux's catch-all "/" takes every other method
        response = go_error(405, "Method Not Allowed")
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    except web.HTTPNotFound:
        inner = request.path.startswith(("/engines/", "/models/", "/v1/"))
        return go_error(404, "not found" if inner else "404 page not found")


@web.middleware
async def count_and_delay(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts requests per route (for tests and benchmarks) and applies the configured latency."""
    if request.path.startswith(control.PREFIX):
        return await handler(request)
    state = state_of(request)
    connections = request.app[CONNECTIONS_KEY]
    if request.transport is not None and request.transport not in connections:
        for closed in [t for t in connections if t.is_closing()]:
            connections.discard(closed)
        connections.add(request.transport)
    resource = request.match_info.route.resource
    state.count(f"{request.method} {resource.canonical if resource else request.path}")
    if state.latency > 0:
        await asyncio.sleep(state.latency)
    return await handler(request)


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """pkg/middleware/cors.go on /models, /engines and their aliases (and on the control API): a foreign
    Origin gets 403."""
    origin = request.headers.get("Origin", "")
    if not origin or not request.path.startswith(_CORS_PREFIXES):
        return await handler(request)
    if origin not in state_of(request).allowed_origins:
        return go_error(403, "Origin not allowed")
    if request.method == "OPTIONS":
        preflight = web.Response(status=204)
        preflight.headers.update(
            {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "GET, POST, DELETE",
                "Access-Control-Allow-Headers": "*",
            }
        )
        return preflight
    response = await handler(request)
    if not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = origin
    return response


def _path_backend(request: web.Request) -> str | None:
    """The `{backend}` of an `/engines/{backend}/...` path (None without one); an unknown one answers 404."""
    backend = request.match_info.get("backend")
    if backend is not None and backend not in wire.BACKENDS:
        raise NotFound("backend not found", status=404)
    return backend


async def _read_body(request: web.Request) -> bytes:
    """A request body as the engine's handlers read it: more than MAX_BODY answers 400 `request too large`."""
    body = await request.read()
    if len(body) > MAX_BODY:
        raise BadRequest("request too large", status=400)
    return body


# --- health ----------------------------------------------------------------------------------


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Docker Model Runner is running", content_type="text/plain", charset="utf-8")


async def version(request: web.Request) -> web.Response:
    return go_json({wire.VERSION: VERSION})


async def subtree_redirect(request: web.Request) -> web.Response:
    """Go's ServeMux for `/engines` (only `/engines/` is registered): 307 to the subtree, HTML body on GET."""
    location = request.path + "/" + (f"?{request.query_string}" if request.query_string else "")
    if request.method not in ("GET", "HEAD"):
        return web.Response(status=307, headers={"Location": location})
    return web.Response(
        status=307,
        text=f'<a href="{location}">Temporary Redirect</a>.\n\n',
        content_type="text/html",
        charset="utf-8",
        headers={"Location": location},
    )


# --- /models ---------------------------------------------------------------------------------


async def list_models(request: web.Request) -> web.Response:
    return go_json([m.to_json() for m in state_of(request).store.models.values()])


async def get_model(request: web.Request) -> web.Response:
    store = state_of(request).store
    name = request.match_info["name"]
    model = store.lookup(name) or store.find_by_short_name(name)
    if model is None:
        return go_error(404, "model not found")
    return go_json(model.to_json())


async def delete_model(request: web.Request) -> web.Response:
    force = request.query.get(wire.QUERY_FORCE)
    forced = force is not None and (force == "" or force.lower() in ("1", "t", "true"))
    return go_json(state_of(request).store.delete_model(request.match_info["name"], forced))


async def pull(request: web.Request) -> web.StreamResponse:
    """POST /models/create: at most two pulls at once; progress lines, then success (or an error line)."""
    store = state_of(request).store
    try:
        fields = decode_object(await request.read(), (wire.PULL_FROM, wire.BEARER_TOKEN))
        ref = fields.get(wire.PULL_FROM)
        if ref is not None and not isinstance(ref, str):
            raise DecodeError("from must be a string")
    except DecodeError:
        return go_error(400, "invalid request body")
    async with store.pull_slots:
        artifact, tag = store.pull_target(ref or "")
        as_json = request.headers.get("Accept") == "application/json"
        response = web.StreamResponse(status=200)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Content-Type"] = "application/json" if as_json else "text/plain"
        response.enable_chunked_encoding()
        await response.prepare(request)

        async def send(line: dict[str, Any]) -> None:
            text = json.dumps(line, separators=(",", ":")) + "\n"
            await response.write((text if as_json else html_escape(text)).encode())

        try:
            if artifact.digest in store.models:
                store.add_model(artifact, tag)
                await send(_pull_line(wire.LINE_SUCCESS, f"Using cached model: {artifact.size}"))
            else:
                failure = store.take_pull_failure()
                lines = _progress_lines(artifact, failure)
                for line in lines:
                    await send(line)
                    if store.pull_seconds:
                        await asyncio.sleep(store.pull_seconds / len(lines))
                if failure is not None:
                    await send(_pull_line(wire.LINE_ERROR, f"Error: {failure.message}"))
                    await response.write(
                        f"error while pulling model: writing image to store: {failure.message}\n".encode()
                    )
                else:
                    store.add_model(artifact, tag)
                    await send(_pull_line(wire.LINE_SUCCESS, "Model pulled successfully"))
            await response.write_eof()
        except ConnectionResetError:  # the client went away: the pull is cancelled, as the engine's context is
            pass
        return response


def _pull_line(kind: str, message: str, total: int = 0, layer: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        wire.PROGRESS_TYPE: kind,
        wire.PROGRESS_MESSAGE: message,
        wire.PROGRESS_TOTAL: total,
        wire.PROGRESS_LAYER: layer or {wire.LAYER_SIZE: 0, wire.LAYER_CURRENT: 0},
        wire.PROGRESS_MODE: "pull",
    }


def _progress_lines(artifact: Artifact, failure: PullFailure | None) -> list[dict[str, Any]]:
    """Four progress lines per layer; with a failure, only those up to `after_bytes` (default: half)."""
    total = artifact.size_bytes
    stop_at = total // 2 if failure is not None and failure.after_bytes is None else None
    if failure is not None and failure.after_bytes is not None:
        stop_at = failure.after_bytes
    per_layer = total // artifact.layers
    lines: list[dict[str, Any]] = []
    done = 0
    for index in range(artifact.layers):
        size = per_layer if index < artifact.layers - 1 else total - per_layer * (artifact.layers - 1)
        layer_id = "sha256:" + hashlib.sha256(f"{artifact.digest}/{index}".encode()).hexdigest()
        for step in (1, 2, 3, 4):
            current = size * step // 4
            if stop_at is not None and done + current > stop_at:
                return lines
            lines.append(
                _pull_line(
                    wire.LINE_PROGRESS,
                    f"Downloaded: {current / 1024 / 1024:.2f} MB",
                    total,
                    {wire.LAYER_ID: layer_id, wire.LAYER_SIZE: size, wire.LAYER_CURRENT: current},
                )
            )
        done += size
    return lines


# --- /engines management ---------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    return go_json(dict(sorted(BACKEND_STATUS.items())))  # a Go map: keys sorted


async def ps(request: web.Request) -> web.Response:
    return go_json(state_of(request).runners.running())


async def df(request: web.Request) -> web.Response:
    return go_json(state_of(request).store.disk_usage())


async def unload(request: web.Request) -> web.Response:
    body = await _read_body(request)
    try:
        fields = decode_object(body, (wire.UNLOAD_ALL, wire.UNLOAD_BACKEND, wire.UNLOAD_MODELS))
        all_ = fields.get(wire.UNLOAD_ALL)
        backend = fields.get(wire.UNLOAD_BACKEND)
        models = plain(fields.get(wire.UNLOAD_MODELS))
        if all_ is not None and not isinstance(all_, bool):
            raise DecodeError("all must be a boolean")
        if backend is not None and not isinstance(backend, str):
            raise DecodeError("backend must be a string")
        if models is not None and not (
            isinstance(models, list) and all(isinstance(m, (str, type(None))) for m in models)
        ):
            raise DecodeError("models must be an array of strings")
    except DecodeError:
        return go_error(400, "invalid request")
    count = state_of(request).runners.unload(bool(all_), backend or "", [m or "" for m in models or []])
    return go_json({wire.UNLOADED_RUNNERS: count})


async def configure(request: web.Request) -> web.Response:
    state = state_of(request)
    backend = _path_backend(request)
    body = await _read_body(request)
    used_backend, model = state.configure(backend, body)
    if state.has(caps.PRELOAD_ONLY):  # older releases start no background load after a configure
        state.spawn(state.runners.preload(used_backend, model))
    return web.Response(status=202)


async def get_configs(request: web.Request) -> web.Response:
    return go_json(state_of(request).configs.entries(request.query.get(wire.QUERY_MODEL) or None))


async def requests_view(request: web.Request) -> web.Response:
    return go_json(state_of(request).runners.requests_view(request.query.get(wire.QUERY_MODEL) or None))


async def openai_models(request: web.Request) -> web.Response:
    state = state_of(request)
    name = request.match_info.get("name")
    models = list(state.store.models.values()) if name is None else [state.store.local_model(name)]
    data = [
        {
            "id": m.tags[0] if m.tags else m.id,
            "object": "model",
            "created": CREATED,
            "owned_by": "docker",
            "dmr": {
                k: v
                for k, v in {
                    "context_window": m.artifact.context_size,
                    "architecture": m.artifact.architecture,
                    "parameters": normalize_units(m.artifact.parameters),
                    "quantization": m.artifact.quantization,
                    "size": m.artifact.size,
                }.items()
                if v
            },
        }
        for m in models
    ]
    return go_json(data[0] if name is not None else {"object": "list", "data": data})


# --- inference -------------------------------------------------------------------------------


def _mode_for_path(path: str) -> str:
    if path.endswith("/v1/embeddings"):
        return wire.EMBEDDING
    if path.endswith(("/rerank", "/score")):
        return wire.RERANKING
    if path.endswith("/v1/images/generations"):
        return wire.IMAGE_GENERATION
    return wire.COMPLETION


async def inference(request: web.Request) -> web.Response:
    """OpenAI inference: load (or reuse) the runner with the stored config, answer a tiny canned result."""
    state = state_of(request)
    backend = _path_backend(request)
    body = await _read_body(request)
    try:
        model = decode_object(body, (wire.MODEL,)).get(wire.MODEL)
        if model is not None and not isinstance(model, str):
            raise DecodeError("model must be a string")
    except DecodeError:
        return go_error(400, "invalid request")
    if not model:
        return go_error(400, "model is required")
    runner = await state.runners.acquire(backend, model, _mode_for_path(request.path))
    try:
        if request.headers.get(wire.PRELOAD_ONLY_HEADER) == "true" and state.has(caps.PRELOAD_ONLY):
            return web.Response(status=200)
        answer = _canned_answer(request.path, model)
        _record(state, runner, request, body, answer)
        return go_json(answer)
    finally:
        state.runners.release(runner)


def _record(state: EmulatorState, runner: Runner, request: web.Request, body: bytes, answer: Any) -> None:
    now = state.now()
    state.runners.record(
        runner,
        {
            "id": f"{runner.model_id}_{int(now * 1e9)}",
            "model": runner.model_ref,
            "method": request.method,
            "url": request.path,
            "request": _recorded_request(body),
            "response": go_json_text(answer),
            "timestamp": int(now),
            "status_code": 200,
            **({"user_agent": request.headers["User-Agent"]} if request.headers.get("User-Agent") else {}),
        },
    )


def _recorded_request(body: bytes) -> str:
    """The request as the recorder keeps it (truncateMediaFields): a body with a `messages` list is decoded
    and encoded again (a Go map: keys sorted, compact), any other body is kept as sent."""
    text = body.decode(errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        return text
    return go_json_text(go_encoded(data)).removesuffix("\n")


def _canned_answer(path: str, model: str) -> dict[str, Any]:
    created = int(time.time())
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    if path.endswith("/v1/embeddings"):
        return {
            "object": "list",
            "model": model,
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
            "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 0.1, 0.2, 0.3]}],
        }
    if path.endswith(("/rerank", "/score")):
        return {"model": model, "results": [{"index": 0, "relevance_score": 1.0}], "usage": usage}
    if path.endswith("/v1/images/generations"):
        return {"created": created, "data": []}
    if path.endswith("/v1/completions"):
        return {
            "id": "cmpl-emulator",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": "Hello from the DMR emulator.", "finish_reason": "stop"}],
            "usage": usage,
        }
    return {
        "id": "chatcmpl-emulator",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello from the DMR emulator."},
            }
        ],
        "usage": usage,
    }


# --- application -----------------------------------------------------------------------------


def create_app(state: EmulatorState | None = None, *, eviction_interval: float = 1.0) -> web.Application:
    """The emulator as an aiohttp application. A periodic task evicts idle runners every `eviction_interval`."""
    app = web.Application(middlewares=[go_errors, count_and_delay, cors], client_max_size=4 * MAX_BODY)
    app[STATE_KEY] = state or EmulatorState()
    app[CONNECTIONS_KEY] = set()
    routes = app.router
    routes.add_route("*", wire.ROUTE_ROOT, root)
    if app[STATE_KEY].has(caps.VERSION_ROUTE):  # since v1.0.30; older releases answer 404 page not found
        routes.add_route("*", wire.ROUTE_VERSION, version)
    routes.add_route("*", "/engines", subtree_redirect)
    routes.add_route("*", "/v1", subtree_redirect)
    routes.add_get(wire.ROUTE_MODELS, list_models)
    routes.add_post(wire.ROUTE_MODELS, subtree_redirect)
    routes.add_delete(wire.ROUTE_MODELS, subtree_redirect)
    routes.add_post(wire.ROUTE_PULL, pull)
    routes.add_get(wire.ROUTE_MODELS + "/{name:.*}", get_model)
    routes.add_delete(wire.ROUTE_MODELS + "/{name:.*}", delete_model)
    routes.add_get(wire.ROUTE_ENGINES_STATUS, status)
    routes.add_get(wire.ROUTE_PS, ps)
    routes.add_get(wire.ROUTE_DF, df)
    routes.add_post(wire.ROUTE_UNLOAD, unload)
    routes.add_get(wire.ROUTE_REQUESTS, requests_view)
    routes.add_get(wire.ROUTE_STORED_CONFIGS, get_configs)
    routes.add_post(wire.configure_path(None), configure)
    routes.add_post(wire.configure_path("{backend}"), configure)
    for prefix in ("/engines", "/engines/{backend}", ""):
        for op in _INFERENCE_OPS:
            routes.add_post(f"{prefix}/{op}", inference)
        routes.add_get(f"{prefix}/v1/models", openai_models)
        routes.add_get(f"{prefix}/v1/models/{{name:.+}}", openai_models)
    control.add_routes(routes)
    app.cleanup_ctx.append(_periodic_eviction(eviction_interval))
    return app


def _periodic_eviction(interval: float) -> Callable[[web.Application], AsyncIterator[None]]:
    async def evictor(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                app[STATE_KEY].runners.evict_idle()

        task = asyncio.get_running_loop().create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return evictor
