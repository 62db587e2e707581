"""Fixtures of the daemon's end-to-end tests (the real `localmodel watch` process, tests/e2e/daemon_process.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon_process import DaemonProcess


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """The directory the daemon watches (empty)."""
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """The daemons a test starts: append each; all are closed (killed if still running) after the test."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.close()
