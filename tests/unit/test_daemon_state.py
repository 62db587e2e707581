"""The daemon's saved status (controller/standalone/state.py): the store on its own (atomic writes, a
bad file ignored, bad entries dropped), then daemons restarted on one file, against the in-process
emulator in virtual time (issue 11, item 6: a restarted daemon shows the same status and writes nothing)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.engine.client import EngineClient
from controller.standalone.daemon import Clocks, Daemon
from controller.standalone.state import VERSION, StatusStore, default_state_file
from controller.status import Reason
from tests.support.emulator import emulator
from tests.support.util import localmodel_yaml as localmodel

ENTRY: dict[str, Any] = {
    "fingerprint": "f1",
    "generation": 2,
    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T03:04:05Z"}],
    "engine": {"name": "local", "ready": True, "reason": "Applied", "lastAppliedTime": "2026-01-02T03:04:05Z"},
}


def state_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("saved status")]


def saved(store: StatusStore, models: dict[str, Any], **overrides: Any) -> None:
    assert store.path is not None
    data = {"version": VERSION, "directory": store.directory, "models": models, **overrides}
    store.path.write_text(json.dumps(data))


# ---- the store ---------------------------------------------------------------------------------


def test_a_write_is_read_back_by_the_next_process(tmp_path: Path) -> None:
    store = StatusStore(tmp_path / "state" / "status.json", tmp_path)
    store.put("a", ENTRY)
    content = store.take()
    assert content is not None
    assert store.write(content)
    assert store.writes == 1
    assert os.listdir(tmp_path / "state") == ["status.json"]  # the temporary file was renamed
    again = StatusStore(tmp_path / "state" / "status.json", tmp_path)
    again.load()
    assert again.entries == {"a": ENTRY}


def test_a_failed_write_leaves_the_old_file_whole_and_is_retried_and_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "status.json"
    store = StatusStore(path, tmp_path)
    store.put("a", ENTRY)
    assert store.write(store.take() or b"")
    before = path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    store.put("b", ENTRY)
    for _ in range(3):
        content = store.take()
        assert content is not None  # still owed after each failure
        assert not store.write(content)
    assert path.read_bytes() == before  # never half written
    assert os.listdir(tmp_path) == ["status.json"]  # no temporary file left behind
    assert store.report()["unsaved"] is True
    assert len(state_events(caplog)) == 1
    assert "No space left on device" in state_events(caplog)[0]
    monkeypatch.undo()
    assert store.write(store.take() or b"")
    assert set(json.loads(path.read_text())["models"]) == {"a", "b"}
    assert store.report()["lastError"] is None


def test_a_temporary_file_left_by_a_write_cut_short_is_removed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    StatusStore(path, tmp_path).write(b"{}")
    (tmp_path / ".status.json.abc123.tmp").write_text('{"half": ')  # the process exited mid-write
    (tmp_path / ".other.json.abc123.tmp").write_text("not ours")
    StatusStore(path, tmp_path).load()
    assert sorted(os.listdir(tmp_path)) == [".other.json.abc123.tmp", "status.json"]


def test_nothing_is_taken_when_nothing_changed(tmp_path: Path) -> None:
    store = StatusStore(tmp_path / "status.json", tmp_path)
    store.put("a", ENTRY)
    assert store.take() is not None
    store.put("a", dict(ENTRY))  # the same entry again
    store.retain(["a", "b"])
    assert store.take() is None
    store.retain([])
    assert store.take() is not None  # dropping an entry is a change


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "it is not JSON"),
        (b"[" * 4000, "it is not JSON"),  # nesting deeper than the parser's recursion limit
        (b'{"version": 99, "models": {}}', "not a version 1 status file"),
        (b'"text"', "not a version 1 status file"),
        (b" " * 5000, "larger than 4096 bytes"),
    ],
)
def test_a_bad_file_is_logged_once_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, why: str
) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(content)
    store = StatusStore(path, tmp_path, max_bytes=4096)
    store.load()
    assert store.entries == {}
    assert len(state_events(caplog)) == 1
    assert why in state_events(caplog)[0]
    assert why in str(store.report()["lastError"])


def test_an_unreadable_file_or_the_status_of_another_directory_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-directory.json").mkdir()  # open() fails, as on a permission error
    unreadable = StatusStore(tmp_path / "a-directory.json", tmp_path)
    unreadable.load()
    other = StatusStore(tmp_path / "status.json", tmp_path)
    saved(other, {"a": ENTRY}, directory="/somewhere/else")
    other.load()
    missing = StatusStore(tmp_path / "missing.json", tmp_path)
    missing.load()  # the first start: nothing to say
    assert unreadable.entries == other.entries == missing.entries == {}
    messages = state_events(caplog)
    assert len(messages) == 2
    assert "cannot read it" in messages[0]
    assert "another directory ('/somewhere/else')" in messages[1]


def test_entries_of_the_wrong_shape_are_dropped_and_the_rest_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StatusStore(tmp_path / "status.json", tmp_path)
    bad_time = {**ENTRY, "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "yesterday"}]}
    saved(
        store,
        {
            "good": ENTRY,
            "no-fingerprint": {k: v for k, v in ENTRY.items() if k != "fingerprint"},
            "generation-0": {**ENTRY, "generation": 0},
            "bad-time": bad_time,
            "not-a-mapping": [1, 2],
        },
    )
    store.load()
    assert store.entries == {"good": ENTRY}
    assert len(state_events(caplog)) == 1
    assert "4 entries of the wrong shape" in state_events(caplog)[0]


def test_the_default_file_is_one_per_directory_in_the_state_directory(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    systemd = default_state_file(one, {"STATE_DIRECTORY": "/var/lib/x:/other", "XDG_STATE_HOME": "/xdg"})
    assert systemd.parent == Path("/var/lib/x")
    assert default_state_file(one, {"XDG_STATE_HOME": "/xdg"}).parent == Path("/xdg/localmodel")
    assert default_state_file(one, {"XDG_STATE_HOME": "relative"}).parent == Path.home() / ".local/state/localmodel"
    assert default_state_file(one, {}).name != default_state_file(two, {}).name
    assert default_state_file(one, {}) == default_state_file(tmp_path / "x" / ".." / "one", {})


# ---- daemons restarted on one file -------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Wall:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def engine() -> AsyncIterator[Any]:
    async with emulator() as emu:
        yield emu


class Process:
    """One daemon process's life: what a restart keeps is only the engine, the files and the state file."""

    def __init__(self, root: Path, client: EngineClient, state: Path, wall: Wall) -> None:
        self.time = Clock(1000.0)
        self.daemon = Daemon(
            root,
            client,
            interval=30.0,
            grace=0.5,
            state_file=state,
            watch_period=None,
            clocks=Clocks(monotonic=self.time, wall=wall, jitter=lambda: 0.0),
        )

    async def drift(self) -> None:
        self.time.now = max(self.time.now, self.daemon.schedule.next_drift)
        self.daemon.notice([self.daemon.root])
        await self.daemon.run_pass()
        await self.daemon.wait_idle()
        await self.daemon.save_state()

    def status(self, name: str) -> dict[str, Any]:
        return next(m for m in self.daemon.snapshot()["models"] if m["name"] == name)


async def test_an_idle_daemon_writes_the_state_file_only_when_a_status_changes(tmp_path: Path, engine: Any) -> None:
    root, state, wall = tmp_path / "models", tmp_path / "state.json", Wall()
    root.mkdir()
    (root / "a.yaml").write_text(localmodel("a", "ai/smollm2", contextSize=4096))
    async with EngineClient(engine.url) as client:
        process = Process(root, client, state, wall)
        await process.drift()
        assert process.daemon.records["a"].ready
        written = process.daemon.state.writes
        assert written >= 1
        for _ in range(10):  # idle drift passes, ten minutes of wall time
            wall.now += timedelta(minutes=1)
            await process.drift()
        assert process.daemon.state.writes == written
        engine.state.restart()  # a real change: the repair is a new lastAppliedTime and reason
        await process.drift()
        assert process.daemon.state.writes == written + 1


async def test_a_restarted_daemon_keeps_the_status_and_writes_nothing(tmp_path: Path, engine: Any) -> None:
    root, state, wall = tmp_path / "models", tmp_path / "state.json", Wall()
    root.mkdir()
    (root / "a.yaml").write_text(localmodel("a", "ai/smollm2", contextSize=4096))
    (root / "b.yaml").write_text(localmodel("b", "ai/llama3.2", contextSize=2048))
    async with EngineClient(engine.url) as client:
        first = Process(root, client, state, wall)
        await first.drift()
        wall.now += timedelta(minutes=5)
        engine.state.restart()
        await first.drift()  # b's and a's configs repaired: DriftRepaired, applied at the new time
        before = {name: first.status(name) for name in ("a", "b")}
        assert before["a"]["engines"][0]["reason"] == Reason.DRIFT_REPAIRED.value
    wall.now += timedelta(hours=1)
    engine.state.counters.clear()
    async with EngineClient(engine.url) as client:
        second = Process(root, client, state, wall)
        await second.drift()
        await second.drift()
        after = {name: second.status(name) for name in ("a", "b")}
        assert second.daemon.state.writes == 0  # nothing changed: nothing written
    assert not [route for route in engine.state.counters if route.startswith(("POST", "DELETE"))]
    for name in ("a", "b"):
        assert after[name]["conditions"] == before[name]["conditions"]
        for key in ("lastAppliedTime", "reason", "observedGeneration"):
            assert after[name]["engines"][0][key] == before[name]["engines"][0][key]


async def test_a_restart_counts_generations_on_and_drops_models_no_longer_declared(tmp_path: Path, engine: Any) -> None:
    root, state, wall = tmp_path / "models", tmp_path / "state.json", Wall()
    root.mkdir()
    (root / "a.yaml").write_text(localmodel("a", "ai/smollm2", contextSize=4096))
    (root / "b.yaml").write_text(localmodel("b", "ai/llama3.2", contextSize=2048))
    async with EngineClient(engine.url) as client:
        first = Process(root, client, state, wall)
        await first.drift()
        (root / "a.yaml").write_text(localmodel("a", "ai/smollm2", contextSize=8192))
        await first.drift()
        assert first.daemon.records["a"].generation == 2
    (root / "b.yaml").unlink()  # removed while the daemon was down
    (root / "c.yaml").write_text(localmodel("c", "ai/qwen3:0.6B-F16"))
    async with EngineClient(engine.url) as client:
        second = Process(root, client, state, wall)
        await second.drift()
        assert second.daemon.records["a"].generation == 2  # the same spec: the same generation
        assert second.status("a")["observedGeneration"] == 2
        assert second.daemon.records["c"].generation == 1
    assert set(json.loads(state.read_text())["models"]) == {"a", "c"}
    (root / "a.yaml").write_text(localmodel("a", "ai/smollm2", contextSize=2048))  # edited while down
    async with EngineClient(engine.url) as client:
        third = Process(root, client, state, wall)
        await third.drift()
        assert third.daemon.records["a"].generation == 3
        assert third.status("a")["engines"][0]["reason"] == Reason.APPLIED.value


async def test_no_state_file_saves_nothing(tmp_path: Path, engine: Any) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "a.yaml").write_text(localmodel("a", "ai/smollm2"))
    async with EngineClient(engine.url) as client:
        daemon = Daemon(root, client, watch_period=None)
        await daemon.run_pass()
        await daemon.wait_idle()
        await daemon.save_state()
        assert daemon.records["a"].ready
        assert daemon.snapshot()["savedStatus"] == {
            "file": None,
            "writes": 0,
            "unsaved": False,
            "lastWritten": None,
            "lastError": None,
        }
    assert os.listdir(tmp_path) == ["models"]
