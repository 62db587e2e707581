"""Hostile and broken HTTP servers on loopback: what an engine URL might answer that is not a good engine.

Each server is a raw asyncio TCP server (no HTTP library, so that it can misbehave at the byte level):
it reads the request head, then plays one `Behaviour`. Use `hostile_server(behaviour)` as an async
context manager; it yields the base URL. `HostileThread` runs one in a thread for tests of CLI processes.

    async with hostile_server(trickle(interval=0.1)) as url:
        async with EngineClient(url, deadline=1.0) as client: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _head(
    status: str, content_type: str, *, chunked: bool = False, length: int | None = None, extra: str = ""
) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def endless(
    content_type: str = "application/json", piece: bytes = b"[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]" * 2000
) -> Behaviour:
    """200 and a chunked body that never ends, as fast as the client reads it."""

    async def play(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_head("200 OK", content_type, chunked=True))
        while True:
            writer.write(_chunk(piece))
            await writer.drain()

    return play


def trickle(interval: float, status: str = "200 OK", content_type: str = "application/json") -> Behaviour:
    """Headers at once, then one byte of body every `interval` seconds, forever."""

    async def play(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_head(status, content_type, chunked=True))
        await writer.drain()
        while True:
            writer.write(_chunk(b" "))
            await writer.drain()
            await asyncio.sleep(interval)

    return play


def pull_without_newline(piece: bytes = b'{"type":"progress","message":"' + b"x" * 65536) -> Behaviour:
    """A pull stream (200, NDJSON) whose first line never ends."""
    return endless("application/json", piece)


def pull_lines_then_silence(lines: int = 2) -> Behaviour:
    """A pull stream that sends a few progress lines, then nothing (the connection stays open)."""

    async def play(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_head("200 OK", "application/json", chunked=True))
        for i in range(lines):
            writer.write(_chunk(b'{"type":"progress","message":"Downloaded: %d MB","total":10}\n' % i))
        await writer.drain()
        await asyncio.Event().wait()

    return play


def fixed(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8", extra: str = "") -> Behaviour:
    """One complete answer (Content-Length), then close."""

    async def play(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_head(status, content_type, length=len(body), extra=extra) + body)
        await writer.drain()

    return play


def html_page() -> Behaviour:
    return fixed("200 OK", b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>", "text/html")


def redirect(location: str = "http://127.0.0.1:1/login") -> Behaviour:
    return fixed("307 Temporary Redirect", b"", "text/html", extra=f"Location: {location}")


def bad_json() -> Behaviour:
    return fixed("200 OK", b'{"models": [1, 2,', "application/json")


def big_error(size: int = 2 * 1024 * 1024, status: str = "500 Internal Server Error") -> Behaviour:
    return fixed(status, b"E" * size)


async def _read_head(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        await reader.readuntil(b"\r\n\r\n")


@contextlib.asynccontextmanager
async def hostile_server(behaviour: Behaviour) -> AsyncIterator[str]:
    """Serve `behaviour` to every connection on a free loopback port; yields `http://127.0.0.1:PORT`."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await _read_head(reader)
            await behaviour(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            tasks.discard(task)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


class HostileThread:
    """A hostile server on its own event loop in a thread, for tests that run CLI processes against it."""

    def __init__(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hostile-server", daemon=True)
        self._stop: asyncio.Event | None = None
        self._done: asyncio.Future[None] | None = None
        self.url = ""

    def __enter__(self) -> str:
        self._thread.start()
        ready: asyncio.Future[str] = asyncio.run_coroutine_threadsafe(self._start(), self._loop)  # type: ignore[assignment]
        self.url = ready.result(timeout=10)
        return self.url

    async def _start(self) -> str:
        started: asyncio.Future[str] = self._loop.create_future()
        self._stop = asyncio.Event()

        async def serve() -> None:
            async with hostile_server(self._behaviour) as url:
                started.set_result(url)
                assert self._stop is not None
                await self._stop.wait()

        self._done = asyncio.ensure_future(serve())
        return await started

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._stop is not None
            assert self._done is not None
            self._stop.set()
            await self._done

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
