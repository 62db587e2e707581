"""Running the real `localmodel watch` process for end-to-end tests, and polling it with deadlines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.emulator import REPO_ROOT
from tests.support.util import eventually, free_port, localmodel_yaml

WATCH_ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def watch_command(directory: Path, engine_url: str, port: int, interval: float | None, *args: str) -> list[str]:
    """`python -m controller watch DIR --engine URL [--interval N] ARGS --status-addr 127.0.0.1:PORT`, JSON logs.
    `interval` None: the default drift pass."""
    return [
        sys.executable,
        "-m",
        "controller",
        "watch",
        str(directory),
        "--engine",
        engine_url,
        *(["--interval", str(interval)] if interval is not None else []),
        *args,
        "--status-addr",
        f"127.0.0.1:{port}",
        "--log-format",
        "json",
    ]


class DaemonProcess:
    """`python -m controller watch DIR --engine URL --interval N --status-addr 127.0.0.1:PORT --log-format json`."""

    def __init__(
        self,
        directory: Path,
        engine_url: str,
        *,
        interval: float | None = 1.0,
        log_path: Path,
        args: tuple[str, ...] = (),
        fd_limit: int | None = None,
    ) -> None:
        """`fd_limit`: the daemon's RLIMIT_NOFILE, as a unit's LimitNOFILE sets it."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            watch_command(directory, engine_url, self.port, interval, *args),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=WATCH_ENV,
            preexec_fn=None if fd_limit is None else lambda: _limit_fds(fd_limit),
        )
        eventually(self._answers, timeout=20, what="the daemon's /healthz")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the daemon exited with {self.process.returncode}:\n{self.log_path.read_text()}")
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def status(self) -> dict[str, Any]:
        response = httpx.get(self.url + "/status", timeout=5)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def model(self, name: str) -> dict[str, Any] | None:
        return next((m for m in self.status()["models"] if m["name"] == name), None)

    def ready(self, name: str) -> bool:
        model = self.model(name)
        return model is not None and any(c["type"] == "Ready" and c["status"] == "True" for c in model["conditions"])

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=5).text

    def events(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; returns the exit code and the seconds it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=10)
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _limit_fds(limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


class Engine:
    """The emulator as the tests see it: its DMR API and its control API, over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url

    def control(self, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/_emulator/{route}", json=body or {}, timeout=5)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def state(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_emulator/state", timeout=5).json()  # type: ignore[no-any-return]

    def stored(self, ref: str) -> dict[str, Any] | None:
        """The config stored for `ref` (GET /engines/_configure?model=), None when there is none."""
        entries = httpx.get(f"{self.url}/engines/_configure", params={"model": ref}, timeout=5).json()
        return entries[0]["Config"] if entries else None

    def has_model(self, ref: str) -> bool:
        return httpx.get(f"{self.url}/models/{ref}", timeout=5).status_code == 200


@contextlib.contextmanager
def watching_two_models(
    workdir: Path, engine_url: str, main: tuple[str, str], other: tuple[str, str], *, timeout: float
) -> Iterator[DaemonProcess]:
    """A daemon with default settings on two files in workdir/models: `main` (NAME, MODEL) with contextSize 8192
    and preload, `other` with contextSize 2048 (so that an unload of one config reads as an unload, not as
    "every config gone"); yielded once both are Ready, killed afterwards."""
    models = workdir / "models"
    models.mkdir()
    (models / f"{main[0]}.yaml").write_text(localmodel_yaml(*main, contextSize=8192, preload="true"))
    (models / f"{other[0]}.yaml").write_text(localmodel_yaml(*other, contextSize=2048))
    daemon = DaemonProcess(models, engine_url, interval=None, log_path=workdir / "daemon.log")
    try:
        eventually(lambda: daemon.ready(main[0]) and daemon.ready(other[0]), timeout=timeout, what="both Ready")
        yield daemon
    finally:
        daemon.close()
