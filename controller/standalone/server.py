"""The daemon's HTTP endpoints: GET /status (JSON), GET /metrics (Prometheus), GET /healthz.

Clients cannot exhaust the daemon (issue 10, case 9: 1,100 half-sent requests used to take every file
descriptor, stop /healthz and make asyncio log "socket.accept() out of system resource" 330,000 times):

- a client has REQUEST_TIMEOUT seconds to send a complete request head, from its connection or from its
  previous request (this covers an idle keep-alive connection too); then it is closed;
- at most MAX_CONNECTIONS connections are open at once: a new one closes the oldest that never sent a
  complete request (else the oldest), so that a real client such as a `/healthz` probe always gets in;
- the endpoints take no body (GET only), and aiohttp bounds a request line and headers (8 KiB each).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.fleet import Event
from controller.listen import connect_host
from controller.logs import log_event
from controller.standalone.daemon import Daemon

log = logging.getLogger("localmodel.status_server")

REQUEST_TIMEOUT = 10.0  # seconds to send a complete request head (after connecting, or after the previous one)
MAX_CONNECTIONS = 256  # open connections at once; the systemd unit allows 4096 descriptors (LimitNOFILE)
BACKLOG = 128  # connections the kernel queues before we accept them
_HEAD_END = b"\r\n\r\n"


def create_app(daemon: Daemon) -> web.Application:
    async def status(_request: web.Request) -> web.Response:
        return web.json_response(daemon.snapshot(), dumps=lambda data: json.dumps(data, indent=2))

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(daemon.metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(_request: web.Request) -> web.Response:
        if daemon.healthy(daemon.clocks.monotonic()):
            return web.Response(text="ok\n")
        return web.Response(status=503, text="the reconcile loop has not run for two drift intervals\n")

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


class _Guarded(asyncio.Protocol):
    """One connection: passes everything to aiohttp's protocol, and closes the connection when the client
    takes longer than the guard's timeout to send a complete request head."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self.requests = 0  # complete request heads received

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._guard.opened(self)
        self._arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        seen = self._tail + data
        if _HEAD_END in seen:
            self.requests += 1
            self._arm()
        self._tail = seen[-(len(_HEAD_END) - 1) :]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._guard.closed(self)
        self._inner.connection_lost(exc)

    def abort(self) -> None:
        """Close now, unsent data and all (the client is not reading or not sending)."""
        self._disarm()
        self._guard.closed(self)
        if self._transport is not None:
            self._transport.abort()

    def _arm(self) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(self._guard.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._guard.timed_out += 1
        self.abort()


class ConnectionGuard:
    """The protocol factory of a guarded server: wraps `factory`'s protocols, caps open connections and
    enforces the request-head timeout. `timed_out` and `evicted` count the connections it closed."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._factory = factory
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.live: dict[_Guarded, None] = {}  # in the order they connected
        self.timed_out = 0
        self.evicted = 0

    def __call__(self) -> _Guarded:
        return _Guarded(self, self._factory())

    def opened(self, connection: _Guarded) -> None:
        if len(self.live) >= self.max_connections:
            victim = next((c for c in self.live if c.requests == 0), next(iter(self.live)))
            self.evicted += 1
            log_event(
                log,
                Event.CONNECTION_CAP,
                f"{self.max_connections} connections are open: closing the oldest one that sent no request",
                level=logging.WARNING,
            )
            victim.abort()
        self.live[connection] = None

    def closed(self, connection: _Guarded) -> None:
        self.live.pop(connection, None)

    def abort_all(self) -> None:
        for connection in list(self.live):
            connection.abort()


class StatusServer:
    """The running status server: `url`, the connection `guard`, and `cleanup()` to stop it."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server, guard: ConnectionGuard, url: str) -> None:
        self.runner = runner
        self.server = server
        self.guard = guard
        self.url = url

    async def cleanup(self) -> None:
        self.server.close()
        await self.runner.cleanup()
        self.guard.abort_all()
        await self.server.wait_closed()


async def start_status_server(
    daemon: Daemon,
    host: str,
    port: int,
    *,
    max_connections: int = MAX_CONNECTIONS,
    request_timeout: float = REQUEST_TIMEOUT,
) -> tuple[StatusServer, str]:
    """Serve the endpoints; returns the server (`await server.cleanup()` stops it) and the base URL."""
    runner = web.AppRunner(create_app(daemon), access_log=None, handle_signals=False, keepalive_timeout=request_timeout)
    await runner.setup()
    handlers = runner.server
    assert handlers is not None
    guard = ConnectionGuard(handlers, max_connections=max_connections, request_timeout=request_timeout)
    try:
        server = await asyncio.get_running_loop().create_server(guard, host, port, backlog=BACKLOG)
    except BaseException:
        await runner.cleanup()
        raise
    bound = server.sockets[0].getsockname()[1]
    reach = connect_host(host)
    shown = f"[{reach}]" if ":" in reach else reach
    url = f"http://{shown}:{bound}"
    return StatusServer(runner, server, guard, url), url
