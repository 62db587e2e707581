"""End to end: the engine watch of the real `localmodel watch` process, with default settings (a 30 s
drift pass), against the DMR emulator. An engine restart, another client's overwrite and a hand
unload are each repaired by the watch, long before a drift pass would come; the assertions are on
the engine's config and the daemon's event, not on timings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.daemon_process import DaemonProcess, Engine, eventually, watching_two_models
from tests.support.emulator import emulator_thread

pytestmark = pytest.mark.e2e

SMALL = "ai/smollm2:135M-Q4_0"
OTHER = "ai/smollm2:360M-Q4_K_M"
# Well inside the default 30 s drift pass: only the watch can repair in time.
REPAIR_TIMEOUT = 12.0


@pytest.fixture
def engine() -> Iterator[Engine]:
    with emulator_thread() as emu:
        yield Engine(emu.url)


@pytest.fixture
def daemon(tmp_path: Path, engine: Engine) -> Iterator[DaemonProcess]:
    with watching_two_models(tmp_path, engine.url, ("small", SMALL), ("other", OTHER), timeout=20) as process:
        yield process


def context_size(engine: Engine) -> object:
    config = engine.stored(SMALL)
    return config.get("context-size") if config else None


def repaired_events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if e.get("event") == "DriftRepaired"]


def runner(engine: Engine) -> dict[str, Any] | None:
    return next((r for r in engine.state()["runners"] if r["model_ref"] == SMALL), None)


def test_the_watch_runs_at_its_default_period(daemon: DaemonProcess) -> None:
    watch = daemon.status()["engine"]["watch"]
    assert watch["period"] == 1.0
    assert daemon.status()["interval"] == 30.0
    eventually(lambda: daemon.status()["engine"]["watch"]["watched"] == 2, what="both watched")


def test_engine_restart_is_repaired_and_preloaded(daemon: DaemonProcess, engine: Engine) -> None:
    assert repaired_events(daemon) == []
    engine.control("restart")
    eventually(lambda: context_size(engine) == 8192, timeout=REPAIR_TIMEOUT, what="the config back after the restart")
    events = eventually(lambda: repaired_events(daemon), what="a DriftRepaired event")
    assert "restarted" in events[0]["message"]
    assert "config back after" in events[0]["message"]
    eventually(lambda: runner(engine) is not None, timeout=REPAIR_TIMEOUT, what="small preloaded again")


def test_overwrite_by_another_client_is_repaired(daemon: DaemonProcess, engine: Engine) -> None:
    answer = httpx.post(f"{engine.url}/engines/_configure", json={"model": SMALL, "context-size": 4096}, timeout=5)
    assert answer.status_code == 202
    eventually(lambda: context_size(engine) == 8192, timeout=REPAIR_TIMEOUT, what="the config back after the overwrite")
    events = eventually(lambda: repaired_events(daemon), what="a DriftRepaired event")
    assert "overwritten by another client: context-size" in events[0]["message"]


def test_hand_unload_of_the_config_is_repaired(daemon: DaemonProcess, engine: Engine) -> None:
    answer = httpx.post(
        f"{engine.url}/engines/unload", json={"all": False, "backend": "llama.cpp", "models": [SMALL]}, timeout=5
    )
    assert answer.status_code == 200
    eventually(lambda: context_size(engine) == 8192, timeout=REPAIR_TIMEOUT, what="the config back after the unload")
    events = eventually(lambda: repaired_events(daemon), what="a DriftRepaired event")
    assert "removed by another client" in events[0]["message"]


def test_a_request_in_flight_is_not_cut_and_the_config_follows_once_it_ends(
    daemon: DaemonProcess, engine: Engine
) -> None:
    # A request holds the runner; meanwhile another client drops the stored config. The engine keeps
    # the busy runner (unload evicts idle runners only), and a configure answers 409 until it ends.
    engine.control("busy", {"model": SMALL, "busy": True})
    httpx.post(
        f"{engine.url}/engines/unload", json={"all": False, "backend": "llama.cpp", "models": [SMALL]}, timeout=5
    ).raise_for_status()
    eventually(
        lambda: (daemon.model("small") or {}).get("engines", [{}])[0].get("reason") == "RunnerBusy",
        timeout=REPAIR_TIMEOUT,
        what="the repair waiting for the busy runner",
    )
    held = runner(engine)
    assert held is not None
    assert held["in_use"]  # still serving: nothing cut it
    assert context_size(engine) is None
    engine.control("busy", {"model": SMALL, "busy": False})  # the request ends
    eventually(lambda: context_size(engine) == 8192, timeout=REPAIR_TIMEOUT, what="the config once the runner is idle")
    events = eventually(lambda: repaired_events(daemon), what="a DriftRepaired event")
    assert "removed by another client" in events[0]["message"]
