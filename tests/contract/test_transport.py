"""Health, inventory, request counting and transport failures over real sockets."""

from __future__ import annotations

import socket

import pytest

from controller.engine import capabilities as caps
from controller.engine.client import EngineClient
from controller.engine.errors import EngineUnreachable, NotFound
from tests.contract.conftest import Engine


async def test_health_version_status_and_disk_usage(engine: Engine) -> None:
    assert await engine.client.ping() is True
    if engine.has(caps.VERSION_ROUTE):
        assert await engine.client.version()
    else:  # v1.0.10: 404 page not found; capabilities are then probed (controller/engine/capabilities.py)
        with pytest.raises(NotFound):
            await engine.client.version()
    status = await engine.client.status()
    assert status["llama.cpp"].lower().startswith("running")  # "Running: llama.cpp ...", v1.0.10 "running llama.cpp"
    usage = await engine.client.df()
    assert usage["models_disk_usage"] > 0
    assert "default_backend_disk_usage" in usage


@pytest.mark.emulator_only("reads the emulator's request counters")
async def test_requests_sent_matches_what_the_engine_received(engine: Engine) -> None:
    await engine.client.stored_configs()
    await engine.client.ps()
    await engine.client.configure({"model": engine.model, "context-size": 4096})
    counters = (await engine.ctl.state())["counters"]
    assert engine.client.requests_sent == 3
    assert counters == {
        "GET /engines/_configure": 1,
        "GET /engines/ps": 1,
        "POST /engines/_configure": 1,
    }


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_closed_port_is_unreachable() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with EngineClient(url, timeout=2.0) as client:
        with pytest.raises(EngineUnreachable) as caught:
            await client.stored_configs()
        assert await client.ping() is False
    assert caught.value.url == f"{url}/engines/_configure"
    assert caught.value.retryable
    assert caught.value.status is None


@pytest.mark.emulator_only("slows the engine down")
async def test_slow_engine_times_out_as_unreachable(engine: Engine) -> None:
    await engine.ctl.latency(1.0)
    async with EngineClient(engine.url, timeout=0.1) as client:
        with pytest.raises(EngineUnreachable, match="did not answer in time"):
            await client.ps()
    await engine.ctl.latency(0)
    assert await engine.client.ps() == []
