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
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from controller import wire
from controller.emulator.catalog import CREATED, Artifact, artifact_from_json, normalize_units
from controller.emulator.config import DecodeError, decode_object, go_encoded, plain
from controller.emulator.state import BACKEND_STATUS, EmulatorState, PullFailure, Runner
from controller.engine import capabilities as caps
from controller.engine.errors import EngineError

VERSION = "v1.2.9-emulator"
MAX_BODY = 10 * 1024 * 1024
CONTROL_PREFIX = "/_emulator/"
# The engine's CORS check covers /models, /engines and the aliases; the control API gets the same check (a web
# page must not restart the emulator or change its latency with a cross-site `text/plain` POST).
_CORS_PREFIXES = ("/models", "/engines", "/v1/", "/rerank", "/score", CONTROL_PREFIX)
# Bounds of the control API's numbers (finite, >= 0, at most these).
MAX_LATENCY = 3600.0  # seconds
MAX_ADVANCE = 1e10  # seconds (some 300 years)
MAX_CONFLICTS = 1_000_000
MAX_AFTER_BYTES = 2**53

_STATE_KEY = web.AppKey("state", EmulatorState)
# The connections engine requests came on: a restart closes them, as the real engine's process exit does
# (the engine watch takes a new connection for a restart).
_CONNECTIONS_KEY = web.AppKey("connections", set)
_INFERENCE_OPS = ("v1/chat/completions", "v1/completions", "v1/embeddings", "v1/images/generations", "rerank", "score")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- rendering -------------------------------------------------------------------------------


def go_error(status: int, message: str) -> web.Response:
    """Go's http.Error: plain text, the message plus a newline."""
    response = web.Response(status=status, text=message + "\n", content_type="text/plain", charset="utf-8")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def go_json_text(value: Any) -> str:
    """json.Encoder output: compact, `<`, `>`, `&` escaped, newline-terminated."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") + "\n"


def go_json(value: Any, status: int = 200) -> web.Response:
    """A JSON answer. `Content-Type: application/json` without a charset, as the engine sets it."""
    return web.Response(status=status, body=go_json_text(value).encode(), content_type="application/json")


def _html_escape(text: str) -> str:
    """Go's html.EscapeString."""
    return (
        text.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")
    )


def _state(request: web.Request) -> EmulatorState:
    return request.app[_STATE_KEY]


# --- middlewares -----------------------------------------------------------------------------


@web.middleware
async def go_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Engine errors and aiohttp's routing misses, rendered as the Go server renders them."""
    try:
        return await handler(request)
    except EngineError as exc:
        return go_error(exc.status or 500, exc.message)
    except web.HTTPMethodNotAllowed as exc:
        if not request.path.startswith(CONTROL_PREFIX):
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
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    state = _state(request)
    connections = request.app[_CONNECTIONS_KEY]
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
    if origin not in _state(request).allowed_origins:
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
    return go_json([m.to_json() for m in _state(request).models.values()])


async def get_model(request: web.Request) -> web.Response:
    state = _state(request)
    name = request.match_info["name"]
    model = state.lookup(name) or state.find_by_short_name(name)
    if model is None:
        return go_error(404, "model not found")
    return go_json(model.to_json())


async def delete_model(request: web.Request) -> web.Response:
    force = request.query.get(wire.QUERY_FORCE)
    forced = force is not None and (force == "" or force.lower() in ("1", "t", "true"))
    return go_json(_state(request).delete_model(request.match_info["name"], forced))


async def pull(request: web.Request) -> web.StreamResponse:
    """POST /models/create: at most two pulls at once; progress lines, then success (or an error line)."""
    state = _state(request)
    try:
        fields = decode_object(await request.read(), (wire.PULL_FROM, wire.BEARER_TOKEN))
        ref = fields.get(wire.PULL_FROM)
        if ref is not None and not isinstance(ref, str):
            raise DecodeError("from must be a string")
    except DecodeError:
        return go_error(400, "invalid request body")
    async with state.pull_slots:
        artifact, tag = state.pull_target(ref or "")
        as_json = request.headers.get("Accept") == "application/json"
        response = web.StreamResponse(status=200)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Content-Type"] = "application/json" if as_json else "text/plain"
        response.enable_chunked_encoding()
        await response.prepare(request)

        async def send(line: dict[str, Any]) -> None:
            text = json.dumps(line, separators=(",", ":")) + "\n"
            await response.write((text if as_json else _html_escape(text)).encode())

        try:
            if artifact.digest in state.models:
                state.add_model(artifact, tag)
                await send(_pull_line(wire.LINE_SUCCESS, f"Using cached model: {artifact.size}"))
            else:
                failure, state.pull_failure = state.pull_failure, None
                lines = _progress_lines(artifact, failure)
                for line in lines:
                    await send(line)
                    if state.pull_seconds:
                        await asyncio.sleep(state.pull_seconds / len(lines))
                if failure is not None:
                    await send(_pull_line(wire.LINE_ERROR, f"Error: {failure.message}"))
                    await response.write(
                        f"error while pulling model: writing image to store: {failure.message}\n".encode()
                    )
                else:
                    state.add_model(artifact, tag)
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
    return go_json(_state(request).running())


async def df(request: web.Request) -> web.Response:
    return go_json(_state(request).disk_usage())


async def unload(request: web.Request) -> web.Response:
    body = await request.read()
    if len(body) > MAX_BODY:
        return go_error(400, "request too large")
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
    count = _state(request).unload(bool(all_), backend or "", [m or "" for m in models or []])
    return go_json({wire.UNLOADED_RUNNERS: count})


async def configure(request: web.Request) -> web.Response:
    state = _state(request)
    backend = request.match_info.get("backend")
    if backend is not None and backend not in wire.BACKENDS:
        return go_error(404, "backend not found")
    body = await request.read()
    if len(body) > MAX_BODY:
        return go_error(400, "request too large")
    used_backend, model = state.configure(backend, body)
    if state.has(caps.PRELOAD_ONLY):  # older releases start no background load after a configure
        state.spawn(state.preload(used_backend, model))
    return web.Response(status=202)


async def get_configs(request: web.Request) -> web.Response:
    return go_json(_state(request).config_entries(request.query.get(wire.QUERY_MODEL) or None))


async def requests_view(request: web.Request) -> web.Response:
    return go_json(_state(request).requests_view(request.query.get(wire.QUERY_MODEL) or None))


async def openai_models(request: web.Request) -> web.Response:
    state = _state(request)
    name = request.match_info.get("name")
    models = list(state.models.values()) if name is None else [state.local_model(name)]
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
    state = _state(request)
    backend = request.match_info.get("backend")
    if backend is not None and backend not in wire.BACKENDS:
        return go_error(404, "backend not found")
    body = await request.read()
    if len(body) > MAX_BODY:
        return go_error(400, "request too large")
    try:
        model = decode_object(body, (wire.MODEL,)).get(wire.MODEL)
        if model is not None and not isinstance(model, str):
            raise DecodeError("model must be a string")
    except DecodeError:
        return go_error(400, "invalid request")
    if not model:
        return go_error(400, "model is required")
    runner = await state.acquire(backend, model, _mode_for_path(request.path))
    try:
        if request.headers.get(wire.PRELOAD_ONLY_HEADER) == "true" and state.has(caps.PRELOAD_ONLY):
            return web.Response(status=200)
        answer = _canned_answer(request.path, model)
        _record(state, runner, request, body, answer)
        return go_json(answer)
    finally:
        state.release(runner)


def _record(state: EmulatorState, runner: Runner, request: web.Request, body: bytes, answer: Any) -> None:
    now = state.now()
    state.record(
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


# --- control API -----------------------------------------------------------------------------


def _bad_control(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=go_json_text({"error": message}), content_type="application/json")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows: give a finite number")


async def _control_body(request: web.Request) -> dict[str, Any]:
    try:
        text = (await request.read()).decode("utf-8")
        if not text.strip():
            return {}
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, Infinity/NaN, a 5,000-digit integer
        raise _bad_control(f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _bad_control("expected a JSON object")
    return value


def _control_error(message: str, status: int = 400) -> web.Response:
    return go_json({"error": message}, status=status)


def _number(
    body: dict[str, Any], key: str, maximum: float, *, default: float | None = None, integer: bool = False
) -> float:
    """`body[key]`: a finite number from 0 to `maximum` (a whole one with `integer`), else 400 naming the bounds."""
    value = body.get(key, default)
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= maximum
        and (not integer or float(value).is_integer())
    ):
        return float(value)
    kind = "a whole number" if integer else "a number"
    raise _bad_control(f"'{key}' must be {kind} from 0 to {maximum:g}, got {json.dumps(value)}")


def _optional_string(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad_control(f"'{key}' must be a string, got {json.dumps(value)}")
    return value


def _runner_json(runner: Runner | None) -> dict[str, Any] | None:
    if runner is None:
        return None
    return {
        "backend": runner.backend,
        "model_id": runner.model_id,
        "model_ref": runner.model_ref,
        "mode": runner.mode,
        "loading": runner.loading,
        "in_use": runner.in_use,
        "config": runner.config.to_json(),
    }


async def control_restart(request: web.Request) -> web.Response:
    state = _state(request)
    state.restart()
    connections = request.app[_CONNECTIONS_KEY]
    for transport in [t for t in connections if t is not request.transport]:
        transport.close()  # a restarted engine keeps no connection
        connections.discard(transport)
    return go_json({"boot_id": state.boot_id})


async def control_runner_flag(request: web.Request) -> web.Response:
    """POST /_emulator/busy and /_emulator/loading."""
    body = await _control_body(request)
    flag = "busy" if request.path.endswith("/busy") else "loading"
    model, value = body.get("model"), body.get(flag, True)
    if not isinstance(model, str) or not model or not isinstance(value, bool):
        return _control_error(f'body must be {{"model": REF, "{flag}": true|false, "backend"?, "mode"?}}')
    backend, mode = _optional_string(body, "backend"), _optional_string(body, "mode")
    setter = _state(request).set_busy if flag == "busy" else _state(request).set_loading
    try:
        runner = setter(model, value, backend, mode)
    except EngineError as exc:
        return _control_error(exc.message, exc.status or 400)
    return go_json({"runner": _runner_json(runner)})


async def control_fail_next_pull(request: web.Request) -> web.Response:
    body = await _control_body(request)
    after = body.get("after_bytes")
    if after is not None:
        after = int(_number(body, "after_bytes", MAX_AFTER_BYTES, integer=True))
    message = body.get("message", "failed to download layer: unexpected EOF")
    if not isinstance(message, str):
        return _control_error("'message' must be a string")
    _state(request).pull_failure = PullFailure(after, message)
    return go_json({"armed": True})


async def control_latency(request: web.Request) -> web.Response:
    state = _state(request)
    state.latency = _number(await _control_body(request), "seconds", MAX_LATENCY)
    return go_json({"seconds": state.latency})


async def control_conflicts(request: web.Request) -> web.Response:
    state = _state(request)
    state.pending_conflicts = int(_number(await _control_body(request), "count", MAX_CONFLICTS, integer=True))
    return go_json({"count": state.pending_conflicts})


async def control_advance(request: web.Request) -> web.Response:
    state = _state(request)
    evicted = state.advance(_number(await _control_body(request), "seconds", MAX_ADVANCE))
    return go_json({"evicted": evicted, "now": state.now()})


async def control_state(request: web.Request) -> web.Response:
    return go_json(_state(request).snapshot())


async def control_reset_counters(request: web.Request) -> web.Response:
    _state(request).counters.clear()
    return go_json({"counters": {}})


async def control_catalog(request: web.Request) -> web.Response:
    """Add an artifact to the registry (and to the store when "pulled": true)."""
    body = await _control_body(request)
    pulled = body.pop("pulled", False)
    if not isinstance(pulled, bool):
        return _control_error(f"'pulled' must be true or false, got {json.dumps(pulled)}")
    try:
        artifact = artifact_from_json(body)
    except ValueError as exc:
        return _control_error(f"invalid artifact: {exc}")
    state = _state(request)
    state.catalog.add(artifact)
    if pulled:
        for ref in artifact.refs():
            found = state.catalog.lookup(ref)
            if found is not None:
                state.add_model(*found)
    return go_json({"id": artifact.digest, "refs": artifact.refs()})


# --- application -----------------------------------------------------------------------------


def create_app(state: EmulatorState | None = None, *, eviction_interval: float = 1.0) -> web.Application:
    """The emulator as an aiohttp application. A periodic task evicts idle runners every `eviction_interval`."""
    app = web.Application(middlewares=[go_errors, count_and_delay, cors], client_max_size=4 * MAX_BODY)
    app[_STATE_KEY] = state or EmulatorState()
    app[_CONNECTIONS_KEY] = set()
    routes = app.router
    routes.add_route("*", wire.ROUTE_ROOT, root)
    if app[_STATE_KEY].has(caps.VERSION_ROUTE):  # since v1.0.30; older releases answer 404 page not found
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
    routes.add_post(CONTROL_PREFIX + "restart", control_restart)
    routes.add_post(CONTROL_PREFIX + "busy", control_runner_flag)
    routes.add_post(CONTROL_PREFIX + "loading", control_runner_flag)
    routes.add_post(CONTROL_PREFIX + "fail-next-pull", control_fail_next_pull)
    routes.add_post(CONTROL_PREFIX + "latency", control_latency)
    routes.add_post(CONTROL_PREFIX + "conflicts", control_conflicts)
    routes.add_post(CONTROL_PREFIX + "advance", control_advance)
    routes.add_get(CONTROL_PREFIX + "state", control_state)
    routes.add_post(CONTROL_PREFIX + "reset-counters", control_reset_counters)
    routes.add_post(CONTROL_PREFIX + "catalog", control_catalog)
    app.cleanup_ctx.append(_periodic_eviction(eviction_interval))
    return app


def _periodic_eviction(interval: float) -> Callable[[web.Application], AsyncIterator[None]]:
    async def evictor(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                app[_STATE_KEY].evict_idle()

        task = asyncio.get_running_loop().create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return evictor
