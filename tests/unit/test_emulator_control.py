"""The emulator's control API refuses what a hostile page or a careless test could send (issue 10, case 11):
a cross-site request (Origin checked as on the engine routes), numbers that are not finite or out of
range, and any other malformed body; it never answers 500 to bad input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.emulator import EmulatorState, create_app
from controller.emulator.catalog import artifact_from_json

EVIL = "http://evil.example"
ROUTES = (
    "restart",
    "busy",
    "loading",
    "fail-next-pull",
    "latency",
    "conflicts",
    "advance",
    "reset-counters",
    "catalog",
)


@pytest.fixture
async def control() -> AsyncIterator[TestClient[Any, Any]]:
    state = EmulatorState(preload_models=["ai/smollm2"], load_seconds=0)
    async with TestClient(TestServer(create_app(state))) as client:
        yield client


@pytest.mark.parametrize("route", ROUTES)
async def test_a_cross_site_text_plain_post_is_refused(control: TestClient[Any, Any], route: str) -> None:
    boot = (await (await control.get("/_emulator/state")).json())["boot_id"]
    response = await control.post(
        f"/_emulator/{route}", data='{"seconds": 1}', headers={"Origin": EVIL, "Content-Type": "text/plain"}
    )
    assert response.status == 403
    assert await response.text() == "Origin not allowed\n"
    assert (await (await control.get("/_emulator/state")).json())["boot_id"] == boot


async def test_a_cross_site_read_of_the_state_is_refused(control: TestClient[Any, Any]) -> None:
    assert (await control.get("/_emulator/state", headers={"Origin": EVIL})).status == 403


async def test_an_allowed_origin_and_no_origin_still_work(control: TestClient[Any, Any]) -> None:
    assert (await control.post("/_emulator/restart", headers={"Origin": "http://localhost"})).status == 200
    assert (await control.post("/_emulator/restart")).status == 200


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("latency", '{"seconds": Infinity}', "Infinity"),
        ("latency", '{"seconds": NaN}', "NaN"),
        ("latency", '{"seconds": -Infinity}', "-Infinity"),
        ("latency", '{"seconds": 1e400}', "'seconds'"),
        ("latency", '{"seconds": 3601}', "'seconds' must be a number from 0 to 3600"),
        ("latency", '{"seconds": "1"}', "'seconds'"),
        ("advance", '{"seconds": Infinity}', "Infinity"),
        ("advance", '{"seconds": -1}', "'seconds'"),
        ("conflicts", '{"count": 1.5}', "'count' must be a whole number"),
        ("conflicts", '{"count": 1e12}', "'count'"),
        ("fail-next-pull", '{"after_bytes": Infinity}', "Infinity"),
        ("fail-next-pull", '{"after_bytes": -5}', "'after_bytes'"),
        ("busy", '{"model": "ai/smollm2", "backend": 7}', "'backend' must be a string"),
        ("catalog", '{"name": "ai/x", "layers": 0}', '"layers"'),
        ("catalog", '{"name": "ai/x", "size_bytes": Infinity}', "Infinity"),
        ("catalog", '{"name": "ai/x", "tags": "latest"}', '"tags"'),
        ("catalog", '{"name": "ai/x", "format": "exe"}', '"format"'),
        ("catalog", '{"name": "ai/x", "pulled": "yes"}', "'pulled'"),
        ("latency", '{"seconds": 1' + "0" * 5000 + "}", "invalid JSON"),
        ("latency", b'{"seconds": "\xff"}', "invalid JSON"),
    ],
)
async def test_bad_numbers_and_fields_are_400_with_a_message(
    control: TestClient[Any, Any], route: str, body: str | bytes, field: str
) -> None:
    response = await control.post(f"/_emulator/{route}", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400, await response.text()
    assert field in (await response.json())["error"]


async def test_latency_infinity_does_not_stop_the_engine_answering(control: TestClient[Any, Any]) -> None:
    await control.post("/_emulator/latency", data='{"seconds": Infinity}')
    assert (await control.get("/_emulator/state")).status == 200
    assert (await (await control.get("/_emulator/state")).json())["latency"] == 0
    assert (await control.get("/engines/ps")).status == 200


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_hostile_numbers = st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e400, -1, 10**30, 0.5, 2**63])
_value = _hostile_numbers | _json | st.sampled_from(["ai/smollm2", "llama.cpp", "vllm", "completion", ""])
# The keys each route reads: bodies built from them reach the validation, not only the "unknown" paths.
_ROUTE_KEYS = {
    "restart": [],
    "busy": ["model", "busy", "backend", "mode"],
    "loading": ["model", "loading", "backend", "mode"],
    "fail-next-pull": ["after_bytes", "message"],
    "latency": ["seconds"],
    "conflicts": ["count"],
    "advance": ["seconds"],
    "reset-counters": [],
    "catalog": ["name", "tags", "format", "context_size", "size_bytes", "layers", "pulled", "quantization"],
}


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, Any]:
    route = draw(st.sampled_from(ROUTES))
    keys = _ROUTE_KEYS[route] or ["seconds"]
    body = draw(st.dictionaries(st.sampled_from(keys), _value, max_size=len(keys)) | _json)
    if isinstance(body, dict) and route == "catalog" and draw(st.booleans()):
        body.setdefault("name", "ai/fuzz")
    return route, body


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=_requests())
def test_no_body_makes_the_control_api_answer_500(request: tuple[str, Any]) -> None:
    import asyncio

    route, body = request

    async def post() -> int:
        state = EmulatorState(preload_models=["ai/smollm2"], load_seconds=0)
        async with TestClient(TestServer(create_app(state))) as client:
            text = json.dumps(body)  # Python writes NaN and Infinity for float('nan') and float('inf')
            response = await client.post(f"/_emulator/{route}", data=text)
            if response.status < 500 and route == "catalog":  # a stored artifact must pull without a 500 too
                pulled = await client.post("/models/create", json={"from": "ai/fuzz"})
                return max(response.status, pulled.status)
            return response.status

    assert asyncio.run(post()) < 500


def test_a_catalog_entry_is_checked_field_by_field() -> None:
    assert artifact_from_json({"name": "ai/x", "tags": ["1B"], "layers": 2}).refs() == ["ai/x:1B"]
    with pytest.raises(ValueError, match="unknown fields"):
        artifact_from_json({"name": "ai/x", "colour": "red"})


async def test_the_control_api_over_real_http_refuses_cross_site_requests() -> None:
    from controller.emulator import running_emulator

    async with running_emulator(load_seconds=0) as emu, httpx.AsyncClient(base_url=emu.url) as http:
        refused = await http.post(
            "/_emulator/restart", content="{}", headers={"Origin": EVIL, "Content-Type": "text/plain"}
        )
        assert refused.status_code == 403
