"""Where is the engine? The same order the `docker model` CLI uses (docs/engine-contract.md §1.2 and §9).

1. an explicit URL (`--engine`, `base_url`), or `unix:///path/docker.sock` for Docker Desktop's engine socket;
2. `MODEL_RUNNER_HOST`;
3. `docker model status --json` (its `endpointHost`), when the CLI is installed and the runner is running;
4. `http://127.0.0.1:12434` on a host, `http://model-runner.docker.internal` inside a container.

Every URL is reduced to the engine's *root*: the client appends `/engines/...`, `/models/...` to it.
The CLI reports OpenAI-style URLs ending in `/v1/`; only that suffix is stripped. Hazard: the
`_configure` URL is always `<root>/engines[/<backend>]/_configure`, never `<OpenAI URL minus /v1>/_configure`
(that path does not exist and answers 404).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from controller import wire
from controller.engine.types import Endpoint
from controller.redact import redact, split_credentials

HOST_DEFAULT_URL = "http://127.0.0.1:12434"
CONTAINER_DEFAULT_URL = "http://model-runner.docker.internal"
DOCKER_STATUS_TIMEOUT = 2.0  # seconds
ENV_HOST = "MODEL_RUNNER_HOST"
UNIX_SCHEME = "unix://"
_OPENAI_SUFFIXES = ("/engines/v1", "/v1")

SOURCE_EXPLICIT = "explicit"
SOURCE_ENV = ENV_HOST
SOURCE_DOCKER_STATUS = "docker model status"
SOURCE_DEFAULT = "default"


def discover_endpoint(
    explicit: str | None = None,
    *,
    env: Mapping[str, str] = os.environ,
    run_docker: Callable[[], str | None] | None = None,
    in_container: bool | None = None,
) -> Endpoint:
    """The engine endpoint, with `source` saying which step found it. Raises ValueError for a malformed URL.

    `run_docker` returns the output of `docker model status --json` (None when unavailable); it defaults
    to running the command with a 2 s timeout. `in_container` defaults to detecting `/.dockerenv` or
    `KUBERNETES_SERVICE_HOST`.
    """
    if explicit:
        return parse_endpoint(explicit, source=SOURCE_EXPLICIT)
    host = env.get(ENV_HOST, "").strip()
    if host:
        return parse_endpoint(host, source=SOURCE_ENV)
    found = endpoint_from_status((run_docker or docker_model_status)())
    if found is not None:
        return found
    if in_container is None:
        in_container = running_in_container(env)
    return Endpoint(url=CONTAINER_DEFAULT_URL if in_container else HOST_DEFAULT_URL, source=SOURCE_DEFAULT)


def parse_endpoint(text: str, *, source: str = SOURCE_EXPLICIT) -> Endpoint:
    """`http://host:port[/v1]`, `host:port` or `unix:///path/docker.sock` (Docker Desktop's engine socket,
    where every path carries the `/exp/vDD4.40` prefix). `user:password@` in the URL is split off into
    `auth` (sent as basic auth, never shown). Raises ValueError, naming the problem and the fix, for
    anything else: every command turns it into a usage error (exit 2)."""
    _check_characters(text)
    text = text.strip()
    if text.startswith(UNIX_SCHEME):
        path = text[len(UNIX_SCHEME) :]
        if not path.startswith("/"):
            raise ValueError(f"engine socket {redact(text)!r}: give an absolute path, e.g. unix:///var/run/docker.sock")
        return Endpoint(url="http://localhost", prefix=wire.DESKTOP_PREFIX, uds=path, source=source)
    url, auth = split_credentials(_with_scheme(text))
    return Endpoint(url=engine_root(url), source=source, auth=auth)


def engine_root(url: str) -> str:
    """The engine root for a URL: scheme added when missing, trailing `/`, `/v1` or `/engines/v1` removed.
    Raises ValueError for a URL an HTTP client could not use (see `check_engine_url`)."""
    _check_characters(url)
    candidate = _with_scheme(url.strip())
    check_engine_url(candidate, shown=url)
    root = candidate.rstrip("/")
    for suffix in _OPENAI_SUFFIXES:
        if root.endswith(suffix):
            return root[: -len(suffix)]
    return root


def check_engine_url(url: str, *, shown: str | None = None) -> None:
    """The one validation of an engine URL (--engine, MODEL_RUNNER_HOST, an operator's engine list):
    http(s), a host, a port in 1-65535, no query or fragment, no control characters or spaces."""
    what = f"engine URL {redact(shown if shown is not None else url)!r}"
    _check_characters(url, what)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what}: expected http://host:port (or unix:///path/to/docker.sock)")
    if " " in url:
        raise ValueError(f"{what}: remove the spaces; expected http://host:port")
    if parts.query or parts.fragment:
        raise ValueError(f"{what}: remove the query or fragment; give only http://host:port[/path]")
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise ValueError(f"{what}: port {port_text!r} is not a port number: use 1-65535, e.g. :12434") from None
    if port == 0:
        raise ValueError(f"{what}: port 0 is not a port an engine can listen on: use 1-65535, e.g. :12434")
    if not parts.hostname:
        raise ValueError(f"{what}: no host: expected http://host:port, e.g. http://127.0.0.1:12434")


def _with_scheme(text: str) -> str:
    return text if "://" in text else "http://" + text


def _check_characters(text: str, what: str | None = None) -> None:
    """Control characters (CR, LF, TAB, NUL, DEL...) have no place in a URL: a header injection or a paste
    accident. Refused anywhere in the text, its ends included."""
    bad = next((ch for ch in text if ord(ch) < 0x20 or ord(ch) == 0x7F), None)
    if bad is not None:
        what = what or f"engine URL {redact(text)!r}"
        raise ValueError(
            f"{what}: contains the control character {bad!r}: remove it (a newline or tab copied with the URL?)"
        )


def endpoint_from_status(output: str | None) -> Endpoint | None:
    """The endpoint in `docker model status --json` output, or None if the runner is not running or the
    output has no usable `endpointHost`."""
    status = _json_object(output or "")
    if status is None or status.get("running") is not True:
        return None
    host = status.get("endpointHost")
    if not isinstance(host, str) or not host.strip():
        return None
    try:
        return Endpoint(url=engine_root(host), source=SOURCE_DOCKER_STATUS)
    except ValueError:
        return None


def docker_model_status() -> str | None:
    """Output of `docker model status --json`, or None when the command is missing, fails or hangs."""
    try:
        done = subprocess.run(
            ["docker", "model", "status", "--json"],
            capture_output=True,
            text=True,
            timeout=DOCKER_STATUS_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def running_in_container(env: Mapping[str, str] = os.environ) -> bool:
    return Path("/.dockerenv").exists() or "KUBERNETES_SERVICE_HOST" in env


def _json_object(output: str) -> dict[str, Any] | None:
    """The first line of the output that is a JSON object (the CLI may print warnings around it)."""
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None
