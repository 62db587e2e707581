"""The daemon's deletions against the in-process emulator, in virtual time (issue 10, cases 1-3 and 5):
a re-clone deletes nothing, a removal waits for the grace period and is shown as pending, and files
are read off the event loop."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller.engine.client import EngineClient
from controller.standalone import files as files_module
from controller.standalone.daemon import Clocks, Daemon
from tests.support.emulator import emulator
from tests.support.util import localmodel_yaml as localmodel

WRITES = ("POST", "DELETE")


class VirtualTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def engine() -> AsyncIterator[Any]:
    async with emulator() as emu:
        yield emu


@pytest.fixture
async def setup(tmp_path: Path, engine: Any) -> AsyncIterator[tuple[Daemon, VirtualTime, Path]]:
    root = tmp_path / "models"
    root.mkdir()
    time = VirtualTime()
    async with EngineClient(engine.url) as client:
        # The default deletion grace period: what a user gets.
        daemon = Daemon(root, client, interval=3600.0, clocks=Clocks(monotonic=time, jitter=lambda: 0.0))
        yield daemon, time, root


async def run_pass(daemon: Daemon, time: VirtualTime, advance: float = 0.0) -> None:
    time.now += advance
    daemon.notice([daemon.root])
    await daemon.run_pass()
    await daemon.wait_idle()


def writes(engine: Any) -> list[str]:
    return [route for route in engine.state.counters if route.startswith(WRITES)]


async def test_a_reclone_that_takes_3_seconds_sends_nothing_to_the_engine(
    setup: tuple[Daemon, VirtualTime, Path], engine: Any
) -> None:
    daemon, time, root = setup
    refs = {"a": "ai/smollm2", "b": "ai/llama3.2"}
    for name, ref in refs.items():
        (root / f"{name}.yaml").write_text(localmodel(name, ref, deletionPolicy="Delete"))
    await run_pass(daemon, time)
    assert all(record.ready for record in daemon.records.values())
    engine.state.counters.clear()
    shutil.rmtree(root)  # rm -rf models && git clone ... models (3 s)
    root.mkdir()
    for _ in range(6):
        await run_pass(daemon, time, 0.5)
    status = daemon.snapshot()
    assert [m["pendingRemoval"] for m in status["models"]] == [
        "pending removal in 28 s: gone from its file; it stays if the file declares it again before then"
    ] * 2
    assert status["summary"]["pendingRemoval"] == 2
    for name, ref in refs.items():
        (root / f"{name}.yaml").write_text(localmodel(name, ref, deletionPolicy="Delete"))
    await run_pass(daemon, time, 0.1)
    await run_pass(daemon, time, 100.0)
    assert set(daemon.records) == {"a", "b"}
    assert not daemon.deletions
    assert writes(engine) == []
    assert "pendingRemoval" not in daemon.snapshot()["models"][0]


async def test_a_removed_file_is_finalized_once_the_grace_period_is_over(
    setup: tuple[Daemon, VirtualTime, Path], engine: Any
) -> None:
    daemon, time, root = setup
    (root / "a.yaml").write_text(localmodel("a", "ai/smollm2"))
    await run_pass(daemon, time)
    (root / "a.yaml").unlink()
    await run_pass(daemon, time, 1.0)
    await run_pass(daemon, time, daemon.files.grace - 1.5)
    assert "a" in daemon.records
    assert "POST /engines/unload" not in engine.state.counters
    await run_pass(daemon, time, 2.0)
    assert not daemon.records
    assert engine.state.counters.get("POST /engines/unload") == 1


async def test_files_are_read_off_the_event_loop(
    setup: tuple[Daemon, VirtualTime, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, time, root = setup
    (root / "a.yaml").write_text(localmodel("a", "ai/smollm2"))
    reading = threading.Event()
    release = threading.Event()
    real_scan = files_module.scan

    def slow_scan(root: Path) -> Any:
        reading.set()
        release.wait(timeout=30)  # a read stuck on a slow disk (or a FIFO, before reads were bounded)
        return real_scan(root)

    monkeypatch.setattr(files_module, "scan", slow_scan)
    answered = asyncio.Event()

    async def health_check() -> None:
        await asyncio.to_thread(reading.wait, 20)
        daemon.snapshot()  # what /status and /healthz run on the loop
        answered.set()

    checker = asyncio.create_task(health_check())
    pass_ = asyncio.create_task(run_pass(daemon, time))
    await asyncio.wait_for(answered.wait(), timeout=20)  # the loop ran while the read was stuck
    assert not pass_.done()
    release.set()
    await pass_
    await checker
    assert set(daemon.records) == {"a"}


async def test_a_removed_model_that_another_file_still_declares_stays_on_the_engine(
    setup: tuple[Daemon, VirtualTime, Path], engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """deletions.py `Deletions.start`: the same model in another mode (another config, one model) keeps it."""
    caplog.set_level(logging.INFO)
    daemon, time, root = setup
    (root / "chat.yaml").write_text(localmodel("chat", "ai/smollm2", deletionPolicy="Delete"))
    (root / "embed.yaml").write_text(localmodel("embed", "ai/smollm2", mode="embedding"))
    await run_pass(daemon, time)
    assert daemon.records["chat"].conflict is None
    (root / "chat.yaml").unlink()
    await run_pass(daemon, time, 1.0)
    await run_pass(daemon, time, daemon.files.grace + 1.0)
    assert set(daemon.records) == {"embed"}
    assert not daemon.deletions
    assert "POST /engines/unload" not in engine.state.counters
    assert not [route for route in engine.state.counters if route.startswith("DELETE")]
    [removed] = [r for r in caplog.records if getattr(r, "lm_event", None) == "Removed"]
    assert removed.getMessage() == "ai/smollm2 stays on the engine: embed still declares it"
