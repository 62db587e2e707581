"""Running the emulator: in the current event loop, or in a background thread for synchronous code."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from controller.emulator.app import create_app
from controller.emulator.state import EmulatorState
from controller.listen import bound_port


@dataclass(frozen=True)
class RunningEmulator:
    url: str  # http://host:port, no trailing slash
    port: int
    state: EmulatorState


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(
    host: str = "127.0.0.1", port: int = 0, state: EmulatorState | None = None
) -> tuple[web.AppRunner, str]:
    """Start serving; returns the runner (call `await runner.cleanup()` to stop) and the URL with the bound port."""
    runner = web.AppRunner(create_app(state), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, _url(host, bound_port(site))


@contextlib.asynccontextmanager
async def running_emulator(host: str = "127.0.0.1", port: int = 0, **options: Any) -> AsyncIterator[RunningEmulator]:
    """Serve an emulator for the duration of the block. `options` go to `EmulatorState` (or pass `state=`)."""
    state = options.pop("state", None) or EmulatorState(**options)
    runner, url = await serve(host, port, state)
    try:
        yield RunningEmulator(url, int(url.rsplit(":", 1)[1]), state)
    finally:
        await runner.cleanup()


class EmulatorThread:
    """An emulator on its own event loop in a daemon thread, for synchronous code and process-level tests.

    `state` belongs to the emulator's loop: read it freely, but change it through the control API.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self.host = host
        self.port = port
        self.state: EmulatorState = options.pop("state", None) or EmulatorState(**options)
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dmr-emulator", daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> EmulatorThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(serve(self.host, self.port, self.state), self._loop)
        self._runner, self.url = future.result(timeout=30)
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
            self._runner = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
