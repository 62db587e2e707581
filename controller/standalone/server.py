"""The daemon's HTTP endpoints: GET /status (JSON), GET /metrics (Prometheus), GET /healthz."""

from __future__ import annotations

import json

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.listen import bound_port
from controller.standalone.daemon import Daemon


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


async def start_status_server(daemon: Daemon, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve the endpoints; returns the runner (`await runner.cleanup()` stops it) and the base URL."""
    runner = web.AppRunner(create_app(daemon), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = bound_port(site)
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound}"


def parse_addr(text: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`, or `:PORT` for all interfaces) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)
