"""Where our own HTTP servers listen (the daemon's /status, the operator's /healthz and /metrics, the emulator):
the one address syntax of --status-addr, --health-addr and `status --daemon`, and the port a site bound."""

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


def parse_addr(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` -> (host, port). Host "" is every interface, IPv4 and IPv6
    (what aiohttp's TCPSite and asyncio's create_server make of an empty host)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r}: expected HOST:PORT, [IPv6]:PORT or :PORT (every interface), e.g. 127.0.0.1:9464")
    return host.strip("[]"), int(port)


def connect_host(host: str) -> str:
    """Where a client on this machine reaches a server listening on `host` (loopback for every interface)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host
