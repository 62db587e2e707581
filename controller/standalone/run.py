"""Running the daemon as a process: engine, status server, signals, clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from controller.logs import log_event
from controller.standalone.connect import connect
from controller.standalone.daemon import Daemon
from controller.standalone.server import start_status_server

log = logging.getLogger("localmodel.daemon")


async def run_daemon(
    root: Path,
    *,
    engine: str | None,
    emulator: bool,
    interval: float,
    status_addr: tuple[str, int] | None,
    concurrency: int,
) -> int:
    """Run until SIGINT or SIGTERM; 0 on a clean stop, 2 when the engine URL or the status address is unusable."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with connect(engine, emulator=emulator) as client:
            daemon = Daemon(root, client, interval=interval, concurrency=concurrency)
            runner = None
            if status_addr is not None:
                try:
                    runner, url = await start_status_server(daemon, *status_addr)
                except OSError as exc:
                    log.error("cannot serve the status endpoints on %s:%s: %s", *status_addr, exc)
                    return 2
                log_event(log, "status_server", f"serving {url}/status, /metrics and /healthz", url=url)
            try:
                await daemon.run(stop)
            finally:
                if runner is not None:
                    await runner.cleanup()
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    return 0
