"""Network limits, measured against a baseline in the same run (issue 10, cases 8 and 9).

    .venv/bin/python bench/network_limits_bench.py

1. An endless JSON body: bytes read and memory taken before the request ends. Baseline: a plain httpx
   request with the same per-read timeout (what the engine client did before), cut off by the bench
   after a few seconds; limited: EngineClient.
2. An engine that trickles a byte every 0.2 s: seconds until the request ends. Baseline: per-read
   timeout only (never ends; the bench stops waiting); limited: EngineClient with a 2 s deadline.
3. 1,100 half-sent requests against a status server in a child process with RLIMIT_NOFILE 1024:
   the child's open descriptors, /healthz answers, and accept() errors logged. Baseline: aiohttp's
   TCPSite as the daemon used it; limited: the guarded server (controller/standalone/server.py).

Figures depend on the machine; compare the two columns of one run, not runs with each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from controller.engine.client import EngineClient  # noqa: E402
from controller.engine.errors import EngineError  # noqa: E402
from tests.contract.hostile import endless, hostile_server, trickle  # noqa: E402

BASELINE_CUTOFF = 5.0  # seconds the bench lets a baseline request run


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def endless_body() -> tuple[str, str]:
    async with hostile_server(endless()) as url:
        before = rss_mib()
        received = 0

        async def baseline() -> None:
            nonlocal received
            async with httpx.AsyncClient(timeout=10.0) as http, http.stream("GET", url + "/models") as response:
                chunks = []
                async for chunk in response.aiter_bytes():
                    chunks.append(chunk)  # what response.read() does: keep it all
                    received += len(chunk)

        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(baseline(), BASELINE_CUTOFF)
        base = (
            f"{received / 2**20:.0f} MiB read, +{rss_mib() - before:.0f} MiB RSS, "
            f"still reading after {time.monotonic() - started:.1f} s"
        )
        before = rss_mib()
        started = time.monotonic()
        async with EngineClient(url) as client:
            try:
                await client.list_models()
                outcome = "answered"
            except EngineError as exc:
                outcome = type(exc).__name__
        limited = f"{outcome} after {time.monotonic() - started:.2f} s, +{max(0.0, rss_mib() - before):.0f} MiB RSS"
    return base, limited


async def trickling_engine() -> tuple[str, str]:
    async with hostile_server(trickle(0.2)) as url:
        started = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=10.0) as http:
                await asyncio.wait_for(http.get(url + "/engines/ps"), BASELINE_CUTOFF)
            base = "answered"
        except TimeoutError:
            base = f"not finished after {time.monotonic() - started:.1f} s (the bench stopped waiting)"
        started = time.monotonic()
        async with EngineClient(url, deadline=2.0) as client:
            try:
                await client.ps()
                limited = "answered"
            except EngineError as exc:
                limited = f"{type(exc).__name__} after {time.monotonic() - started:.2f} s"
    return base, limited


CHILD = """
import asyncio, sys, resource
sys.path.insert(0, {repo!r})
from aiohttp import web
from controller.standalone.server import ConnectionGuard
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
async def healthz(request): return web.Response(text="ok\\n")
async def main():
    app = web.Application(); app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False); await runner.setup()
    if {guarded}:
        await asyncio.get_running_loop().create_server(ConnectionGuard(runner.server), "127.0.0.1", {port})
    else:
        await web.TCPSite(runner, "127.0.0.1", {port}).start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def slow_clients(guarded: bool, count: int = 1100) -> str:
    port = free_port()
    log = Path(f"/tmp/network-bench-{os.getpid()}-{guarded}.log")
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(repo=str(REPO), guarded=guarded, port=port)],
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
        )
    sockets: list[socket.socket] = []
    try:
        assert child.stdout is not None
        child.stdout.readline()
        for _ in range(count):
            sock = socket.socket()
            sock.settimeout(2)
            try:
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            except OSError:
                pass
            sockets.append(sock)
        time.sleep(2)
        fds = len(os.listdir(f"/proc/{child.pid}/fd"))
        answered = 0
        for _ in range(5):
            with contextlib.suppress(httpx.HTTPError):
                answered += httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3).status_code == 200
        errors = log.read_text().count("out of system resource")
    finally:
        for sock in sockets:
            sock.close()
        child.kill()
        child.wait()
        log.unlink(missing_ok=True)
    return f"{fds} descriptors, /healthz {answered}/5, {errors} accept() errors logged"


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    rows = [
        ("endless body", *asyncio.run(endless_body())),
        ("trickling engine", *asyncio.run(trickling_engine())),
        ("1,100 half-sent requests", slow_clients(False), slow_clients(True)),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  baseline | limited")
    for name, base, limited in rows:
        print(f"{name:<{width}}  {base} | {limited}")


if __name__ == "__main__":
    main()
