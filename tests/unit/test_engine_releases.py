"""Older model-runner releases: the client's parsing of their answers, the emulator emulating v1.0.10
(`localmodel emulator --engine-version 1.0`), and capability detection against it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from controller.commands.emulator import ENGINE_VERSIONS
from controller.emulator import EmulatorThread, running_emulator
from controller.emulator.state import EMULATED_RELEASES
from controller.engine import capabilities as caps
from controller.engine.client import EngineClient
from controller.engine.errors import BadRequest, EngineRejected, NotFound
from controller.engine.types import PullProgress
from controller.standalone.daemon import Clocks, Daemon
from tests.support.util import localmodel_yaml as localmodel

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


# ---- shown by `localmodel status` ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "shown"),
    [
        ("1.2", "engine release: model-runner v1.2.9-emulator (from GET /version); has every feature"),
        ("1.0", "engine release: model-runner older than v1.0.12 (no GET /version) (from no GET /version; _configure"),
    ],
)
def test_status_engine_shows_the_release_and_what_it_lacks(version: str, shown: str) -> None:
    with EmulatorThread(load_seconds=0, release=EMULATED_RELEASES[version]) as emulator:
        argv = [sys.executable, "-m", "controller", "status", "--engine", emulator.url]
        table = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        as_json = subprocess.run([*argv, "-o", "json"], capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert shown in table.stdout
    assert ("lacks " in table.stdout) is (version == "1.0")
    found = json.loads(as_json.stdout)["capabilities"]
    assert (caps.KEEP_ALIVE in found["lacks"]) is (version == "1.0")


async def test_the_daemon_keeps_the_engines_capabilities_in_its_status(tmp_path: Path) -> None:
    async with (
        running_emulator(load_seconds=0, preload_models=[MODEL], release=EMULATED_RELEASES["1.0"]) as emulator,
        EngineClient(emulator.url) as client,
    ):
        daemon = Daemon(tmp_path, client, interval=60.0, clocks=Clocks(jitter=lambda: 0.0))
        assert daemon.snapshot()["engine"]["capabilities"] is None  # not observed yet
        (tmp_path / "m.yaml").write_text(localmodel("m", MODEL, contextSize=4096, keepAlive="15m"))
        daemon.notice([tmp_path / "m.yaml"])
        await daemon.run_pass()
        await daemon.wait_idle()
        snapshot = daemon.snapshot()
    shown = snapshot["engine"]["capabilities"]
    assert shown["olderThan"] == "v1.0.12"
    assert caps.KEEP_ALIVE in shown["lacks"]
    (model,) = snapshot["models"]
    stalled = next(c for c in model["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "EngineUnsupported")
    assert model["engines"][0]["appliedConfig"] == {"context-size": 4096}


@pytest.mark.parametrize(("version", "code"), [("1.2", 0), ("1.0", 1)])
def test_apply_against_an_emulated_release(tmp_path: Path, version: str, code: int) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(localmodel("m", "ai/smollm2", contextSize=4096, keepAlive="15m"))
    argv = [sys.executable, "-m", "controller", "apply", "--emulator", "--emulator-version", version, "--wait"]
    done = subprocess.run([*argv, "--timeout", "60", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stdout + done.stderr
    assert ("EngineUnsupported: keepAlive needs model-runner >= v1.0.15" in done.stderr) is (version == "1.0")
    assert "timed out" not in done.stderr


def test_watch_offers_the_emulated_releases() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "controller", "watch", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--emulator-version {1.2,1.0}" in shown
