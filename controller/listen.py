"""Where our own HTTP servers listen (the daemon's /status, the operator's /healthz and /metrics, the emulator)."""

from __future__ import annotations

import asyncio

from aiohttp import web


def bound_port(site: web.TCPSite) -> int:
    """The port a started site is bound to (the one the OS picked when asked for port 0)."""
    server = site._server  # aiohttp exposes the bound sockets only here
    if not isinstance(server, asyncio.Server) or not server.sockets:
        raise RuntimeError(f"{site.name}: the site is not started or bound no socket")
    port: int = server.sockets[0].getsockname()[1]
    return port
