"""End to end, issue 10 (files): the real `localmodel watch` process keeps answering and deletes nothing
when the directory holds hostile files or is re-cloned. Nothing waits a fixed time except the
re-clone's own 3 s gap, which is the scenario."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.daemon_process import DaemonProcess, Engine, eventually
from tests.support.emulator import emulator_thread
from tests.support.util import localmodel_yaml as localmodel

pytestmark = pytest.mark.e2e

SMALL = "ai/smollm2:135M-Q4_0"
OTHER = "ai/llama3.2"

ALIAS_BOMB = (
    localmodel("bomb", "ai/qwen3")
    + "  vllm:\n    hfOverrides:\n"
    + '      a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"      a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
)


@pytest.fixture
def engine() -> Iterator[Engine]:
    with emulator_thread() as emu:
        yield Engine(emu.url)


def healthy(daemon: DaemonProcess) -> bool:
    return httpx.get(daemon.url + "/healthz", timeout=5).status_code == 200


def test_hostile_files_neither_block_nor_stop_the_daemon(
    models_dir: Path, engine: Engine, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    (models_dir / "good.yaml").write_text(localmodel("good", SMALL, contextSize=4096))
    os.mkfifo(models_dir / "pipe.yaml")  # case 5: blocked the event loop in read_text
    (models_dir / "bomb.yaml").write_text(ALIAS_BOMB)  # case 6: pinned the CPU, ignored SIGTERM
    (models_dir / "big-int.yaml").write_text(localmodel("bigint", OTHER, contextSize="9" * 4301))  # case 4: exit 1
    (models_dir / "zero.yaml").symlink_to("/dev/zero")  # case 7: ate memory until the OOM killer
    (models_dir / "loop.yaml").symlink_to("loop.yaml")
    (models_dir / "hex.yaml").write_text(localmodel("hex", OTHER, contextSize="0x2000"))
    daemon = DaemonProcess(models_dir, engine.url, interval=1.0, log_path=tmp_path / "daemon.log")
    daemons.append(daemon)
    eventually(lambda: daemon.ready("good"), timeout=20, what="good Ready")
    errors = {Path(f["path"]).name: f["errors"][0]["message"] for f in daemon.status()["files"] if f["errors"]}
    assert set(errors) == {"pipe.yaml", "bomb.yaml", "big-int.yaml", "zero.yaml", "loop.yaml", "hex.yaml"}
    assert "a FIFO (named pipe), not a regular file" in errors["pipe.yaml"]
    assert "YAML aliases expand to more than" in errors["bomb.yaml"]
    assert "an integer of 4301 digits is too large" in errors["big-int.yaml"]
    assert "a character device, not a regular file" in errors["zero.yaml"]
    assert "a symbolic link loop" in errors["loop.yaml"]
    assert "or write 8192" in errors["hex.yaml"]
    assert [m["name"] for m in daemon.status()["models"]] == ["good"]
    for _ in range(5):  # the drift passes re-read the directory; every one answers
        assert healthy(daemon)
        time.sleep(0.5)
    assert (engine.stored(SMALL) or {}).get("context-size") == 4096
    code, _seconds = daemon.terminate()
    assert code == 0


def test_a_recloned_subdirectory_deletes_nothing(
    models_dir: Path, engine: Engine, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    repo = models_dir / "repo"
    repo.mkdir()
    (repo / "a.yaml").write_text(localmodel("small", SMALL, contextSize=4096, deletionPolicy="Delete"))
    (repo / "b.yaml").write_text(localmodel("other", OTHER, deletionPolicy="Delete"))
    daemon = DaemonProcess(models_dir, engine.url, interval=1.0, log_path=tmp_path / "daemon.log")  # default grace
    daemons.append(daemon)
    eventually(lambda: daemon.ready("small") and daemon.ready("other"), timeout=20, what="both Ready")
    engine.control("reset-counters")
    shutil.rmtree(repo)  # rm -rf repo && git clone ... repo, the clone taking 3 s
    eventually(lambda: daemon.status()["summary"]["pendingRemoval"] == 2, what="both models shown as pending removal")
    [pending] = {m["pendingRemoval"] for m in daemon.status()["models"]}
    assert pending.startswith("pending removal in ")
    time.sleep(3)
    repo.mkdir()
    (repo / "a.yaml").write_text(localmodel("small", SMALL, contextSize=4096, deletionPolicy="Delete"))
    (repo / "b.yaml").write_text(localmodel("other", OTHER, deletionPolicy="Delete"))
    eventually(lambda: daemon.status()["summary"]["pendingRemoval"] == 0, what="the clone read back")
    assert daemon.ready("small")
    assert daemon.ready("other")
    assert not daemon.status()["deleting"]
    writes = [route for route in engine.state()["counters"] if not route.startswith("GET ")]
    assert writes == [], "a re-clone must send nothing but observations"
    assert engine.has_model(SMALL)
    assert engine.has_model(OTHER)
    assert not [e for e in daemon.events() if e["event"] in ("Removed", "DeletionApplied")]
