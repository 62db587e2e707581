"""Running the daemon as a process: engine, status server, signals, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import traceback
from pathlib import Path

from controller.fleet import Event
from controller.inputs import MAX_FILE_BYTES
from controller.logs import log_event
from controller.standalone.connect import connect
from controller.standalone.daemon import Daemon
from controller.standalone.defaults import DEFAULT_DELETION_GRACE
from controller.standalone.server import start_status_server

log = logging.getLogger("localmodel.daemon")

# Exit codes. The systemd unit has RestartPreventExitStatus=2: only a usage error (that a restart
# cannot fix) may exit 2; anything else that ends the daemon exits 1 so that systemd restarts it.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


async def run_daemon(
    root: Path,
    *,
    engine: str | None,
    emulator: bool,
    emulator_version: str = "1.2",
    interval: float,
    status_addr: tuple[str, int] | None,
    concurrency: int,
    watch_period: float | None = None,
    deletion_grace: float = DEFAULT_DELETION_GRACE,
    max_file_bytes: int = MAX_FILE_BYTES,
    state_file: Path | None = None,
) -> int:
    """Run until SIGINT or SIGTERM. 0 on a clean stop; 2 when the engine URL is unusable (a usage
    error); 1 when the status address cannot be served or the loop fails (worth a restart)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        try:
            client = await stack.enter_async_context(
                connect(engine, emulator=emulator, emulator_version=emulator_version)
            )
        except ValueError as exc:  # a malformed --engine or MODEL_RUNNER_HOST: only the user can fix it
            log.error("%s", exc)
            return EXIT_USAGE
        daemon = Daemon(
            root,
            client,
            interval=interval,
            concurrency=concurrency,
            watch_period=watch_period,
            grace=deletion_grace,
            max_file_bytes=max_file_bytes,
            state_file=state_file,
        )
        if status_addr is not None:
            try:
                runner, url = await start_status_server(daemon, *status_addr)
            except OSError as exc:  # address in use, interface not up yet: a restart may well succeed
                log.error("cannot serve the status endpoints on %s:%s: %s", *status_addr, exc)
                return EXIT_FAILED
            stack.push_async_callback(runner.cleanup)
            log_event(log, Event.STATUS_SERVER, f"serving {url}/status, /metrics and /healthz", url=url)
        try:
            await daemon.run(stop)
        except Exception as exc:  # noqa: BLE001 - whatever it is, systemd should restart us
            log_event(
                log,
                Event.FAILED,
                f"the daemon stopped on an unexpected error: {type(exc).__name__}: {exc}",
                level=logging.ERROR,
                error=traceback.format_exc(),
            )
            return EXIT_FAILED
    return EXIT_OK
