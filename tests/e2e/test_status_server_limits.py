"""End to end: the real `localmodel watch` status server against clients that never finish their requests.

Issue 10, case 9: 1,100 half-sent requests exhausted the unit's 1,024 file descriptors, /healthz stopped
answering and asyncio logged "socket.accept() out of system resource" hundreds of thousands of times.
Here the daemon runs with RLIMIT_NOFILE 1024 (as under the old unit) and 1,100 connections each send
half a request head and stay open.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.standalone.server import MAX_CONNECTIONS
from tests.e2e.daemon_process import DaemonProcess
from tests.support.emulator import emulator_thread
from tests.support.util import eventually

pytestmark = pytest.mark.e2e

SLOW_CLIENTS = 1100
FD_LIMIT = 1024
HALF_A_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: "


@pytest.fixture
def own_fds() -> Iterator[None]:
    """This test process holds 1,100 sockets: lift its own soft limit if it is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, SLOW_CLIENTS + 512)) if hard != resource.RLIM_INFINITY else SLOW_CLIENTS + 512
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def half_open(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(HALF_A_REQUEST)
    except OSError:
        sock.close()
        return None
    return sock


def test_healthz_answers_with_1100_half_sent_requests_open(own_fds: None, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    with emulator_thread() as emu, contextlib.ExitStack() as stack:
        daemon = DaemonProcess(models, emu.url, log_path=tmp_path / "daemon.log", fd_limit=FD_LIMIT)
        stack.callback(daemon.close)
        sockets = [half_open(daemon.port) for _ in range(SLOW_CLIENTS)]
        for sock in sockets:
            if sock is not None:
                stack.callback(sock.close)
        pid = daemon.process.pid
        # Closed connections are released on the daemon's next loop turns: poll until it settles.
        fds = eventually(lambda: (n := open_fds(pid)) <= MAX_CONNECTIONS + 64 and n, what="the daemon's descriptors")
        answers = [httpx.get(daemon.url + "/healthz", timeout=5).status_code for _ in range(20)]
        log = daemon.log_path.read_text()

    assert answers == [200] * 20
    assert sum(sock is not None for sock in sockets) == SLOW_CLIENTS  # the daemon kept accepting
    assert fds <= MAX_CONNECTIONS + 64
    assert "out of system resource" not in log
    assert log.count("ConnectionCap") <= 2, "the cap is logged once (per minute), not per connection"
