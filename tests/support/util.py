"""Small helpers shared by tests and benchmarks: LocalModel YAML, free ports, polling with a deadline."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def localmodel_yaml(name: str, model: str, **spec: object) -> str:
    """A LocalModel document; `spec` values are written as they are (`contextSize=4096`, `keepAlive='"-1"'`)."""
    lines = [
        "apiVersion: localmodel.io/v1alpha1",
        "kind: LocalModel",
        f"metadata: {{name: {name}}}",
        "spec:",
        f"  model: {model}",
    ] + [f"  {key}: {value}" for key, value in spec.items()]
    return "\n".join(lines) + "\n"


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(probe: Callable[[], T], *, timeout: float = 10.0, what: str = "condition", every: float = 0.05) -> T:
    """Poll `probe` until it returns something truthy; fail with its last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")
        time.sleep(every)
