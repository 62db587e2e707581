"""`localmodel status`: tables from a daemon's GET /status or straight from an engine."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TextIO

import httpx

from controller import wire
from controller.engine.capabilities import Capabilities, detect
from controller.engine.errors import EngineError
from controller.listen import connect_host, parse_addr
from controller.standalone.connect import connect
from controller.standalone.oneshot import engine_inventory
from controller.standalone.terminal import table

DAEMON_DEADLINE = 10.0  # seconds for the whole GET /status: a daemon (or impostor) that trickles is cut off
DAEMON_MAX_BODY = 64 * 1024 * 1024  # bytes of a /status document (some 2 KiB per model)

DAEMON_HEADERS = ["NAME", "MODEL", "BACKEND", "CONTEXT", "KEEP-ALIVE", "LOADED", "READY", "MESSAGE"]
ENGINE_HEADERS = ["MODEL", "BACKEND", "MODE", "CONTEXT", "KEEP-ALIVE", "LOADED", "READY", "MESSAGE"]


def daemon_rows(status: dict[str, Any]) -> list[list[str]]:
    """One row per LocalModel of a daemon's /status document."""
    rows: list[list[str]] = []
    for model in status.get("models", []):
        engine = (model.get("engines") or [{}])[0]
        config = engine.get("appliedConfig") or {}
        ready: dict[str, Any] = next((c for c in model.get("conditions", []) if c.get("type") == "Ready"), {})
        is_ready = ready.get("status") == "True"
        rows.append(
            [
                model.get("name", ""),
                model.get("model", ""),
                engine.get("backend") or "-",
                str(config.get(wire.CONTEXT_SIZE, "-")),
                str(config.get(wire.KEEP_ALIVE, "-")),
                "yes" if engine.get("loaded") else "no",
                "True" if is_ready else ready.get("reason", "Unknown"),
                ready.get("message", ""),
            ]
        )
    return rows


def show_daemon(addr: str, output: str, out: TextIO, err: TextIO) -> int:
    try:
        host, port = parse_addr(addr)
    except ValueError as exc:
        print(f"localmodel status: --daemon: {exc}", file=err)
        return 2
    host = connect_host(host)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/status"
    try:
        status = fetch_status(url)
    except (httpx.HTTPError, ValueError) as exc:
        print(
            f"localmodel status: cannot read {url}: {exc} (is `localmodel watch --status-addr {addr}` running?)",
            file=err,
        )
        return 1
    if output == "json":
        print(json.dumps(status, indent=2), file=out)
    else:
        print(table(DAEMON_HEADERS, daemon_rows(status)), file=out)
        engine = status.get("engine", {})
        state = (
            "up"
            if engine.get("up")
            else "DOWN: " + str(engine.get("lastError"))
            if engine.get("up") is False
            else "not observed yet"
        )
        print(f"\nengine {engine.get('url')} ({state}); directory {status.get('directory')}", file=out)
        if engine.get("capabilities"):
            print(f"engine release: {capabilities_line(engine['capabilities'])}", file=out)
        for file in status.get("files", []):
            for error in file.get("errors", []):
                print(f"file error: {error.get('text')}", file=out)
    summary = status.get("summary", {})
    all_ready = summary.get("ready") == summary.get("models") and not summary.get("fileErrors")
    return 0 if all_ready else 1


def fetch_status(url: str, *, deadline: float = DAEMON_DEADLINE, max_body: int = DAEMON_MAX_BODY) -> Any:
    """GET `url` as JSON within `deadline` seconds in all (headers included) and `max_body` bytes; ValueError
    when either is passed: a per-read timeout alone lets a server that sends a byte a second hold us forever."""

    async def fetch() -> bytes:
        chunks: list[bytes] = []
        size = 0
        async with httpx.AsyncClient(timeout=min(5.0, deadline)) as http, http.stream("GET", url) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_body:
                    raise ValueError(f"the answer is larger than {max_body // (1024 * 1024)} MiB")
                chunks.append(chunk)
        return b"".join(chunks)

    async def bounded() -> bytes:
        try:
            async with asyncio.timeout(deadline):
                return await fetch()
        except TimeoutError:
            raise ValueError(f"the answer did not finish within {deadline:g} s") from None

    return json.loads(asyncio.run(bounded()))


def capabilities_line(shown: dict[str, Any]) -> str:
    """One line from a `Capabilities.to_dict()`: the release, how it was found, what it lacks."""
    release = shown.get("version") or (
        f"older than {shown['olderThan']} (no GET /version)" if shown.get("olderThan") else "unknown"
    )
    lacks = shown.get("lacks") or []
    what = f"lacks {', '.join(lacks)}" if lacks else "has every feature localmodel uses"
    return f"model-runner {release} (from {shown.get('detectedBy')}); {what} (see docs/compatibility.md)"


def show_engine(engine: str | None, output: str, out: TextIO, err: TextIO) -> int:
    async def read() -> tuple[str, list[Any], Capabilities]:
        async with connect(engine, quiet=True) as client:
            rows = await engine_inventory(client)
            return client.endpoint.shown, rows, await detect(client)

    try:
        url, rows, found = asyncio.run(read())
    except ValueError as exc:
        print(f"localmodel status: {exc}", file=err)
        return 2
    except EngineError as exc:
        print(f"localmodel status: {exc}", file=err)
        return 1
    if output == "json":
        shown = {"engine": url, "capabilities": found.to_dict(), "models": [row.to_dict() for row in rows]}
        print(json.dumps(shown, indent=2), file=out)
        return 0
    lines = [[r.model, r.backend, r.mode, r.context, r.keep_alive, r.loaded, "-", r.message] for r in rows]
    print(table(ENGINE_HEADERS, lines), file=out)
    entries = f"{len(rows)} entr" + ("y" if len(rows) == 1 else "ies")
    print(f"\nengine {url}: {entries} (READY needs LocalModels: use --daemon, or localmodel plan FILE...)", file=out)
    print(f"engine release: {capabilities_line(found.to_dict())}", file=out)
    return 0
