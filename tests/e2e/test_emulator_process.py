"""The `localmodel emulator` process: serves the engine's API on the port it was given and stops on SIGTERM."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.support.emulator import emulator_process

pytestmark = pytest.mark.e2e


def test_localmodel_emulator_process_serves_and_stops_on_sigterm() -> None:
    with emulator_process("--preload-models", "ai/smollm2") as proc:
        response = httpx.get(proc.url + "/models/smollm2")
        assert response.json()["tags"] == ["docker.io/ai/smollm2:latest"]
        proc.process.send_signal(signal.SIGTERM)
        assert proc.process.wait(timeout=10) == 0
