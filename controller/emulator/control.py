"""The emulator's control API under /_emulator/: what tests use to restart or disturb the engine (not part of DMR).

Its routes are documented in `controller.emulator`. It is kept apart from the engine's routes (app.py)
because it follows none of the engine's rules: JSON in and out with `{"error": ...}` naming the
field, never Go's plain-text errors; not counted in `counters`, never delayed by `latency`. It only
turns the knobs the state's parts expose (the loader's busy and loading marks, the store's pull
failure and registry, the clock, the latency and pending conflicts); it keeps no state of its own.
Like the engine routes, it is behind the CORS check (app.py's middleware), so a web page cannot
restart the emulator.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from controller.emulator.catalog import artifact_from_json
from controller.emulator.render import CONNECTIONS_KEY, go_json, go_json_text, state_of
from controller.emulator.runners import Runner
from controller.emulator.store import PullFailure
from controller.engine.errors import EngineError

PREFIX = "/_emulator/"
# Bounds of the control API's numbers (finite, >= 0, at most these).
MAX_LATENCY = 3600.0  # seconds
MAX_ADVANCE = 1e10  # seconds (some 300 years)
MAX_CONFLICTS = 1_000_000
MAX_AFTER_BYTES = 2**53
# What a busy/loading answer shows of the runner.
_RUNNER_FIELDS = ("backend", "model_id", "model_ref", "mode", "loading", "in_use", "config")


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
    shown = runner.to_json()
    return {key: shown[key] for key in _RUNNER_FIELDS}


async def control_restart(request: web.Request) -> web.Response:
    state = state_of(request)
    state.restart()
    connections = request.app[CONNECTIONS_KEY]
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
    runners = state_of(request).runners
    setter = runners.set_busy if flag == "busy" else runners.set_loading
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
    state_of(request).store.pull_failure = PullFailure(after, message)
    return go_json({"armed": True})


async def control_latency(request: web.Request) -> web.Response:
    state = state_of(request)
    state.latency = _number(await _control_body(request), "seconds", MAX_LATENCY)
    return go_json({"seconds": state.latency})


async def control_conflicts(request: web.Request) -> web.Response:
    state = state_of(request)
    state.pending_conflicts = int(_number(await _control_body(request), "count", MAX_CONFLICTS, integer=True))
    return go_json({"count": state.pending_conflicts})


async def control_advance(request: web.Request) -> web.Response:
    state = state_of(request)
    evicted = state.advance(_number(await _control_body(request), "seconds", MAX_ADVANCE))
    return go_json({"evicted": evicted, "now": state.now()})


async def control_state(request: web.Request) -> web.Response:
    return go_json(state_of(request).snapshot())


async def control_reset_counters(request: web.Request) -> web.Response:
    state_of(request).counters.clear()
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
    state = state_of(request)
    state.store.catalog.add(artifact)
    if pulled:
        for ref in artifact.refs():
            found = state.store.catalog.lookup(ref)
            if found is not None:
                state.store.add_model(*found)
    return go_json({"id": artifact.digest, "refs": artifact.refs()})


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the control API on an application's router."""
    router.add_post(PREFIX + "restart", control_restart)
    router.add_post(PREFIX + "busy", control_runner_flag)
    router.add_post(PREFIX + "loading", control_runner_flag)
    router.add_post(PREFIX + "fail-next-pull", control_fail_next_pull)
    router.add_post(PREFIX + "latency", control_latency)
    router.add_post(PREFIX + "conflicts", control_conflicts)
    router.add_post(PREFIX + "advance", control_advance)
    router.add_get(PREFIX + "state", control_state)
    router.add_post(PREFIX + "reset-counters", control_reset_counters)
    router.add_post(PREFIX + "catalog", control_catalog)
