"""API-server outages: kopf's requests retried without end at a capped interval, and one log line per
outage and one when it is over (controller/operator/outage.py)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator

import pytest

from controller.operator.outage import ApiOutage, RetryForever

KOPF = logging.getLogger("kopf._cogs.clients.watching")


def test_retry_forever_is_capped_endless_and_fresh_for_every_request() -> None:
    backoffs = RetryForever(cap=5.0)
    assert list(itertools.islice(backoffs, 8)) == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    assert list(itertools.islice(backoffs, 2)) == [1.0, 2.0]  # kopf iterates it once per request
    assert not hasattr(backoffs, "__len__")  # kopf numbers attempts "#N" with no total: no escalation


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


async def test_one_line_when_the_outage_starts_and_one_when_it_ends(lines: Lines) -> None:
    up = asyncio.Event()
    now = [100.0]
    probes: list[float] = []

    async def probe() -> bool:
        probes.append(now[0])
        return up.is_set()

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)

    outage = ApiOutage(probe, clock=lambda: now[0], sleep=sleep)
    outage.install(asyncio.get_running_loop())
    try:
        for attempt in range(1, 60):  # 90 s of kopf's attempts on three streams
            for url in ("/apis/localmodel.io/v1alpha1/localmodels", "/api/v1/nodes", "/api/v1/events"):
                KOPF.error(
                    f"Request attempt #{attempt} failed; will retry: GET https://api{url} -> "
                    "ClientConnectorError(ConnectionKey(host='127.0.0.1'), ConnectionRefusedError(111))"
                )
        logging.getLogger("kopf.objects").warning("Failed to post an event. Ignoring and continuing.")
        KOPF.error("Request attempt #1 failed; will retry: PATCH https://api/x -> APIForbiddenError('no')")
        await asyncio.sleep(0)
        assert outage.active
        up.set()
        for _ in range(100):
            if not outage.active:
                break
            await asyncio.sleep(0)
    finally:
        outage.uninstall()
    shown = [r for r in lines.records if r.levelno >= logging.WARNING or r.name == "localmodel.operator"]
    messages = [r.getMessage() for r in shown]
    assert len(messages) == 2, messages
    assert messages[0].startswith("the API server does not answer (GET https://api/apis/localmodel.io/v1alpha1/")
    assert messages[1].startswith("the API server answers again after 1 s (179 failed requests retried")
    assert not outage.active


def test_an_answer_that_is_not_an_outage_is_logged_as_kopf_logs_it(lines: Lines) -> None:
    outage = ApiOutage(lambda: asyncio.sleep(0, result=True))  # type: ignore[arg-type]
    logging.getLogger().handlers[-1].addFilter(outage)
    try:
        KOPF.error("Request attempt #1 failed; will retry: PATCH https://api/x -> APIForbiddenError('forbidden')")
    finally:
        logging.getLogger().handlers[-1].removeFilter(outage)
    assert [r.getMessage()[:17] for r in lines.records] == ["Request attempt #"]
    assert not outage.active
