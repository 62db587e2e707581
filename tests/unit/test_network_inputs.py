"""Engine URLs and what is printed about them (issue 10, cases 10 and 12), and the log guards (case 9):

- credentials in `--engine http://user:password@host` are sent as basic auth and never shown: not in
  logs, /status, errors or `status` output (one helper, controller.redact);
- one validation of engine URLs: a port out of range or a control character is a usage error (exit 2)
  from plan, apply, status and watch alike, with a message and no traceback;
- a warning repeated identically is logged once per window, with a count.
"""

from __future__ import annotations

import io
import json
import logging
import socket
from pathlib import Path

import httpx
import pytest

from controller import cli
from controller.engine.client import EngineClient
from controller.engine.discovery import discover_endpoint, engine_root, parse_endpoint
from controller.engine.errors import EngineUnreachable, ServerError
from controller.logs import JsonFormatter, RepeatFilter, TextFormatter, setup_logging
from controller.operator.engines import parse_engine
from controller.policy import unreachable_status
from controller.redact import redact, split_credentials
from controller.standalone.daemon import Daemon
from controller.status import Reason

SECRET = "hunter2"
WITH_CREDENTIALS = f"http://bob:{SECRET}@127.0.0.1:12434"


# --- redaction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"GET {WITH_CREDENTIALS}/models failed", "GET http://***@127.0.0.1:12434/models failed"),
        ("https://token@host/v1", "https://***@host/v1"),
        ("http://u:p@ss@host:1/x?y=a@b", "http://***@host:1/x?y=a@b"),  # a raw @ in the password
        ("'http://u:p@h'", "'http://***@h'"),
        ("two: http://a:b@h1 and http://c:d@h2", "two: http://***@h1 and http://***@h2"),
        ("mail bob@example.com, http://h:1/a@b", "mail bob@example.com, http://h:1/a@b"),
        ("no url here", "no url here"),
    ],
)
def test_redact_hides_userinfo_and_nothing_else(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_split_credentials_decodes_escapes() -> None:
    assert split_credentials("http://bob:p%40ss@h:1/v1") == ("http://h:1/v1", ("bob", "p@ss"))
    assert split_credentials("http://h:1") == ("http://h:1", None)
    assert split_credentials("http://tok@h") == ("http://h", ("tok", ""))


def test_an_endpoint_keeps_credentials_apart_and_never_shows_them() -> None:
    endpoint = parse_endpoint(WITH_CREDENTIALS + "/v1")
    assert endpoint.url == "http://127.0.0.1:12434"
    assert endpoint.auth == ("bob", SECRET)
    assert SECRET not in repr(endpoint)
    assert SECRET not in endpoint.shown


def test_model_runner_host_with_credentials_is_split_too() -> None:
    endpoint = discover_endpoint(env={"MODEL_RUNNER_HOST": WITH_CREDENTIALS}, run_docker=lambda: None)
    assert (endpoint.url, endpoint.auth) == ("http://127.0.0.1:12434", ("bob", SECRET))


async def test_the_client_sends_basic_auth_and_no_error_names_the_password() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)

    async with EngineClient(WITH_CREDENTIALS, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(EngineUnreachable) as caught:
            await client.ps()
        assert SECRET not in client.name
        assert SECRET not in repr(client)
    assert seen[0].headers["authorization"].startswith("Basic ")
    assert SECRET not in str(seen[0].url)
    assert SECRET not in str(caught.value)
    assert SECRET not in (caught.value.url or "")


def test_engine_errors_redact_whatever_text_they_are_given() -> None:
    error = ServerError(f"proxy said: {WITH_CREDENTIALS} refused", status=502, url=WITH_CREDENTIALS + "/models")
    assert SECRET not in str(error)
    assert SECRET not in error.message


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_log_lines_never_carry_credentials(formatter: logging.Formatter) -> None:
    record = logging.LogRecord("localmodel.engine", logging.INFO, __file__, 1, "using %s", (WITH_CREDENTIALS,), None)
    record.lm_fields = {"engine": WITH_CREDENTIALS}
    line = formatter.format(record)
    assert SECRET not in line
    assert "http://***@127.0.0.1:12434" in line


async def test_the_daemon_status_document_never_carries_credentials(tmp_path: Path) -> None:
    async with EngineClient(WITH_CREDENTIALS) as client:
        daemon = Daemon(tmp_path, client, interval=1, concurrency=1)
        document = json.dumps(daemon.snapshot())
    assert SECRET not in document
    assert '"url": "http://127.0.0.1:12434"' in document


def test_an_operator_engine_is_not_named_after_its_credentials() -> None:
    assert parse_engine(WITH_CREDENTIALS, "--engine").name == "127.0.0.1:12434"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_status_output_never_shows_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["status", "--engine", f"http://bob:{SECRET}@127.0.0.1:{closed_port()}"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "cannot reach the engine" in err
    assert SECRET not in out + err


# --- one URL validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:99999", "port '99999' is not a port number: use 1-65535"),
        ("127.0.0.1:65536", "port '65536'"),
        ("http://127.0.0.1:0", "port 0"),
        ("http://127.0.0.1:12x", "port '12x'"),
        ("http://127.0.0.1:1\r\nX-Injected: 1", r"control character '\\r'"),
        ("http://127.0.0.1:1\n", r"control character '\\n'"),
        ("http://127.0.0.1\t:1", r"control character '\\t'"),
        ("http://127.0.0.1:1/\x00", r"control character '\\x00'"),
        ("http://127.0.0.1:1/\x7f", r"control character '\\x7f'"),
        ("http://exa mple:1", "remove the spaces"),
        ("http://:12434", "no host"),
        ("ftp://h:1", "expected http://host:port"),
        ("http://h:1/?x=1", "remove the query"),
        (f"http://bob:{SECRET}@h:99999", "port"),
        ("unix://relative.sock", "absolute path"),
        ("unix:///var/run/docker.sock\n", "control character"),
    ],
)
def test_bad_engine_urls_are_refused_with_the_fix(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_endpoint(url)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:1", "https://h", "h:65535", "[::1]:12434", "http://h:12434/v1/", WITH_CREDENTIALS]
)
def test_good_engine_urls_pass(url: str) -> None:
    assert engine_root(split_credentials(url if "://" in url else "http://" + url)[0])


@pytest.mark.parametrize("command", ["plan", "apply", "status", "watch"])
@pytest.mark.parametrize(
    ("url", "message"),
    [("http://127.0.0.1:99999", "port '99999' is not a port number"), ("http://h:1\r\nX: y", "control character")],
)
def test_a_bad_engine_url_is_a_usage_error_from_every_command(
    command: str, url: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.yaml").write_text(
        "apiVersion: localmodel.io/v1alpha1\nkind: LocalModel\nmetadata: {name: m}\nspec: {model: ai/smollm2}\n"
    )
    args = {"status": [], "watch": [str(tmp_path), "--log-format", "text"]}.get(command, [str(tmp_path)])
    stream = io.StringIO()
    if command == "watch":  # the daemon logs; route its log lines where the test can read them
        setup_logging("text", stream=stream)
    try:
        code = cli.main([command, *args, "--engine", url])
    finally:
        logging.getLogger().handlers.clear()
    out, err = capsys.readouterr()
    text = out + err + stream.getvalue()
    assert code == 2
    assert message in text
    assert "Traceback" not in text


# --- messages that name what the engine answered --------------------------------------------------


def test_an_engine_that_answered_wrongly_is_not_called_unreachable() -> None:
    status = unreachable_status("local", ServerError("not JSON but an HTML page ('<html>')", status=200, url="u"))
    assert status.reason == Reason.ENGINE_ERROR
    assert "unreachable" not in status.message
    assert "HTML page" in status.message
    refused = unreachable_status("local", EngineUnreachable("cannot reach the engine at http://h:1: refused"))
    assert refused.reason == Reason.ENGINE_UNREACHABLE


# --- the log flood guard -----------------------------------------------------------------------------


def _record(message: str, created: float, level: int = logging.ERROR) -> logging.LogRecord:
    record = logging.LogRecord("asyncio", level, __file__, 1, message, None, None)
    record.created = created
    return record


def test_an_error_storm_is_logged_once_per_window_with_a_count() -> None:
    guard = RepeatFilter(window=60)
    storm = [_record("socket.accept() out of system resource", 1000 + i / 1000) for i in range(10_000)]
    passed = [r for r in storm if guard.filter(r)]
    assert len(passed) == 1
    later = _record("socket.accept() out of system resource", 1061)
    assert guard.filter(later)
    assert later.getMessage().endswith("(and 9999 more identical in the 60 s before)")


def test_different_errors_and_info_lines_are_not_held_back() -> None:
    guard = RepeatFilter(window=60)
    assert guard.filter(_record("engine down", 1))
    assert guard.filter(_record("file error a.yaml", 1))
    assert all(guard.filter(_record("applied m", 1, logging.INFO)) for _ in range(5))


def test_the_installed_handler_holds_the_storm_back() -> None:
    stream = io.StringIO()
    setup_logging("json", stream=stream)
    try:
        for _ in range(1000):
            logging.getLogger("asyncio").error("socket.accept() out of system resource")
    finally:
        logging.getLogger().handlers.clear()
    assert len(stream.getvalue().splitlines()) == 1


def test_the_guard_keeps_a_bounded_memory() -> None:
    guard = RepeatFilter(window=60, keys=100)
    for i in range(10_000):
        guard.filter(_record(f"error {i}", 1))
    assert len(guard._seen) == 100


async def test_a_unix_socket_failure_names_the_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "docker.sock"  # nothing listens there
    async with EngineClient(parse_endpoint(f"unix://{socket_path}")) as client:
        assert client.name == f"unix://{socket_path}"
        with pytest.raises(EngineUnreachable) as caught:
            await client.ps()
    assert f"the socket {socket_path}" in str(caught.value)
    assert "http://localhost" not in str(caught.value)


def test_status_on_a_unix_socket_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    socket_path = tmp_path / "docker.sock"
    assert cli.main(["status", "--engine", f"unix://{socket_path}"]) == 1
    err = capsys.readouterr().err
    assert str(socket_path) in err
    assert "http://localhost" not in err
