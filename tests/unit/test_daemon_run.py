"""`run_daemon`'s exit codes: 2 only for a usage error (systemd's RestartPreventExitStatus=2), 1 for
anything a restart may fix."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pydantic
import pytest

from controller.standalone.daemon import Daemon
from controller.standalone.run import run_daemon


async def run(root: Path, **options: object) -> int:
    settings: dict[str, object] = {
        "engine": None,
        "emulator": True,
        "interval": 30.0,
        "status_addr": None,
        "concurrency": 4,
    }
    settings.update(options)
    return await asyncio.wait_for(run_daemon(root, **settings), 20)  # type: ignore[arg-type]


async def test_a_value_error_from_the_loop_exits_1_so_that_systemd_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: Daemon, stop: asyncio.Event, *, watch: bool = True) -> None:
        pydantic.TypeAdapter(int).validate_python("not a number")  # a ValidationError is a ValueError

    monkeypatch.setattr(Daemon, "run", broken)
    with caplog.at_level(logging.ERROR):
        assert await run(tmp_path) == 1
    assert "the daemon stopped on an unexpected error: ValidationError" in caplog.text


async def test_any_other_error_from_the_loop_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: Daemon, stop: asyncio.Event, *, watch: bool = True) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Daemon, "run", broken)
    assert await run(tmp_path) == 1


async def test_a_malformed_engine_url_is_a_usage_error(tmp_path: Path) -> None:
    assert await run(tmp_path, engine="ftp://nowhere", emulator=False) == 2


async def test_a_status_address_in_use_exits_1_not_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert await run(tmp_path, status_addr=("127.0.0.1", port)) == 1
    assert "cannot serve the status endpoints" in caplog.text
