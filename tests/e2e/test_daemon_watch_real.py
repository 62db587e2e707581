"""The daemon's engine watch against the real model-runner v1.2.9 (tests/peers/build), with default
settings (a 30 s drift pass, a 1 s watch): a restart, another client's overwrite and an unload of a
declared config are each caught and repaired; a request in flight during the repair finishes (the
fake llama-server holds completions while FAKE_LLAMA_BUSY_WHILE exists). Assertions are on the
engine's stored config and the daemon's DriftRepaired event."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.daemon_process import DaemonProcess, watching_two_models
from tests.support.peers import DRAFT_MODEL, MAIN_MODEL, DMRServer
from tests.support.util import eventually

pytestmark = [pytest.mark.peers, pytest.mark.e2e]

REPAIR_TIMEOUT = 15.0  # well inside the default 30 s drift pass: only the watch repairs in time


@pytest.fixture
def setup(
    dmr_server_factory: Callable[..., DMRServer], tmp_path: Path
) -> Iterator[tuple[DMRServer, DaemonProcess, Path]]:
    busy = tmp_path / "busy"
    server = dmr_server_factory(models=[MAIN_MODEL, DRAFT_MODEL], env={"FAKE_LLAMA_BUSY_WHILE": str(busy)})
    with watching_two_models(tmp_path, server.url, ("main", MAIN_MODEL), ("draft", DRAFT_MODEL), timeout=60) as daemon:
        yield server, daemon, busy


def context(server: DMRServer, model: str = MAIN_MODEL) -> Any:
    entries = httpx.get(f"{server.url}/engines/_configure", params={"model": model}, timeout=30).json()
    return entries[0]["Config"].get("context-size") if entries else None


def repaired(daemon: DaemonProcess, model: str = "main") -> list[str]:
    return [e["message"] for e in daemon.events() if e.get("event") == "DriftRepaired" and e.get("model") == model]


def back(server: DMRServer, daemon: DaemonProcess, what: str, cause: str) -> None:
    """The declared config is on the engine again, and the daemon's event says what had happened."""
    eventually(lambda: context(server) == 8192, timeout=REPAIR_TIMEOUT, what=what, every=0.1)
    eventually(lambda: any(cause in m for m in repaired(daemon)), timeout=10, what=f"{what}: event with {cause!r}")


def test_restart_overwrite_and_unload_on_the_real_engine(setup: tuple[DMRServer, DaemonProcess, Path]) -> None:
    server, daemon, _ = setup
    server.restart()
    back(server, daemon, "the config back after the restart", "engine restarted; config back after")

    httpx.post(f"{server.url}/engines/_configure", json={"model": MAIN_MODEL, "context-size": 4096}, timeout=30)
    back(server, daemon, "the config back after the overwrite", "overwritten by another client: context-size")

    unload = {"all": False, "backend": "llama.cpp", "models": [MAIN_MODEL]}
    httpx.post(f"{server.url}/engines/unload", json=unload, timeout=30).raise_for_status()
    back(server, daemon, "the config back after the unload", "removed by another client")
    assert context(server, DRAFT_MODEL) == 2048


def test_a_request_in_flight_during_the_repair_finishes(setup: tuple[DMRServer, DaemonProcess, Path]) -> None:
    server, daemon, busy = setup
    busy.touch()  # completions hang until the file is gone: a request in flight
    answers: list[int] = []

    def request() -> None:
        body = {"model": MAIN_MODEL, "messages": [{"role": "user", "content": "hi"}]}
        answers.append(httpx.post(f"{server.url}/engines/v1/chat/completions", json=body, timeout=120).status_code)

    client = threading.Thread(target=request)
    client.start()
    try:
        eventually(
            lambda: any(r.get("in_use") for r in httpx.get(f"{server.url}/engines/ps", timeout=10).json()),
            timeout=30,
            what="the runner busy with the request",
        )
        # Another client drops the config meanwhile; the busy runner stays (unload evicts idle runners).
        unload = {"all": False, "backend": "llama.cpp", "models": [MAIN_MODEL]}
        httpx.post(f"{server.url}/engines/unload", json=unload, timeout=30).raise_for_status()
        eventually(
            lambda: (daemon.model("main") or {}).get("engines", [{}])[0].get("reason") == "RunnerBusy",
            timeout=REPAIR_TIMEOUT,
            what="the repair waiting for the busy runner (409)",
        )
        assert answers == []  # still in flight: nothing cut it
    finally:
        busy.unlink(missing_ok=True)  # the request ends
        client.join(timeout=60)
    assert answers == [200]
    back(server, daemon, "the config back once the request ended", "removed by another client")
