"""API-server outages: requests retried for as long as it takes, one log line when the API server stops
answering and one when it answers again.

kopf retries a failed API request along `settings.networking.error_backoffs` and, once they are used
up (1+1+2+3+5+8+13+21 s by default), gives up ("escalating"): a watch then restarts with the whole
sequence again, so after an outage of more than a minute it could sleep 21 s more after the API server
was back, and every attempt of every request wrote an error line (727 in one 90 s outage). Here:

- `RetryForever` is the backoff sequence: capped (at most `cap` seconds between attempts) and endless,
  so no request or watch ever gives up, and a watch reconnects within `cap` seconds of the API server's
  return;
- `ApiOutage` is a logging filter on the process's log handlers that holds back kopf's per-attempt
  error lines and the operator's own failed status writes during an outage, writes one line when it
  starts, probes the API server (`GET /readyz`) every second while it lasts, and writes one line when it
  is over (with how long it lasted and how many lines it held back).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Final

from controller.logs import log_event

log = logging.getLogger("localmodel.operator")

CAP_SECONDS: Final = 5.0
PROBE_SECONDS: Final = 1.0
# kopf's lines for one failed attempt of an API request, and for an Event it could not post.
_ATTEMPT = re.compile(r"^Request attempt #\d+(?:/\d+)? failed; (?:will retry|escalating): (\S+ \S+) -> (.*)$", re.S)
_KOPF_NOISE = ("Failed to post an event", "Request attempt")
# Failures that are an outage (nothing answers, or it answers that it cannot serve); a 403, a 404 or a
# 409 is an answer, logged as kopf logs it.
_OUTAGE_ERRORS = (
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ClientOSError",
    "ClientPayloadError",
    "TimeoutError",
    "APIServerError",
    "APITooManyRequestsError",
    "ConnectionRefused",
    "ConnectError",
    "RemoteProtocolError",
    "ReadError",
)


class RetryForever:
    """`settings.networking.error_backoffs`: 1, 2, 4, then `cap` seconds between attempts, without end.
    Iterable again for every request (kopf iterates it once per request), and not Sized, so that kopf
    numbers the attempts without a total."""

    def __init__(self, cap: float = CAP_SECONDS, first: float = 1.0) -> None:
        self.cap = cap
        self.first = first

    def __iter__(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield min(delay, self.cap)
            delay *= 2


def is_outage_error(text: str) -> bool:
    return any(name in text for name in _OUTAGE_ERRORS)


class ApiOutage(logging.Filter):
    """Tracks one API-server outage at a time. Install it on the log handlers (`install`); report the
    operator's own failed requests with `failed`."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[bool]],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        probe_every: float = PROBE_SECONDS,
    ) -> None:
        super().__init__("localmodel-api-outage")
        self._probe = probe
        self._clock = clock
        self._sleep = sleep
        self._probe_every = probe_every
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.active = False
        self.started = 0.0
        self.failures = 0
        self.held = 0
        self.outages = 0
        self._last: tuple[logging.LogRecord, bool] | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)

    def uninstall(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self)
        if self._task is not None:
            self._task.cancel()

    # ---- logging.Filter ------------------------------------------------------------------------

    def filter(self, record: logging.LogRecord) -> bool:
        # Installed on every handler: a record passes through it once per handler; decide once.
        if self._last is not None and self._last[0] is record:
            return self._last[1]
        decision = self._decide(record)
        self._last = (record, decision)
        return decision

    def _decide(self, record: logging.LogRecord) -> bool:
        if record.name == log.name and getattr(record, "lm_event", None) in ("ApiServerDown", "ApiServerUp"):
            return True
        if not record.name.startswith("kopf") or record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        if not message.startswith(_KOPF_NOISE):
            return True
        match = _ATTEMPT.match(message)
        if match is not None and not is_outage_error(match.group(2)) and not self.active:
            return True  # an answer (403, 404, ...), not an outage: kopf's line as it is
        what, error = (match.group(1), match.group(2)) if match else ("an Event", message)
        self.failed(what, error)
        return False

    # ---- the outage ----------------------------------------------------------------------------

    def failed(self, what: str, error: object) -> None:
        """A request to the API server failed for want of an answer: the first failure of an outage
        writes one line and starts probing; the others are counted."""
        if self.active:
            self.failures += 1
            self.held += 1
            return
        self.active = True
        self.started = self._clock()
        self.failures, self.held = 1, 0
        self.outages += 1
        log_event(
            log,
            "ApiServerDown",
            f"the API server does not answer ({what}: {str(error)[:300]}); every request and watch is retried "
            f"(every {CAP_SECONDS:.0f} s at most) until it does",
            level=logging.ERROR,
        )
        self._start_probe()

    def _start_probe(self) -> None:
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._spawn()
        else:
            loop.call_soon_threadsafe(self._spawn)

    def _spawn(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while self.active:
            await self._sleep(self._probe_every)
            try:
                answered = await self._probe()
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                log.debug("API server probe failed: %s", exc)
                answered = False
            if answered:
                self.recovered()

    def recovered(self) -> None:
        if not self.active:
            return
        self.active = False
        lasted = self._clock() - self.started
        log_event(
            log,
            "ApiServerUp",
            f"the API server answers again after {lasted:.0f} s ({self.failures} failed requests retried, "
            f"{self.held} log lines held back); watches resume",
        )
