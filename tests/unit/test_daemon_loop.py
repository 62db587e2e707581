"""The daemon's decisions, pass by pass, against the in-process emulator on loopback.

Time is virtual: the daemon's monotonic clock is a counter the test advances, and each pass is
driven by `run_pass()` (then `wait_idle()` for the reconciles it started), so drift passes, settle
times and backoffs happen without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from controller.deletion import DELETE_ATTEMPTS
from controller.emulator import running_emulator
from controller.engine.client import EngineClient
from controller.engine.errors import ServerError
from controller.standalone.daemon import Clocks, Daemon
from controller.status import Reason
from tests.support.emulator import emulator
from tests.support.util import localmodel_yaml as localmodel

INTERVAL = 30.0
SETTLE = 0.5


class VirtualTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, root: Path, client: EngineClient, **options: Any) -> None:
        self.root = root
        self.time = VirtualTime()
        self.client = client
        self.daemon = Daemon(
            root,
            client,
            interval=INTERVAL,
            grace=SETTLE,
            clocks=Clocks(monotonic=self.time, jitter=lambda: 0.0),
            **options,
        )

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        self.daemon.notice([path])
        return path

    async def run_pass(self, advance: float = 0.0) -> None:
        self.time.now += advance
        await self.daemon.run_pass()
        await self.daemon.wait_idle()

    async def drift(self) -> None:
        """Advance to the next drift pass and run it."""
        await self.run_pass(max(0.0, self.daemon.schedule.next_drift - self.time.now))

    def reason(self, name: str) -> str:
        record = self.daemon.records[name]
        assert record.engine is not None
        return record.engine.reason.value


async def stored(client: EngineClient, ref: str) -> dict[str, Any] | None:
    entries = await client.stored_configs(model=ref)
    return entries[0].config if entries else None


@pytest.fixture
async def engine() -> AsyncIterator[Any]:
    async with emulator() as emu:
        yield emu


@pytest.fixture
async def harness(tmp_path: Path, engine: Any) -> AsyncIterator[Harness]:
    async with EngineClient(engine.url) as client:
        yield Harness(tmp_path, client)


async def test_models_go_ready_and_an_idle_drift_pass_costs_only_the_observation(harness: Harness) -> None:
    harness.write("a.yaml", localmodel("a", "ai/smollm2", contextSize=4096))
    harness.write("b.yaml", localmodel("b", "ai/qwen3:0.6B-F16", keepAlive="10m"))
    harness.write("c.yaml", localmodel("c", "ai/llama3.2"))
    await harness.run_pass()
    assert all(r.ready for r in harness.daemon.records.values())
    await harness.drift()  # may read a loaded runner's own config once
    await harness.drift()
    before = harness.client.requests_sent
    await harness.drift()
    assert harness.client.requests_sent - before == 3
    assert all(r.ready for r in harness.daemon.records.values())


async def test_an_edit_reconciles_only_the_edited_model(harness: Harness, engine: Any) -> None:
    harness.write("a.yaml", localmodel("a", "ai/smollm2", contextSize=4096))
    harness.write("b.yaml", localmodel("b", "ai/llama3.2", contextSize=4096))
    await harness.run_pass()
    engine.state.counters.clear()
    harness.write("a.yaml", localmodel("a", "ai/smollm2", contextSize=8192))
    await harness.run_pass(0.1)
    configures = {
        route: n for route, n in engine.state.counters.items() if route.startswith("POST") and "_configure" in route
    }
    assert sum(configures.values()) == 1
    assert (await stored(harness.client, "ai/smollm2"))["context-size"] == 8192  # type: ignore[index]
    assert harness.daemon.records["a"].generation == 2
    assert harness.daemon.records["b"].generation == 1


async def test_an_engine_restart_is_repaired_on_the_next_drift_pass(harness: Harness, engine: Any) -> None:
    harness.write("a.yaml", localmodel("a", "ai/smollm2", contextSize=4096))
    await harness.run_pass()
    engine.state.restart()
    assert await stored(harness.client, "ai/smollm2") is None
    await harness.drift()
    assert (await stored(harness.client, "ai/smollm2"))["context-size"] == 4096  # type: ignore[index]
    assert harness.daemon.records["a"].ready
    assert harness.reason("a") == Reason.DRIFT_REPAIRED.value


async def test_the_later_of_two_models_with_the_same_model_and_mode_is_stalled_until_the_first_goes(
    harness: Harness, engine: Any
) -> None:
    harness.write("first.yaml", localmodel("first", "ai/smollm2", contextSize=4096))
    await harness.run_pass()
    harness.write("second.yaml", localmodel("second", "ai/smollm2", contextSize=8192))
    await harness.run_pass(0.1)
    second = harness.daemon.records["second"]
    assert second.engine is not None
    assert second.engine.stalled
    assert harness.reason("second") == "Conflict"
    assert "first already declares model ai/smollm2" in second.engine.message
    assert (await stored(harness.client, "ai/smollm2"))["context-size"] == 4096  # type: ignore[index]
    (harness.root / "first.yaml").unlink()
    harness.daemon.notice([harness.root / "first.yaml"])
    await harness.run_pass(0.1)
    await harness.run_pass(SETTLE)
    assert set(harness.daemon.records) == {"second"}
    assert harness.daemon.records["second"].ready
    assert (await stored(harness.client, "ai/smollm2"))["context-size"] == 8192  # type: ignore[index]
    assert "POST /engines/unload" not in engine.state.counters  # "second" still uses the model


async def test_renaming_a_file_sends_nothing_to_the_engine(harness: Harness, engine: Any) -> None:
    harness.write("a.yaml", localmodel("a", "ai/smollm2", contextSize=4096))
    await harness.run_pass()
    engine.state.counters.clear()
    (harness.root / "a.yaml").rename(harness.root / "renamed.yaml")
    harness.daemon.notice([harness.root / "a.yaml", harness.root / "renamed.yaml"])
    await harness.run_pass(0.1)
    await harness.run_pass(SETTLE)
    assert harness.daemon.records["a"].ready
    assert str(harness.daemon.records["a"].source).endswith("renamed.yaml:1")
    assert not harness.daemon.deletions
    assert set(engine.state.counters) <= {"GET /models", "GET /engines/_configure", "GET /engines/ps"}


async def test_a_removed_model_is_unloaded_only_once_the_removal_has_settled(harness: Harness, engine: Any) -> None:
    harness.write("a.yaml", localmodel("a", "ai/smollm2", contextSize=4096))
    await harness.run_pass()
    path = harness.root / "a.yaml"
    path.unlink()
    harness.daemon.notice([path])
    await harness.run_pass(0.1)
    assert "a" in harness.daemon.records
    assert await stored(harness.client, "ai/smollm2") is not None
    assert harness.daemon.files.next_due() == pytest.approx(harness.time.now + SETTLE)
    await harness.run_pass(SETTLE)
    assert not harness.daemon.records
    assert not harness.daemon.deletions
    assert await stored(harness.client, "ai/smollm2") is None


async def test_an_unreachable_engine_costs_one_observation_per_probe_and_everything_resumes_when_it_answers(
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with EngineClient(f"http://127.0.0.1:{port}") as client:
        harness = Harness(tmp_path, client)
        harness.write("a.yaml", localmodel("a", "ai/smollm2", contextSize=4096))
        harness.write("b.yaml", localmodel("b", "ai/llama3.2"))
        await harness.run_pass()
        assert harness.daemon.engine.up is False
        assert client.requests_sent == 3
        assert {harness.reason(n) for n in "ab"} == {"EngineUnreachable"}
        assert harness.daemon.schedule.next_drift - harness.time.now < INTERVAL  # probes sooner than a drift pass
        async with running_emulator("127.0.0.1", port, load_seconds=0):
            await harness.drift()
            assert harness.daemon.engine.up is True
            assert all(r.ready for r in harness.daemon.records.values())


async def remove_while_unload_fails(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Delete a.yaml while every unload the engine gets answers 500."""

    async def failing_unload(**_: object) -> None:
        raise ServerError("unload failed", status=500)

    monkeypatch.setattr(harness.client, "unload", failing_unload)
    (harness.root / "a.yaml").unlink()
    harness.daemon.notice([harness.root / "a.yaml"])
    await harness.run_pass(0.1)


async def test_a_deletion_the_engine_keeps_failing_is_retried_a_bounded_number_of_times(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    harness.write("a.yaml", localmodel("a", "ai/smollm2"))
    await harness.run_pass()
    assert harness.daemon.records["a"].ready
    await remove_while_unload_fails(harness, monkeypatch)
    await harness.run_pass(SETTLE)  # the first attempt
    failed_so_far = []
    while harness.daemon.deletions:
        failed_so_far.append(harness.daemon.deletions["a"].attempts)
        await harness.run_pass(60.0)
    assert failed_so_far == list(range(1, DELETE_ATTEMPTS))
    assert "gave up applying deletionPolicy Unload after 5 failed attempts" in caplog.text
    assert "(docker model unload ai/smollm2)" in caplog.text
    assert "docker model rm" not in caplog.text


async def test_giving_up_on_deletion_policy_delete_says_to_remove_the_model_too(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    harness.write("a.yaml", localmodel("a", "ai/smollm2", deletionPolicy="Delete"))
    await harness.run_pass()
    await remove_while_unload_fails(harness, monkeypatch)
    for _ in range(DELETE_ATTEMPTS):
        await harness.run_pass(60.0)
    assert not harness.daemon.deletions
    assert "(docker model unload ai/smollm2 && docker model rm ai/smollm2)" in caplog.text


async def test_a_deletion_waits_for_an_engine_that_is_down_without_using_up_attempts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with EngineClient(f"http://127.0.0.1:{port}") as client:
        harness = Harness(tmp_path, client)
        async with running_emulator("127.0.0.1", port, load_seconds=0):
            harness.write("a.yaml", localmodel("a", "ai/smollm2", contextSize=4096))
            await harness.run_pass()
            assert harness.daemon.records["a"].ready
        # The engine restarts (down for a while); meanwhile the file is removed.
        (tmp_path / "a.yaml").unlink()
        harness.daemon.notice([tmp_path / "a.yaml"])
        await harness.run_pass(0.1)
        await harness.run_pass(SETTLE)
        for _ in range(3 * DELETE_ATTEMPTS):
            await harness.drift()
        assert harness.daemon.engine.up is False
        deletion = harness.daemon.deletions["a"]
        assert deletion.attempts == 0
        assert "waiting for the engine" in (deletion.last_error or "")
        assert "gave up" not in caplog.text
        async with running_emulator("127.0.0.1", port, load_seconds=0, preload_models=["ai/smollm2"]) as emu:
            await harness.drift()
            assert harness.daemon.engine.up is True
            assert not harness.daemon.deletions
            assert emu.state.counters.get("POST /engines/unload") == 1
            assert "DeletionApplied" in [getattr(r, "lm_event", None) for r in caplog.records]


async def test_a_vanished_directory_deletes_nothing_and_is_logged_until_it_comes_back(
    tmp_path: Path, engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    root = tmp_path / "models"
    root.mkdir()
    async with EngineClient(engine.url) as client:
        harness = Harness(root, client)
        harness.write("a.yaml", localmodel("a", "ai/smollm2", contextSize=4096))
        await harness.run_pass()
        assert harness.daemon.records["a"].ready
        moved = tmp_path / "moved"
        root.rename(moved)  # unmounted, or rm -rf before a re-clone
        harness.daemon.notice([root / "a.yaml"])
        await harness.run_pass(0.1)
        await harness.run_pass(SETTLE)
        await harness.drift()
        assert set(harness.daemon.records) == {"a"}
        assert not harness.daemon.deletions
        assert (await stored(client, "ai/smollm2"))["context-size"] == 4096  # type: ignore[index]
        [logged] = [r for r in caplog.records if getattr(r, "lm_event", None) == "FileError"]
        assert "cannot read the directory" in logged.getMessage()
        assert logged.lm_fields["file"] == str(root)
        moved.rename(root)
        await harness.drift()
        assert harness.daemon.records["a"].ready
        assert harness.daemon.files.errors == []
        assert "resolved:" in caplog.text


async def test_a_failed_file_watcher_is_reported_and_restarted(
    tmp_path: Path, engine: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import watchfiles

    from controller.standalone import watcher as watcher_module

    caplog.set_level(logging.INFO)
    root = tmp_path.resolve()  # noqa: ASYNC240 setup before the daemon runs; nothing else is on the loop
    target = root / "a.yaml"
    calls = 0

    async def fake_awatch(path: Path, *, stop_event: asyncio.Event, **_: object) -> AsyncIterator[set[tuple[int, str]]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(28, "inotify watch limit reached")
        while not target.exists():  # noqa: ASYNC110 stands in for inotify: waits for the test to write the file
            await asyncio.sleep(0.01)
        yield {(1, str(target))}
        await stop_event.wait()

    monkeypatch.setattr(watchfiles, "awatch", fake_awatch)
    monkeypatch.setattr(watcher_module, "WATCH_RESTART_DELAY", 0.05)
    async with EngineClient(engine.url) as client:
        daemon = Daemon(root, client, interval=3600.0, grace=SETTLE)  # no drift pass during the test
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await eventually_async(lambda: "WatchRestarted" in events(caplog))
        [failed] = [r for r in caplog.records if getattr(r, "lm_event", None) == "WatchFailed"]
        assert failed.levelno == logging.ERROR
        assert "inotify watch limit reached" in failed.getMessage()
        target.write_text(localmodel("a", "ai/smollm2", contextSize=4096))
        await eventually_async(lambda: "a" in daemon.records and daemon.records["a"].ready)
        stop.set()
        await asyncio.wait_for(task, 1.0)  # SIGTERM still stops it within a second
    assert calls == 2


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "lm_event", "") for r in caplog.records]


async def eventually_async(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_409_storm_is_retried_with_doubling_backoff_then_applied(tmp_path: Path, engine: Any) -> None:
    """Three 409s in a row (runner busy): retried after 0.5, 1 and 2 s of virtual time (half of 1, 2, 4 s with
    jitter 0), then applied; the e2e version of this test waited those seconds for real. Without the engine
    watch, which would retry a busy runner once a watch period instead."""
    async with EngineClient(engine.url) as client:
        await _409_storm(Harness(tmp_path, client, watch_period=None), engine)


async def _409_storm(harness: Harness, engine: Any) -> None:
    harness.write("a.yaml", localmodel("a", "ai/smollm2", contextSize=4096))
    await harness.run_pass()
    engine.state.pending_conflicts = 3
    harness.write("a.yaml", localmodel("a", "ai/smollm2", contextSize=8192))
    await harness.run_pass(0.1)
    delays = []
    while engine.state.pending_conflicts or not harness.daemon.records["a"].ready:
        assert harness.reason("a") == Reason.RUNNER_BUSY.value
        due = harness.daemon.schedule.when("a")
        assert due is not None
        delays.append(due - harness.time.now)
        await harness.run_pass(due - harness.time.now)
    assert delays == [0.5, 1.0, 2.0]
    assert (await stored(harness.client, "ai/smollm2"))["context-size"] == 8192  # type: ignore[index]
    metrics = generate_latest(harness.daemon.metrics.registry).decode()
    assert 'localmodel_reconcile_errors_total{reason="RunnerBusy"} 3.0' in metrics
