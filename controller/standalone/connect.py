"""Which engine a command talks to: `--engine URL`, the embedded emulator (`--emulator`), or discovery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from controller.engine.client import EngineClient
from controller.engine.discovery import discover_endpoint
from controller.engine.types import Endpoint
from controller.fleet import Event
from controller.logs import log_event

log = logging.getLogger("localmodel.engine")

EMULATOR_SOURCE = "embedded emulator"


@contextlib.asynccontextmanager
async def connect(
    engine: str | None = None, *, emulator: bool = False, quiet: bool = False, emulator_version: str = "1.2"
) -> AsyncIterator[EngineClient]:
    """An EngineClient for the chosen engine, closed (and the emulator stopped) on exit.

    Raises ValueError for a malformed `engine` URL.
    """
    if emulator:
        from controller.emulator import running_emulator
        from controller.emulator.state import EMULATED_RELEASES

        async with running_emulator("127.0.0.1", 0, release=EMULATED_RELEASES[emulator_version]) as emu:
            if not quiet:
                log_event(log, Event.ENGINE_FOUND, f"started the embedded DMR emulator on {emu.url}", engine=emu.url)
            async with EngineClient(Endpoint(url=emu.url, source=EMULATOR_SOURCE)) as client:
                yield client
        return
    endpoint = await asyncio.to_thread(discover_endpoint, engine)
    if not quiet:
        how = "given with --engine" if endpoint.source == "explicit" else f"found via {endpoint.source}"
        log_event(log, Event.ENGINE_FOUND, f"using the engine at {endpoint.shown} ({how})", engine=endpoint.shown)
    async with EngineClient(endpoint) as client:
        yield client
