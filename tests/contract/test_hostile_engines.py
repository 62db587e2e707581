"""The engine client against servers that are not good engines (tests/contract/hostile.py), over loopback.

Issue 10, case 8 and "messages that mislead": every request ends (an overall deadline, not only a
per-read timeout), takes bounded memory (a body limit, a line limit for pull streams), and says what
the engine answered instead of calling it unreachable.
"""

from __future__ import annotations

import pytest

from controller.engine import client as client_module
from controller.engine.client import MAX_ERROR_BODY, MAX_MESSAGE, EngineClient
from controller.engine.errors import (
    AnswerTooLarge,
    EngineTooSlow,
    EngineUnreachable,
    PullFailed,
    RequestTooLarge,
    ServerError,
)
from tests.contract.hostile import (
    bad_json,
    big_error,
    endless,
    fixed,
    hostile_server,
    html_page,
    pull_lines_then_silence,
    pull_without_newline,
    redirect,
    trickle,
)


async def test_an_endless_body_ends_in_a_clear_error_at_the_size_limit() -> None:
    async with hostile_server(endless()) as url, EngineClient(url) as client:
        with pytest.raises(AnswerTooLarge, match=r"GET /models is larger than 16384 KiB") as caught:
            await client.list_models()
    assert caught.value.retryable
    assert not isinstance(caught.value, EngineUnreachable)


async def test_a_trickling_engine_is_cut_off_by_the_deadline_not_only_per_read() -> None:
    # One byte every 0.05 s never trips the 5 s per-read timeout; the 1 s deadline for the whole exchange ends it.
    async with hostile_server(trickle(0.05)) as url, EngineClient(url, timeout=5.0, deadline=1.0) as client:
        with pytest.raises(EngineTooSlow, match=r"did not finish answering GET /engines/ps within 1 s") as caught:
            await client.ps()
        assert await client.ping() is False
    assert caught.value.retryable
    assert "unreachable" not in str(caught.value)


async def test_a_trickling_error_answer_is_cut_off_too() -> None:
    trickling_500 = trickle(0.05, status="500 Internal Server Error", content_type="text/plain")
    async with hostile_server(trickling_500) as url, EngineClient(url, timeout=5.0, deadline=1.0) as client:
        with pytest.raises(EngineTooSlow):
            await client.configure({"model": "ai/x"})


async def test_a_pull_line_without_a_newline_ends_at_the_line_limit() -> None:
    async with hostile_server(pull_without_newline()) as url, EngineClient(url) as client:
        with pytest.raises(PullFailed, match=r"longer than 1024 KiB without a newline") as caught:
            await client.pull("ai/smollm2")
    assert caught.value.retryable


async def test_an_endless_stream_of_progress_lines_ends_at_the_stream_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MAX_PULL_STREAM", 4 * client_module.MIB)
    line = b'{"type":"progress","message":"Downloaded: 1 MB","total":10}\n'
    async with hostile_server(endless(piece=line * 1000)) as url, EngineClient(url) as client:
        with pytest.raises(PullFailed, match=r"passed 4 MiB without ending"):
            await client.pull("ai/smollm2")


async def test_a_pull_that_goes_silent_fails_after_the_inactivity_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "PULL_LINE_TIMEOUT", 0.5)
    seen: list[str] = []
    async with hostile_server(pull_lines_then_silence(2)) as url, EngineClient(url) as client:
        with pytest.raises(PullFailed, match=r"no complete progress line for 0.5 s .*\(2 lines before\)"):
            await client.pull("ai/smollm2", on_progress=lambda p: seen.append(p.message))
    assert seen == ["Downloaded: 0 MB", "Downloaded: 1 MB"]


async def test_a_pull_trickling_bytes_without_newlines_fails_after_the_inactivity_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Bytes keep arriving (so no per-read timeout fires), but no complete line does.
    monkeypatch.setattr(client_module, "PULL_LINE_TIMEOUT", 0.5)
    async with hostile_server(trickle(0.05)) as url, EngineClient(url) as client:
        with pytest.raises(PullFailed, match=r"no complete progress line"):
            await client.pull("ai/smollm2")


async def test_an_html_page_is_named_not_called_unreachable() -> None:
    async with hostile_server(html_page()) as url, EngineClient(url) as client:
        with pytest.raises(ServerError, match=r"not JSON but an HTML page .*Docker Model Runner\?") as caught:
            await client.list_models()
    assert not isinstance(caught.value, EngineUnreachable)


async def test_a_redirect_is_named_with_its_location() -> None:
    async with hostile_server(redirect("http://127.0.0.1:1/login")) as url, EngineClient(url) as client:
        with pytest.raises(ServerError, match=r"redirect \(307\) to http://127.0.0.1:1/login") as caught:
            await client.stored_configs()
    assert not isinstance(caught.value, EngineUnreachable)
    assert "root URL" in str(caught.value)


async def test_bad_json_is_a_malformed_answer() -> None:
    async with hostile_server(bad_json()) as url, EngineClient(url) as client:
        with pytest.raises(ServerError, match=r"malformed answer .* not JSON") as caught:
            await client.list_models()
    assert not isinstance(caught.value, EngineUnreachable)


async def test_a_2_mb_error_body_is_truncated_in_the_message() -> None:
    async with hostile_server(big_error()) as url, EngineClient(url) as client:
        with pytest.raises(ServerError) as caught:
            await client.ps()
    message = str(caught.value)
    assert message.startswith("unexpected answer 500: EEEE")
    assert f"longer than {MAX_ERROR_BODY // 1024} KiB" in message
    assert len(message) < MAX_MESSAGE + 400


async def test_a_413_is_not_retried_as_transient() -> None:
    too_large = fixed("413 Request Entity Too Large", b"body too big\n")
    async with hostile_server(too_large) as url, EngineClient(url) as client:
        with pytest.raises(RequestTooLarge, match="refused POST /engines/_configure as too large") as caught:
            await client.configure({"model": "ai/x"})
    assert not caught.value.retryable


async def test_a_500_on_a_read_says_what_the_engine_answered() -> None:
    locked = fixed("500 Internal Server Error", b"database is locked\n")
    async with hostile_server(locked) as url, EngineClient(url) as client:
        with pytest.raises(ServerError, match="unexpected answer 500: database is locked") as caught:
            await client.list_models()
    assert not isinstance(caught.value, EngineUnreachable)
