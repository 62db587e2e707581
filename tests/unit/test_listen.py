"""Where our servers listen: one address syntax for the daemon's --status-addr, the operator's --health-addr
and `status --daemon`."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import main
from controller.listen import connect_host, parse_addr

EXPLANATION = "'9464': expected HOST:PORT, [IPv6]:PORT or :PORT (every interface), e.g. 127.0.0.1:9464"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":8080", ("", 8080)),  # every interface, IPv4 and IPv6
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9", ("::1", 9)),
        ("[::]:65535", ("::", 65535)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_addr(text) == expected


@pytest.mark.parametrize("text", ["8080", "host:", ":99999", ":-1", "host:http", ""])
def test_bad_addresses_say_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected HOST:PORT, \[IPv6\]:PORT or :PORT \(every interface\)"):
        parse_addr(text)


@pytest.mark.parametrize(
    ("host", "expected"), [("", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("10.1.2.3", "10.1.2.3")]
)
def test_a_client_connects_to_loopback_for_every_interface(host: str, expected: str) -> None:
    assert connect_host(host) == expected


def test_both_front_ends_explain_a_bad_address_the_same_way(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One parser: the daemon read `:PORT` as 0.0.0.0 (IPv4 only) and the operator as every interface."""
    assert main(["watch", str(tmp_path), "--status-addr", "9464"]) == 2
    watch_error = capsys.readouterr().err
    assert main(["operator", "--health-addr", "9464"]) == 2
    operator_error = capsys.readouterr().err
    assert watch_error == "localmodel watch: --status-addr: " + EXPLANATION + "\n"
    assert operator_error == "localmodel operator: --health-addr: " + EXPLANATION + "\n"
