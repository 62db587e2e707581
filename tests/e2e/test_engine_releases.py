"""`localmodel apply --wait` as a process against each real model-runner release (tests/peers/build).

The same LocalModel file, with a keepAlive, against v1.2.9 is Ready; against v1.0.10, which drops
keep_alive from _configure, it is Stalled with reason EngineUnsupported at once (not a VerifyFailed
retried until --timeout) while its contextSize is still applied."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.engine.compare import config_differences
from tests.e2e.daemon_process import DaemonProcess
from tests.support.peers import MAIN_MODEL, DMRServer
from tests.support.util import eventually

pytestmark = [pytest.mark.peers, pytest.mark.e2e]

SPEC = f"""\
apiVersion: localmodel.io/v1alpha1
kind: LocalModel
metadata:
  name: smollm2
spec:
  model: {MAIN_MODEL}
  contextSize: 4096
  keepAlive: 15m
"""
TIMEOUT = 60  # --timeout: far above what either release needs; reaching it fails the test


def apply(server: DMRServer, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "smollm2.yaml"
    path.write_text(SPEC)
    argv = [sys.executable, "-m", "controller", "apply", "--wait", "--timeout", str(TIMEOUT)]
    return subprocess.run(
        [*argv, "--engine", server.url, str(path)], capture_output=True, text=True, timeout=TIMEOUT + 30
    )


def stored(server: DMRServer) -> list[dict]:
    import httpx

    return [e["Config"] for e in httpx.get(f"{server.url}/engines/_configure", timeout=10).json()]


def test_a_keep_alive_spec_is_ready_on_v1_2_9(dmr_server_factory: Callable[..., DMRServer], tmp_path: Path) -> None:
    server = dmr_server_factory(models=[MAIN_MODEL], release="1.2")
    done = apply(server, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ready" in done.stdout
    (config,) = stored(server)
    assert config_differences({"context-size": 4096, "keep_alive": "15m"}, config) == []


@pytest.mark.dmr_1_0
def test_a_keep_alive_spec_stalls_engine_unsupported_on_v1_0_10(
    dmr_server_factory: Callable[..., DMRServer], tmp_path: Path
) -> None:
    server = dmr_server_factory(models=[MAIN_MODEL], release="1.0")
    done = apply(server, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "timed out" not in done.stderr  # it stopped because the model is Stalled, not at --timeout
    assert (
        "smollm2: stalled until the spec changes or the engine is upgraded: EngineUnsupported: keepAlive needs "
        "model-runner >= v1.0.15; "
        "this engine is older than v1.0.12 (it has no GET /version) — upgrade Docker Model Runner or remove keepAlive"
    ) in done.stderr
    assert "VerifyFailed" not in done.stdout + done.stderr
    # The fields the engine can keep are applied and verified.
    assert stored(server) == [{"context-size": 4096}]


def stalled_reason(model: dict | None) -> str | None:
    if model is None:
        return None
    stalled = next((c for c in model["conditions"] if c["type"] == "Stalled"), None)
    return stalled["reason"] if stalled and stalled["status"] == "True" else None


@pytest.mark.dmr_1_0
def test_the_daemon_keeps_the_other_fields_applied_on_v1_0_10(
    dmr_server_factory: Callable[..., DMRServer], tmp_path: Path
) -> None:
    """The real `localmodel watch` against v1.0.10: EngineUnsupported for keepAlive, the engine's release
    in GET /status, and after an engine restart (which forgets every config) contextSize is applied
    again although the model stays Stalled."""
    server = dmr_server_factory(models=[MAIN_MODEL], release="1.0")
    models = tmp_path / "models"
    models.mkdir()
    (models / "smollm2.yaml").write_text(SPEC)
    daemon = DaemonProcess(models, server.url, interval=1.0, log_path=tmp_path / "daemon.log")
    try:
        eventually(lambda: stalled_reason(daemon.model("smollm2")) == "EngineUnsupported", timeout=60, what="Stalled")
        assert stored(server) == [{"context-size": 4096}]
        engine = daemon.status()["engine"]
        assert engine["capabilities"]["olderThan"] == "v1.0.12"
        assert "keepAlive" in engine["capabilities"]["lacks"]
        server.restart()
        assert stored(server) == []
        eventually(lambda: stored(server) == [{"context-size": 4096}], timeout=60, what="contextSize re-applied")
        assert stalled_reason(daemon.model("smollm2")) == "EngineUnsupported"
    finally:
        daemon.close()
