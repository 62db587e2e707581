"""Faults on the daemon: the real `localmodel watch` process against the emulator (a subprocess, so
that it can be frozen with SIGSTOP), as the operator's faults are checked in test_operator_faults.py."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_process import DaemonProcess, Engine, eventually
from tests.support.emulator import EmulatorProcess, emulator_process
from tests.support.util import localmodel_yaml as localmodel

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

SMALL = "ai/smollm2:135M-Q4_0"


@pytest.fixture
def emu() -> Iterator[EmulatorProcess]:
    with emulator_process() as running:
        yield running


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


def deleting(running: DaemonProcess) -> list[str]:
    return [d["name"] for d in running.status()["deleting"]]


def daemon(models_dir: Path, emu: EmulatorProcess, log: Path) -> DaemonProcess:
    return DaemonProcess(models_dir, emu.url, interval=1.0, log_path=log, args=("--deletion-grace", "1"))


def test_a_deletion_while_the_engine_is_frozen_is_applied_when_it_thaws(
    models_dir: Path, emu: EmulatorProcess, tmp_path: Path
) -> None:
    engine = Engine(emu.url)
    (models_dir / "smol.yaml").write_text(localmodel("smol", SMALL, contextSize=2048))
    running = daemon(models_dir, emu, tmp_path / "daemon.log")
    try:
        eventually(lambda: running.ready("smol"), timeout=30, what="smol Ready")
        os.kill(emu.process.pid, signal.SIGSTOP)
        try:
            (models_dir / "smol.yaml").unlink()
            eventually(lambda: "smol" in deleting(running), timeout=30, what="deletion pending")
            time.sleep(12)  # frozen for longer than a request deadline and a retry
            assert "smol" in deleting(running)  # still owed, not abandoned
        finally:
            os.kill(emu.process.pid, signal.SIGCONT)
        eventually(lambda: engine.stored(SMALL) is None, timeout=30, what="config removed after the thaw")
        eventually(lambda: not running.status()["deleting"], timeout=10, what="deletion done")
        assert not [e for e in running.events() if e.get("event") == "DeletionAbandoned"]
    finally:
        running.close()


def test_a_restarted_daemon_shows_the_same_status(models_dir: Path, emu: EmulatorProcess, tmp_path: Path) -> None:
    (models_dir / "smol.yaml").write_text(localmodel("smol", SMALL, contextSize=2048, keepAlive="10m"))
    first = daemon(models_dir, emu, tmp_path / "daemon0.log")
    try:
        eventually(
            lambda: first.ready("smol") and first.model("smol")["engines"][0]["loaded"], timeout=30, what="Ready"
        )
        eventually(lambda: not first.status()["savedStatus"]["unsaved"], timeout=10, what="status saved")
        before = first.model("smol")
    finally:
        first.process.kill()  # SIGKILL: nothing written on the way out
        first.close()
    second = daemon(models_dir, emu, tmp_path / "daemon1.log")
    try:
        eventually(lambda: second.ready("smol"), timeout=30, what="Ready again")
        after = second.model("smol")
    finally:
        second.close()
    assert before is not None
    assert after is not None
    assert after["engines"][0].get("lastAppliedTime") == before["engines"][0].get("lastAppliedTime")
    assert after["conditions"] == before["conditions"]
