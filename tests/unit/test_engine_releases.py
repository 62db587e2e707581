"""Older model-runner releases: the client's parsing of their answers, the emulator emulating v1.0.10
(`localmodel emulator --engine-version 1.0`), and capability detection against it."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from controller.commands.emulator import ENGINE_VERSIONS
from controller.emulator import running_emulator
from controller.emulator.state import EMULATED_RELEASES
from controller.engine import capabilities as caps
from controller.engine.client import EngineClient
from controller.engine.errors import BadRequest, EngineRejected, NotFound
from controller.engine.types import PullProgress

MODEL = "ai/smollm2:latest"


async def test_pull_progress_with_go_field_names_reports_the_layer() -> None:
    """v1.0.10 writes the layer as {"ID", "Size", "Current"} (v1.2.9: id, size, current)."""
    lines = [
        {
            "type": "progress",
            "message": "Downloaded: 1 MB",
            "total": 3,
            "pulled": 1,
            "layer": {"ID": "sha256:a", "Size": 3, "Current": 1},
        },
        {
            "type": "success",
            "message": "Model pulled successfully",
            "total": 0,
            "layer": {"ID": "", "Size": 0, "Current": 0},
        },
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text=body))
    seen: list[PullProgress] = []
    async with EngineClient("http://engine:12434", transport=transport) as client:
        await client.pull(MODEL, on_progress=seen.append)
    assert (seen[0].layer, seen[0].current, seen[0].total) == ("sha256:a", 1, 3)


def test_the_cli_offers_every_emulated_release() -> None:
    assert set(ENGINE_VERSIONS) == set(EMULATED_RELEASES)
    assert ENGINE_VERSIONS[0] == "1.2"
    shown = subprocess.run(
        [sys.executable, "-m", "controller", "emulator", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--engine-version {1.2,1.0}" in shown


@pytest.mark.parametrize(("version", "release"), sorted(EMULATED_RELEASES.items()))
async def test_detection_against_the_emulator_finds_the_emulated_release(version: str, release: str) -> None:
    async with (
        running_emulator(load_seconds=0, preload_models=[MODEL], release=release) as emulator,
        EngineClient(emulator.url) as client,
    ):
        found = await caps.detect(client)
        assert found.has(caps.KEEP_ALIVE) is (version != "1.0")
        assert (found.version is None) is (version == "1.0")
        assert await client.stored_configs() == []  # the probes stored nothing


async def test_the_v1_0_emulator_drops_keep_alive_and_checks_only_paths() -> None:
    async with (
        running_emulator(load_seconds=0, preload_models=[MODEL], release=EMULATED_RELEASES["1.0"]) as emulator,
        EngineClient(emulator.url) as client,
    ):
        with pytest.raises(NotFound):
            await client.version()
        await client.configure({"model": MODEL, "context-size": 4096, "keep_alive": "not a duration"})
        assert [e.config for e in await client.stored_configs(MODEL)] == [{"context-size": 4096}]
        await client.configure({"model": MODEL, "runtime-flags": ["--host", "0.0.0.0"]})
        assert [e.config for e in await client.stored_configs(MODEL)] == [{"runtime-flags": ["--host", "0.0.0.0"]}]
        with pytest.raises(EngineRejected, match="paths are not allowed"):
            await client.configure({"model": MODEL, "runtime-flags": ["--log-file", "/etc/passwd"]})
        with pytest.raises(BadRequest):
            await client.configure({"model": MODEL, "mode": "image-generation"})
        assert await client.ps() == []  # no background load after a configure
