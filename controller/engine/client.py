"""Async HTTP client for one Docker Model Runner engine (docs/engine-contract.md is the contract).

Every method sends exactly one request and either returns parsed values (controller.engine.types)
or raises a typed error (controller.engine.errors) that carries the HTTP status, the URL and the
engine's own text. The engine answers errors in plain text (`http.Error`), validation errors with
500 and busy runners with 409, so the status code alone decides the error type per route.

    async with EngineClient("http://127.0.0.1:12434") as engine:
        await engine.pull("ai/smollm2")
        await engine.configure({"model": "ai/smollm2", "context-size": 8192})
        stored = await engine.stored_configs("ai/smollm2")

Limits: nothing the engine sends can hang a caller or fill its memory (an engine that trickles a byte
every few seconds, an endless body, a pull line without a newline). Each kind of request has its own:

- reads (`/models`, `/engines/_configure`, `/engines/ps`, `/engines/requests`, status, df, version):
  the whole exchange (connect, headers, body) within `deadline` (30 s); a body of at most 16 MiB.
- writes (configure, unload, delete): within `deadline` (30 s); at most 1 MiB.
- preload (`X-Preload-Only`): within its `timeout` (300 s: the engine waits up to 300 s for a runner)
  plus 30 s; at most 1 MiB.
- pull (`POST /models/create`): no total (a big model takes hours), but at most 300 s without a
  complete progress line, lines of at most 1 MiB and 1 GiB of stream in all.
- an error answer (any status but 2xx): its first 64 KiB are read; messages show 500 characters.

Hitting one raises `EngineTooSlow`, `AnswerTooLarge` or `PullFailed` (all retried with backoff), naming
the request, the limit and what the engine had sent. The per-read `timeout` (10 s) still applies too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from controller import __version__, wire
from controller.engine.errors import (
    AnswerTooLarge,
    BackendNotInstalled,
    BadRequest,
    DeleteConflict,
    EngineError,
    EngineRejected,
    EngineTooSlow,
    EngineUnreachable,
    LoadFailed,
    ModelNotInRegistry,
    NotFound,
    PullFailed,
    PullRejected,
    RequestTooLarge,
    RunnerBusy,
    ServerError,
)
from controller.engine.types import (
    Endpoint,
    LiveRunnerConfig,
    ModelInfo,
    PullProgress,
    PullResult,
    RunnerInfo,
    StoredConfig,
)
from controller.redact import split_credentials

KIB = 1024
MIB = 1024 * KIB
REQUEST_DEADLINE = 30.0  # seconds for a whole read or write exchange (connect, headers, body)
PULL_LINE_TIMEOUT = 300.0  # seconds allowed between two complete lines of a pull stream
PRELOAD_TIMEOUT = 300.0  # the engine itself waits up to 300 s for a runner to become ready
PRELOAD_MARGIN = 30.0  # seconds on top of a preload's timeout for the engine to answer once ready
MAX_READ_BODY = 16 * MIB  # GET /engines/requests carries recorded request bodies: generous
MAX_WRITE_BODY = 1 * MIB  # configure, unload, delete, preload answer a few bytes
MAX_ERROR_BODY = 64 * KIB  # of an error answer, only this much is read
MAX_MESSAGE = 500  # characters of an engine's text kept in a message
MAX_PULL_LINE = 1 * MIB  # a progress line is some 300 bytes
MAX_PULL_STREAM = 1024 * MIB  # a million progress lines: far beyond any real pull
# Connections kept open between requests. httpx keeps 20, and checks every idle one before each request
# (a select() per connection): after a burst of concurrent passes that doubled the CPU of each request
# (bench/scale_bench.py). A new plain-HTTP connection to a local engine costs less.
POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=8)
# Short exchanges (reads, configures, unloads, deletes) one client has in flight at once; more wait their
# turn. With twenty passes at once, httpx's pool spent more CPU matching requests to connections and opening
# new ones than on the requests: at most 4 at once cost a quarter less per request (bench/scale_bench.py).
# Pulls and preloads, which take minutes, never wait for a turn nor hold one; the wait counts in the deadline.
MAX_EXCHANGES = 4

ErrorMap = Mapping[int, type[EngineError]]
T = TypeVar("T")

# Status codes every route shares; each method adds its own.
_COMMON: ErrorMap = {400: BadRequest, 404: NotFound}
# The 503 text of an inference or preload for a backend the engine could not install on demand.
_INSTALL_FAILED = "backend installation failed:"
# Headers that describe the bytes on the wire, not the body once read.
_WIRE_HEADERS = ("content-encoding", "content-length", "transfer-encoding")


@dataclass(frozen=True)
class Limits:
    """What one exchange may take: seconds for all of it (None: no total) and bytes of a success body."""

    deadline: float | None
    max_body: int


class EngineClient:
    """One engine, one connection pool. Not thread-safe; share it between tasks of one event loop."""

    def __init__(
        self,
        endpoint: Endpoint | str,
        *,
        timeout: float = 10.0,
        deadline: float = REQUEST_DEADLINE,
        transport: httpx.AsyncBaseTransport | None = None,
        name: str | None = None,
    ) -> None:
        """`timeout`: seconds per connect, read or write; `deadline`: seconds for a whole read or write
        exchange. A URL with `user:password@` sends them as basic auth and never shows them."""
        if not isinstance(endpoint, Endpoint):
            url, auth = split_credentials(endpoint)
            endpoint = Endpoint(url=url, auth=auth)
        self.endpoint = endpoint
        self.name = name or self.endpoint.shown
        self.timeout = timeout
        self.deadline = deadline
        self.requests_sent = 0
        self._base = self.endpoint.url.rstrip("/") + self.endpoint.prefix
        if transport is None and self.endpoint.uds:
            transport = httpx.AsyncHTTPTransport(uds=self.endpoint.uds)
        # No Origin header, ever: the engine's CORS middleware answers 403 to unknown origins.
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            http2=False,
            auth=httpx.BasicAuth(*self.endpoint.auth) if self.endpoint.auth else None,
            headers={"User-Agent": f"localmodel/{__version__}", "Accept": "application/json"},
            limits=POOL_LIMITS,
        )
        self._reads = Limits(self.deadline, MAX_READ_BODY)
        self._writes = Limits(self.deadline, MAX_WRITE_BODY)
        self._turns = asyncio.Semaphore(MAX_EXCHANGES)

    def sibling(self) -> EngineClient:
        """A client of its own for the same engine (the engine watch's: one connection, never shared)."""
        return EngineClient(self.endpoint, timeout=self.timeout, deadline=self.deadline, name=self.name)

    async def __aenter__(self) -> EngineClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"EngineClient({self.name!r}, {self._base!r})"

    # -- health and inventory ---------------------------------------------------------------

    async def ping(self) -> bool:
        """True when the engine answers `GET /` with 200; False when it is unreachable or answers otherwise."""
        try:
            response = await self._send("GET", wire.ROUTE_ROOT, limits=self._reads)
        except EngineError:
            return False
        return response.status_code == 200

    async def version(self) -> str:
        """`GET /version`: the engine's version (`v1.2.6`, `dev` for an unversioned build)."""
        return await self._get(wire.ROUTE_VERSION, lambda body: _field(body, wire.VERSION, str, "version"))

    async def status(self) -> dict[str, str]:
        """`GET /engines/status`: backend name -> status text (`Running: llama.cpp ...`, `Not Installed: ...`)."""
        return await self._get(wire.ROUTE_ENGINES_STATUS, lambda body: _mapping_of(body, str, "engine status"))

    async def df(self) -> dict[str, int]:
        """`GET /engines/df`: disk usage in bytes (`models_disk_usage`, `default_backend_disk_usage`)."""
        return await self._get(wire.ROUTE_DF, lambda body: _mapping_of(body, int, "disk usage"))

    async def list_models(self) -> list[ModelInfo]:
        """`GET /models`: the models in the local store."""
        return await self._get(wire.ROUTE_MODELS, lambda body: [_parse_model(item) for item in _list(body)])

    async def get_model(self, ref: str) -> ModelInfo:
        """`GET /models/{ref}`; raises NotFound when the model is not in the local store."""
        return await self._get(wire.model_path(ref), _parse_model)

    # -- pull and delete -------------------------------------------------------------------

    async def pull(
        self,
        ref: str,
        *,
        on_progress: Callable[[PullProgress], None] | None = None,
        bearer_token: str | None = None,
    ) -> PullResult:
        """`POST /models/create`, reading the NDJSON progress stream line by line.

        The stream has no total deadline (a big model takes hours); it fails if the engine sends no complete
        line for PULL_LINE_TIMEOUT seconds, a line longer than MAX_PULL_LINE or more than MAX_PULL_STREAM in
        all. An `error` line, or a stream that ends without a `success` line, raises PullFailed.
        """
        body: dict[str, Any] = {wire.PULL_FROM: ref}
        if bearer_token:
            body[wire.BEARER_TOKEN] = bearer_token
        timeout = httpx.Timeout(self.timeout, read=PULL_LINE_TIMEOUT)
        errors: ErrorMap = {**_COMMON, 401: PullRejected, 422: PullRejected, 500: PullFailed}
        success: PullProgress | None = None
        request = self._request("POST", wire.ROUTE_PULL, json=body, timeout=timeout)
        url = self._shown(request)
        loop = asyncio.get_running_loop()
        lines = 0
        try:
            async with asyncio.timeout(PULL_LINE_TIMEOUT) as quiet, self._exchange(request) as response:
                if response.status_code != 200:
                    answer = await _buffered(response, MAX_ERROR_BODY, truncate=True)
                    text = _text(answer)
                    refused = response.status_code == 500 and _registry_refused(text)
                    if refused or (response.status_code == 404 and _content_type(answer) != "text/html"):
                        raise ModelNotInRegistry(text, status=response.status_code, url=url, model=ref)
                    raise self._error(answer, errors)
                async for line in _ndjson_lines(response, url):
                    quiet.reschedule(loop.time() + PULL_LINE_TIMEOUT)
                    lines += 1
                    progress = self._parse_progress(line, response)
                    if on_progress is not None:
                        on_progress(progress)
                    if progress.type == wire.LINE_ERROR:
                        raise PullFailed(_clip(progress.message) or "pull failed", status=200, url=url)
                    if progress.type == wire.LINE_SUCCESS:
                        success = progress
        except TimeoutError:
            raise PullFailed(
                f"the engine sent no complete progress line for {PULL_LINE_TIMEOUT:g} s while pulling {ref} "
                f"({lines} lines before); the pull is abandoned and retried",
                status=200 if lines else None,
                url=url,
            ) from None
        if success is None:
            raise PullFailed("pull stream ended without success", status=200, url=url)
        return PullResult(message=success.message, cached=success.message.startswith("Using cached model"))

    async def delete_model(self, ref: str, *, force: bool = False) -> None:
        """`DELETE /models/{ref}[?force=true]`. A model with several tags needs `force` (DeleteConflict)."""
        params = {wire.QUERY_FORCE: "true"} if force else None
        response = await self._send("DELETE", wire.model_path(ref), params=params, limits=self._writes)
        if response.status_code == 409:
            text = _text(response)
            raise DeleteConflict(
                f"{text}: {ref} has several tags; delete one tag, or delete with force",
                status=409,
                url=self._shown(response.request),
            )
        self._check(response, _COMMON)

    # -- configuration ----------------------------------------------------------------------

    async def configure(self, body: dict[str, Any], *, backend: str | None = None) -> None:
        """`POST /engines[/{backend}]/_configure` with the full desired config (the engine replaces, never merges).

        202 means stored (or unchanged). 409 RunnerBusy: a request is in flight on the runner and the stored
        config is unchanged. 500 EngineRejected: a flag or hf-overrides key refused, with the engine's text.
        """
        response = await self._send("POST", wire.configure_path(backend), json=body, limits=self._writes)
        self._check(response, {**_COMMON, 409: RunnerBusy, 500: EngineRejected})

    async def stored_configs(self, model: str | None = None) -> list[StoredConfig]:
        """`GET /engines/_configure[?model=]`: the configs the next load of each (backend, model, mode) will use.

        The filter matches the model's resolved ID, so a config stored before the pull is not found by it.
        """
        params = {wire.QUERY_MODEL: model} if model is not None else None
        return await self._get(
            wire.ROUTE_STORED_CONFIGS, lambda body: [_parse_stored(item) for item in _list(body)], params=params
        )

    async def stored_configs_body(self) -> bytes:
        """`GET /engines/_configure` as the engine sent it, unparsed: the engine watch digests it and parses
        it (`parse_stored_configs`) only when it changed."""
        return (await self.stored_configs_probe())[0]

    async def stored_configs_probe(self) -> tuple[bytes, object | None]:
        """`stored_configs_body` and the connection it came on (see `ps_probe`)."""
        response = await self._send("GET", wire.ROUTE_STORED_CONFIGS, limits=self._reads)
        self._check(response, _COMMON)
        return response.content, response.extensions.get("network_stream")

    async def ps_probe(self) -> tuple[list[RunnerInfo], object | None, int]:
        """`GET /engines/ps` and the connection it came on (httpx's network stream, compared by identity).
        The engine's HTTP server never closes an idle keep-alive connection, so on a client with one
        connection, a new one means the engine process went away: the engine watch's cheap restart signal.
        Also returns the size of the answer in bytes."""
        response = await self._send("GET", wire.ROUTE_PS, limits=self._reads)
        self._check(response, _COMMON)
        runners = self._read(response, lambda body: [_parse_runner(item) for item in _list(body)])
        return runners, response.extensions.get("network_stream"), len(response.content)

    async def runner_configs(self, model: str | None = None) -> list[LiveRunnerConfig]:
        """`GET /engines/requests[?model=]`: the config each live runner was started with (entries without one
        are skipped). Compare with `stored_configs` to find a runner still serving an older config."""
        params = {wire.QUERY_MODEL: model} if model is not None else None
        return await self._get(
            wire.ROUTE_REQUESTS,
            lambda body: [live for live in map(_parse_live, _list(body)) if live is not None],
            params=params,
        )

    async def ps(self) -> list[RunnerInfo]:
        """`GET /engines/ps`: runners that are loaded or loading."""
        return await self._get(wire.ROUTE_PS, lambda body: [_parse_runner(item) for item in _list(body)])

    async def unload(self, *, models: list[str] | None = None, backend: str | None = None, all: bool = False) -> int:
        """`POST /engines/unload`; returns how many idle runners were evicted (busy ones stay).

        `all=True` also deletes every stored config; `models` with a `backend` deletes those models' configs
        on that backend; `models` alone evicts on every backend and deletes no config.
        """
        body = {
            wire.UNLOAD_ALL: all,
            wire.UNLOAD_BACKEND: backend or "",
            wire.UNLOAD_MODELS: list(models or []),
        }
        response = await self._send("POST", wire.ROUTE_UNLOAD, json=body, limits=self._writes)
        self._check(response, _COMMON)
        return self._read(response, lambda body: _field(body, wire.UNLOADED_RUNNERS, int, "unload answer"))

    async def preload(
        self, model: str, *, backend: str | None = None, mode: str = wire.COMPLETION, timeout: float = PRELOAD_TIMEOUT
    ) -> None:
        """Load the model's runner for `mode` now and wait until it is ready (`X-Preload-Only: true` on the
        inference route of that mode: chat completions, embeddings, rerank or image generation).

        500 LoadFailed with the engine's text (bad arguments, a crash). BackendNotInstalled: 412, or 503
        `backend installation failed: ...` (the engine's on-demand install of MLX, SGLang, diffusers failed).
        """
        response = await self._send(
            "POST",
            wire.inference_path(backend, mode),
            json={wire.MODEL: model},
            headers={wire.PRELOAD_ONLY_HEADER: "true"},
            timeout=httpx.Timeout(self.timeout, read=timeout),
            limits=Limits(timeout + PRELOAD_MARGIN, MAX_WRITE_BODY),
            long=True,
        )
        if response.status_code == 503 and _text(response).startswith(_INSTALL_FAILED):
            raise BackendNotInstalled(_text(response), status=503, url=self._shown(response.request))
        self._check(response, {**_COMMON, 412: BackendNotInstalled, 500: LoadFailed})

    # -- transport --------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self._base + path

    def _shown(self, request: httpx.Request) -> str:
        """The request's URL as messages show it: over a Unix socket, the socket path and the request path."""
        if self.endpoint.uds:
            return f"unix://{self.endpoint.uds}:{request.url.raw_path.decode('ascii', 'replace')}"
        return str(request.url)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Request:
        return self._http.build_request(
            method,
            self._url(path),
            params=params,
            json=json,
            headers=headers,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )

    @asynccontextmanager
    async def _exchange(self, request: httpx.Request) -> AsyncIterator[httpx.Response]:
        """Send `request`, yield the response with its body not read yet; transport failures become
        EngineUnreachable naming the engine (the socket for a Unix socket)."""
        self.requests_sent += 1
        with self._unreachable_on_transport_error(request):
            response = await self._http.send(request, stream=True)
            try:
                yield response
            finally:
                await response.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        limits: Limits,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        long: bool = False,
    ) -> httpx.Response:
        """One exchange within `limits`: the response with its body read (an error body: its first
        MAX_ERROR_BODY bytes). A short one first waits for one of MAX_EXCHANGES turns, within the same
        deadline; a `long` one (a preload) goes at once."""
        request = self._request(method, path, params=params, json=json, headers=headers, timeout=timeout)
        received = [0]  # bytes of the body so far
        sent = False
        try:
            async with asyncio.timeout(limits.deadline), nullcontext() if long else self._turns:
                sent = True
                async with self._exchange(request) as response:
                    if response.is_success:
                        return await _buffered(response, limits.max_body, counter=received, url=self._shown(request))
                    return await _buffered(response, MAX_ERROR_BODY, truncate=True, counter=received)
        except TimeoutError:
            if not sent:
                raise EngineTooSlow(
                    f"{method} {request.url.path} was not sent: the engine was still answering the {MAX_EXCHANGES} "
                    f"requests before it after {limits.deadline:g} s; it is overloaded",
                    url=self._shown(request),
                ) from None
            raise EngineTooSlow(
                f"the engine did not finish answering {method} {request.url.path} within {limits.deadline:g} s "
                f"(it had sent {received[0]} bytes of the body); it is overloaded or not a Docker Model Runner",
                url=self._shown(request),
            ) from None

    @contextmanager
    def _unreachable_on_transport_error(self, request: httpx.Request) -> Iterator[None]:
        """httpx transport failures (refused, reset, DNS, timeouts) -> EngineUnreachable naming the engine."""
        url = self._shown(request)
        where = f"the socket {self.endpoint.uds} ({url})" if self.endpoint.uds else url
        try:
            yield
        except httpx.TimeoutException as exc:
            raise EngineUnreachable(
                f"engine did not answer in time ({type(exc).__name__}) at {where}", url=url
            ) from exc
        except httpx.TransportError as exc:
            detail = str(exc) or type(exc).__name__
            raise EngineUnreachable(f"cannot reach the engine at {where}: {detail}", url=url) from exc

    async def _get(self, path: str, parse: Callable[[Any], T], *, params: Mapping[str, str] | None = None) -> T:
        response = await self._send("GET", path, params=params, limits=self._reads)
        self._check(response, _COMMON)
        return self._read(response, parse)

    def _check(self, response: httpx.Response, errors: ErrorMap) -> None:
        if not response.is_success:
            raise self._error(response, errors)

    def _error(self, response: httpx.Response, errors: ErrorMap) -> EngineError:
        return _error(response, errors, self._shown(response.request))

    def _read(self, response: httpx.Response, parse: Callable[[Any], T]) -> T:
        """Decode the JSON body and parse it; a malformed answer becomes a ServerError naming what was wrong."""
        try:
            return parse(_decode(response.text, _content_type(response)))
        except _Malformed as exc:
            raise _malformed_error(response, str(exc), self._shown(response.request)) from exc

    def _parse_progress(self, line: bytes, response: httpx.Response) -> PullProgress:
        try:
            return _progress(_decode(line.decode("utf-8", "replace"), _content_type(response)))
        except _Malformed as exc:
            raise _malformed_error(response, str(exc), self._shown(response.request)) from exc


async def _buffered(
    response: httpx.Response,
    limit: int,
    *,
    truncate: bool = False,
    counter: list[int] | None = None,
    url: str = "",
) -> httpx.Response:
    """The response with its body read, at most `limit` bytes (decoded). Past the limit: with `truncate`,
    the rest is left unread and the response carries `truncated`; otherwise AnswerTooLarge."""
    counter = counter if counter is not None else [0]
    request = response.request
    declared = response.headers.get("content-length", "")
    if not truncate and declared.isdigit() and int(declared) > limit:
        raise _too_large(request, limit, f"it announced {int(declared)} bytes", url)
    chunks: list[bytes] = []
    cut = False
    async for chunk in response.aiter_bytes():
        room = limit - counter[0]
        if len(chunk) > room:
            if not truncate:
                raise _too_large(request, limit, f"it had sent more than {limit} bytes", url)
            chunks.append(chunk[:room])
            counter[0] += room
            cut = True
            break
        chunks.append(chunk)
        counter[0] += len(chunk)
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _WIRE_HEADERS]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=b"".join(chunks),
        request=request,
        extensions={**response.extensions, "truncated": cut},
    )


def _too_large(request: httpx.Request, limit: int, what: str, url: str) -> AnswerTooLarge:
    return AnswerTooLarge(
        f"the answer to {request.method} {request.url.path} is larger than {limit // KIB} KiB ({what}); "
        "this is not a Docker Model Runner answer, or the engine is broken",
        url=url or str(request.url),
    )


async def _ndjson_lines(response: httpx.Response, url: str) -> AsyncIterator[bytes]:
    """The non-empty lines of an NDJSON stream, each at most MAX_PULL_LINE bytes, MAX_PULL_STREAM in all."""
    buffer = b""
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > MAX_PULL_STREAM:
            raise PullFailed(
                f"the pull stream passed {MAX_PULL_STREAM // MIB} MiB without ending; abandoned and retried",
                status=200,
                url=url,
            )
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            if line.strip():
                yield line
        if len(buffer) > MAX_PULL_LINE:
            raise PullFailed(
                f"the engine sent a pull progress line longer than {MAX_PULL_LINE // KIB} KiB without a newline "
                f"(starting {_clip(buffer[:80].decode('utf-8', 'replace'), 80)!r}): not an NDJSON progress stream",
                status=200,
                url=url,
            )
    if buffer.strip():
        yield buffer


# -- status codes ---------------------------------------------------------------------------


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def _text(response: httpx.Response) -> str:
    """The engine's plain-text answer without Go's trailing newline, cut to MAX_MESSAGE characters."""
    text = _clip(response.text.strip())
    if response.extensions.get("truncated"):
        text += f" (the answer was longer than {MAX_ERROR_BODY // KIB} KiB; the rest was not read)"
    return text


def _content_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def _error(response: httpx.Response, errors: ErrorMap, url: str) -> EngineError:
    status = response.status_code
    request = response.request
    if response.is_redirect:
        location = response.headers.get("location", "(no Location)")
        return ServerError(
            f"the engine answered {request.method} {request.url.path} with a redirect ({status}) to {location}; "
            "localmodel does not follow redirects: give the engine's root URL (e.g. http://127.0.0.1:12434)",
            status=status,
            url=url,
        )
    if status == 413:
        return RequestTooLarge(
            f"the engine (or a proxy before it) refused {request.method} {request.url.path} as too large (413): "
            f"{_text(response) or 'no text'}; sending it again will not help",
            status=status,
            url=url,
        )
    text = _text(response)
    if _content_type(response) == "text/html":
        text = f"an HTML page ({_clip(text, 120)}); is this address a Docker Model Runner, not a web server or proxy?"
    cls = errors.get(status, ServerError)
    message = text or f"HTTP {status} {response.reason_phrase}".strip()
    if cls is ServerError:
        message = f"unexpected answer {status}: {message}"
    return cls(message, status=status, url=url)


# Docker Hub answers 401 `insufficient_scope` for a repository it does not have, and the engine passes
# that on as a 500 (docs/engine-contract.md §6.3): a pull that a retry cannot fix, unlike a 500 for an
# unreachable registry.
_REGISTRY_REFUSALS = ("insufficient_scope", "401 unauthorized", "manifest unknown", "name unknown", "not found")


def _registry_refused(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _REGISTRY_REFUSALS)


# -- parsing (defensive: a malformed answer is a ServerError, never a KeyError) -----------------


class _Malformed(ValueError):
    """Raised by the parsers below; the client turns it into a ServerError with the status and URL."""


def _malformed_error(response: httpx.Response, detail: str, url: str) -> ServerError:
    request = response.request
    return ServerError(
        f"malformed answer from the engine to {request.method} {request.url.path}: {detail}",
        status=response.status_code,
        url=url,
    )


def _decode(text: str, content_type: str = "") -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if content_type == "text/html" or text.lstrip()[:1] == "<":
            raise _Malformed(
                f"not JSON but an HTML page ({text[:80]!r}); is this address a Docker Model Runner?"
            ) from exc
        raise _Malformed(f"not JSON ({exc}): {text[:200]!r}") from exc


def _as(value: Any, kind: type[T], what: str) -> T:
    # bool is an int in Python; JSON true is never a valid count or size.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Malformed(f"{what}: expected {kind.__name__}, got {value!r}")
    return value


def _list(value: Any) -> list[Any]:
    if value is None:
        return []  # Go encodes an empty (nil) slice as null
    return _as(value, list, "body")


def _mapping_of(value: Any, kind: type[T], what: str) -> dict[str, T]:
    return {str(k): _as(v, kind, f"{what} {k!r}") for k, v in _as(value, dict, what).items()}


def _field(obj: Any, key: str, kind: type[T], what: str, default: T | None = None) -> T:
    """`obj[key]` checked against `kind`; missing or null gives `default`, or is malformed without one."""
    if not isinstance(obj, dict):
        raise _Malformed(f"{what}: expected an object, got {obj!r}")
    if obj.get(key) is None:
        if default is None:
            raise _Malformed(f"{what}: missing {key!r}")
        return default
    return _as(obj[key], kind, f"{what} field {key!r}")


def _optional(obj: dict[str, Any], key: str, kind: type[T], what: str) -> T | None:
    value = obj.get(key)
    return None if value is None else _as(value, kind, f"{what} field {key!r}")


def _parse_model(item: Any) -> ModelInfo:
    what = "model"
    model_id = _field(item, wire.MODEL_ID, str, what)
    tags = _field(item, wire.MODEL_TAGS, list, what, default=[])
    config = _field(item, wire.MODEL_CONFIG, dict, what, default={})
    return ModelInfo(
        id=model_id,
        tags=tuple(_as(tag, str, f"{what} tag") for tag in tags),
        format=_optional(config, wire.MODEL_FORMAT, str, what),
        context_size=_optional(config, wire.MODEL_CONTEXT_SIZE, int, what),
        size=_optional(config, wire.MODEL_SIZE, str, what),
        raw=item,
    )


def parse_stored_configs(body: bytes) -> list[StoredConfig]:
    """The entries of a `GET /engines/_configure` body; a malformed one raises ServerError."""
    try:
        return [_parse_stored(item) for item in _list(_decode(body.decode("utf-8", "replace")))]
    except _Malformed as exc:
        raise ServerError(f"malformed answer from the engine to GET {wire.ROUTE_STORED_CONFIGS}: {exc}") from exc


def _parse_stored(item: Any) -> StoredConfig:
    what = "stored config entry"
    return StoredConfig(
        backend=_field(item, wire.ENTRY_BACKEND, str, what),
        model=_field(item, wire.ENTRY_MODEL, str, what, default=""),
        model_id=_field(item, wire.ENTRY_MODEL_ID, str, what),
        mode=_field(item, wire.ENTRY_MODE, str, what, default=wire.COMPLETION),
        config=_field(item, wire.ENTRY_CONFIG, dict, what, default={}),
    )


def _parse_live(item: Any) -> LiveRunnerConfig | None:
    what = "requests entry"
    if not isinstance(item, dict) or item.get(wire.REQUESTS_CONFIG) is None:
        return None  # no live runner for this model (`{}` is a runner started with an empty config)
    return LiveRunnerConfig(
        model_id=_field(item, wire.REQUESTS_MODEL, str, what),
        config=_field(item, wire.REQUESTS_CONFIG, dict, what),
    )


def _parse_runner(item: Any) -> RunnerInfo:
    what = "runner"
    last_used = _field(item, wire.PS_LAST_USED, str, what, default="")
    return RunnerInfo(
        backend=_field(item, wire.PS_BACKEND, str, what),
        model=_field(item, wire.PS_MODEL, str, what),
        mode=_field(item, wire.PS_MODE, str, what, default=wire.COMPLETION),
        in_use=_field(item, wire.PS_IN_USE, bool, what, default=False),
        loading=_field(item, wire.PS_LOADING, bool, what, default=False),
        keep_alive=_optional(item, wire.PS_KEEP_ALIVE, str, what),
        last_used=None if last_used in ("", wire.GO_ZERO_TIME) else last_used,
    )


def _progress(item: Any) -> PullProgress:
    what = "pull progress line"
    layer = _field(item, wire.PROGRESS_LAYER, dict, what, default={})
    layer = {str(key).lower(): value for key, value in layer.items()}  # v1.0.10 writes ID, Size, Current
    return PullProgress(
        type=_field(item, wire.PROGRESS_TYPE, str, what),
        message=_field(item, wire.PROGRESS_MESSAGE, str, what, default=""),
        total=_optional(item, wire.PROGRESS_TOTAL, int, what),
        current=_optional(layer, wire.LAYER_CURRENT, int, what),
        layer=_optional(layer, wire.LAYER_ID, str, what),
    )
