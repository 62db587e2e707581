"""Endpoint discovery: explicit URL, MODEL_RUNNER_HOST, `docker model status --json`, defaults.

See docs/engine-contract.md §1.2 and §9.
"""

from __future__ import annotations

import json

import pytest

from controller.engine.discovery import discover_endpoint, docker_model_status, endpoint_from_status, engine_root
from controller.engine.types import Endpoint
from controller.wire import DESKTOP_PREFIX


def no_docker() -> str | None:
    return None


def status_output(**fields: object) -> str:
    return json.dumps({"running": True, "backends": {"llama.cpp": "Running"}, "kind": "Docker Engine", **fields})


@pytest.mark.parametrize(
    ("given", "root"),
    [
        ("http://127.0.0.1:12434", "http://127.0.0.1:12434"),
        ("http://127.0.0.1:12434/", "http://127.0.0.1:12434"),
        ("127.0.0.1:12434", "http://127.0.0.1:12434"),
        ("localhost:31245/v1", "http://localhost:31245"),
        ("http://127.0.0.1:12434/v1/", "http://127.0.0.1:12434"),
        ("http://model-runner.docker.internal/engines/v1/", "http://model-runner.docker.internal"),
        ("https://dmr.example.com/prefix/v1", "https://dmr.example.com/prefix"),
        ("http://host:12434/engines", "http://host:12434/engines"),  # only OpenAI suffixes are stripped
    ],
)
def test_engine_root(given: str, root: str) -> None:
    assert engine_root(given) == root


@pytest.mark.parametrize("bad", ["ftp://host", "http://", "http://host:12434/?x=1"])
def test_malformed_urls_are_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        engine_root(bad)


def test_explicit_url_wins_over_everything() -> None:
    endpoint = discover_endpoint(
        "http://10.0.0.5:12434/v1/", env={"MODEL_RUNNER_HOST": "http://other:1"}, run_docker=lambda: status_output()
    )
    assert endpoint == Endpoint(url="http://10.0.0.5:12434", source="explicit")


def test_explicit_unix_socket_is_docker_desktop_with_its_prefix() -> None:
    endpoint = discover_endpoint("unix:///var/run/docker.sock", env={}, run_docker=no_docker)
    assert endpoint == Endpoint(
        url="http://localhost", prefix=DESKTOP_PREFIX, uds="/var/run/docker.sock", source="explicit"
    )


def test_relative_socket_path_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute path"):
        discover_endpoint("unix://docker.sock", env={}, run_docker=no_docker)


def test_model_runner_host_comes_before_the_cli() -> None:
    def docker() -> str:
        raise AssertionError("docker must not be run when MODEL_RUNNER_HOST is set")

    endpoint = discover_endpoint(env={"MODEL_RUNNER_HOST": "localhost:31245"}, run_docker=docker)
    assert endpoint == Endpoint(url="http://localhost:31245", source="MODEL_RUNNER_HOST")


def test_cli_endpoint_host_is_reduced_to_the_root() -> None:
    output = status_output(endpoint="http://172.17.0.1:12434/v1/", endpointHost="http://127.0.0.1:12434/v1/")
    endpoint = discover_endpoint(env={}, run_docker=lambda: output, in_container=False)
    assert endpoint == Endpoint(url="http://127.0.0.1:12434", source="docker model status")


@pytest.mark.parametrize(
    "output",
    [
        None,
        "",
        "docker: 'model' is not a docker command.",
        json.dumps({"running": False, "endpointHost": "http://127.0.0.1:12434/v1/"}),
        status_output(),  # no endpointHost
        status_output(endpointHost="ftp://nowhere"),
    ],
)
@pytest.mark.parametrize(
    ("in_container", "url"), [(False, "http://127.0.0.1:12434"), (True, "http://model-runner.docker.internal")]
)
def test_unusable_cli_output_falls_back_to_the_default(output: str | None, in_container: bool, url: str) -> None:
    endpoint = discover_endpoint(env={}, run_docker=lambda: output, in_container=in_container)
    assert endpoint == Endpoint(url=url, source="default")


def test_status_line_among_warnings() -> None:
    output = "WARNING: something\n" + status_output(endpointHost="http://127.0.0.1:12435/v1/") + "\n"
    assert endpoint_from_status(output) == Endpoint(url="http://127.0.0.1:12435", source="docker model status")


@pytest.mark.parametrize(
    ("env", "dockerenv", "url"),
    [
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, False, "http://model-runner.docker.internal"),
        ({}, True, "http://model-runner.docker.internal"),
        ({}, False, "http://127.0.0.1:12434"),
    ],
)
def test_container_detection(env: dict[str, str], dockerenv: bool, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "controller.engine.discovery.Path.exists", lambda self: dockerenv and str(self) == "/.dockerenv"
    )
    assert discover_endpoint(env=env, run_docker=no_docker).url == url


def test_missing_docker_cli_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert docker_model_status() is None
