"""End to end: the real `localmodel watch` process against the DMR emulator, files edited on disk.

Each test starts the daemon as a subprocess (`python -m controller watch DIR --interval 1`), changes
files or the engine, and polls the daemon's GET /status and the emulator (its DMR API and
`/_emulator/state`) with deadlines; nothing waits a fixed time.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_process import DaemonProcess, Engine, eventually
from tests.support.emulator import emulator_thread
from tests.support.util import localmodel_yaml as localmodel

pytestmark = pytest.mark.e2e

SMALL = "ai/smollm2:135M-Q4_0"


@pytest.fixture
def engine() -> Iterator[Engine]:
    with emulator_thread() as emu:
        yield Engine(emu.url)


@pytest.fixture
def start(models_dir: Path, engine: Engine, tmp_path: Path, daemons: list[DaemonProcess]) -> object:
    def start_daemon(interval: float = 1.0) -> DaemonProcess:
        daemon = DaemonProcess(
            models_dir,
            engine.url,
            interval=interval,
            log_path=tmp_path / f"daemon{len(daemons)}.log",
            # Removals here should finish within a test's wait; the default grace period (30 s) has
            # its own tests in test_daemon_hostile_files.py.
            args=("--deletion-grace", "1"),
        )
        daemons.append(daemon)
        return daemon

    return start_daemon


def context_size(engine: Engine, ref: str) -> object:
    config = engine.stored(ref)
    return config.get("context-size") if config else None


def test_create_edit_rename_and_delete_files(start, models_dir: Path, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    daemon = start()
    (models_dir / "a.yaml").write_text(localmodel("small", SMALL, contextSize=4096))
    eventually(lambda: daemon.ready("small"), what="small Ready")
    assert context_size(engine, SMALL) == 4096

    (models_dir / "a.yaml").write_text(localmodel("small", SMALL, contextSize=8192))
    eventually(lambda: context_size(engine, SMALL) == 8192, what="the edit on the engine")
    eventually(lambda: daemon.model("small")["observedGeneration"] == 2, what="generation 2")  # type: ignore[index]

    engine.control("reset-counters")
    (models_dir / "a.yaml").rename(models_dir / "b.yaml")
    eventually(
        lambda: [f["path"] for f in daemon.status()["files"]] == [str(models_dir / "b.yaml")], what="the rename settled"
    )
    assert daemon.model("small")["source"] == f"{models_dir / 'b.yaml'}:1"  # type: ignore[index]
    assert daemon.ready("small")
    assert context_size(engine, SMALL) == 8192
    writes = [route for route in engine.state()["counters"] if not route.startswith("GET ")]
    assert writes == [], "a rename must send nothing but observations"

    (models_dir / "b.yaml").unlink()
    eventually(lambda: engine.stored(SMALL) is None, what="the stored config dropped (deletionPolicy Unload)")
    eventually(lambda: daemon.model("small") is None, what="small gone from /status")
    assert engine.has_model(SMALL)  # Unload keeps the model in the store


def test_an_engine_restart_is_repaired_within_one_drift_interval(start, models_dir: Path, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    interval = 2.0
    (models_dir / "a.yaml").write_text(localmodel("small", SMALL, contextSize=4096, keepAlive="10m"))
    daemon = start(interval=interval)
    eventually(lambda: daemon.ready("small"), what="small Ready")
    engine.control("restart")
    restarted = time.monotonic()
    assert engine.stored(SMALL) is None
    eventually(lambda: context_size(engine, SMALL) == 4096, timeout=interval + 3, what="the config re-applied")
    assert time.monotonic() - restarted <= interval + 1.0

    def events() -> list[str]:
        return [e["event"] for e in daemon.events() if e.get("model") == "small"]

    # the engine holds the config before the daemon has read it back and logged the repair
    eventually(lambda: "DriftRepaired" in events(), what="the repair logged")
    logged = events()
    assert logged.count("Applied") == 1, logged
    assert logged.count("DriftRepaired") == 1, logged  # the re-apply is a repair


def test_a_bad_file_is_reported_with_file_and_line_and_leaves_the_others_ready(  # type: ignore[no-untyped-def]
    start, models_dir: Path, engine: Engine
) -> None:
    (models_dir / "good.yaml").write_text(localmodel("good", SMALL, contextSize=4096))
    (models_dir / "bad.yaml").write_text(localmodel("bad", "ai/llama3.2", keepAlive="soon"))
    daemon = start()
    eventually(lambda: daemon.ready("good"), what="good Ready")
    [bad] = [f for f in daemon.status()["files"] if f["path"].endswith("bad.yaml")]
    [error] = bad["errors"]
    assert (error["line"], error["object"], error["path"]) == (6, "bad", "spec.keepAlive")
    assert daemon.model("bad") is None
    assert not engine.has_model("ai/llama3.2")

    # The good file breaks: its last good version stays applied, and the error says where.
    (models_dir / "good.yaml").write_text(localmodel("good", SMALL, contextSize=8192) + "  runtimeFlags: [\n")
    eventually(
        lambda: any(e["event"] == "FileError" and e.get("file", "").endswith("good.yaml:8") for e in daemon.events()),
        what="the YAML error logged with file and line",
    )
    assert daemon.ready("good")
    assert context_size(engine, SMALL) == 4096
    assert daemon.status()["summary"]["fileErrors"] == 2


def test_deletion_policies(start, models_dir: Path, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    refs = {"Unload": SMALL, "Delete": "ai/llama3.2:3B", "Retain": "ai/embeddinggemma"}
    for policy, ref in refs.items():
        (models_dir / f"{policy.lower()}.yaml").write_text(
            localmodel(policy.lower(), ref, contextSize=2048, deletionPolicy=policy)
        )
    daemon = start()
    for policy in refs:
        eventually(lambda policy=policy: daemon.ready(policy.lower()), what=f"{policy.lower()} Ready")
    for policy in refs:
        (models_dir / f"{policy.lower()}.yaml").unlink()
    eventually(lambda: not daemon.status()["models"] and not daemon.status()["deleting"], what="all three finalized")
    assert engine.stored(refs["Unload"]) is None
    assert engine.has_model(refs["Unload"])
    assert not engine.has_model(refs["Delete"])
    assert context_size(engine, refs["Retain"]) == 2048
    assert engine.has_model(refs["Retain"])


def test_sigterm_stops_within_a_second_even_with_requests_in_flight(  # type: ignore[no-untyped-def]
    start, models_dir: Path, engine: Engine
) -> None:
    daemon = start()
    engine.control("reset-counters")
    engine.control("latency", {"seconds": 4})  # every engine request now hangs for 4 s
    (models_dir / "a.yaml").write_text(localmodel("small", SMALL))
    eventually(lambda: engine.state()["counters"].get("GET /models"), what="an observation in flight")
    code, seconds = daemon.terminate()
    engine.control("latency", {"seconds": 0})
    assert code == 0, (code, seconds)
    assert seconds < 1.0, (code, seconds)
    assert daemon.events()[-1]["event"] == "Stopped"


def test_a_removed_and_recloned_directory_deletes_nothing(start, models_dir: Path, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    (models_dir / "a.yaml").write_text(localmodel("small", SMALL, contextSize=4096))
    daemon = start(interval=60.0)  # no drift pass during the test: the file watcher must see it all
    eventually(lambda: daemon.ready("small"), what="small Ready")
    shutil.rmtree(models_dir)  # rm -rf before a re-clone
    eventually(
        lambda: any(e["event"] == "FileError" and e.get("file") == str(models_dir) for e in daemon.events()),
        what="the missing directory logged",
    )
    time.sleep(1.5)  # more than the settle time: nothing may be deleted meanwhile
    assert daemon.ready("small")
    assert context_size(engine, SMALL) == 4096
    assert not daemon.status()["deleting"]
    models_dir.mkdir()
    (models_dir / "a.yaml").write_text(localmodel("small", SMALL, contextSize=4096))
    eventually(lambda: not daemon.status()["summary"]["fileErrors"], what="the directory back")
    eventually(lambda: any(e["event"] == "WatchRestarted" for e in daemon.events()), what="the new directory watched")
    (models_dir / "a.yaml").write_text(localmodel("small", SMALL, contextSize=8192))  # an edit after the re-clone
    eventually(lambda: context_size(engine, SMALL) == 8192, what="the edit applied")
    assert daemon.ready("small")
    assert not daemon.status()["deleting"]
