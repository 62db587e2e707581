"""Test helpers that start a DMR emulator on a free loopback port. Plain functions and context
managers: wrap them in fixtures where you need them.

    async with emulator(preload_models=["ai/smollm2"]) as emu:   # in-process, the test's event loop
        ...emu.url, emu.state...

    with emulator_process("--preload-models", "ai/smollm2") as proc:   # `localmodel emulator` subprocess
        ...proc.url...
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.emulator import EmulatorThread, RunningEmulator, running_emulator

REPO_ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def emulator(**options: Any) -> AsyncIterator[RunningEmulator]:
    """An emulator in the current event loop on 127.0.0.1 and a free port. Options go to EmulatorState
    (e.g. `load_seconds=0`, `preload_models=[...]`, `clock=fake_clock`)."""
    options.setdefault("load_seconds", 0)
    async with running_emulator("127.0.0.1", 0, **options) as emu:
        yield emu


@contextlib.contextmanager
def emulator_thread(**options: Any) -> Iterator[EmulatorThread]:
    """An emulator on its own loop in a background thread, for synchronous tests."""
    options.setdefault("load_seconds", 0)
    with EmulatorThread("127.0.0.1", 0, **options) as emu:
        yield emu


@dataclass
class EmulatorProcess:
    url: str
    process: subprocess.Popen[str]


@contextlib.contextmanager
def emulator_process(*args: str, timeout: float = 20.0) -> Iterator[EmulatorProcess]:
    """Run `python -m controller emulator --port 0 ARGS...`, wait until it answers, stop it with SIGTERM."""
    command = [sys.executable, "-m", "controller", "emulator", "--host", "127.0.0.1", "--port", "0", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("emulator listening on "):
            process.kill()
            _, err = process.communicate(timeout=timeout)
            raise RuntimeError(f"localmodel emulator did not start: {line!r} {err}")
        url = line.split()[-1]
        _wait_until_answering(url, timeout)
        yield EmulatorProcess(url, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _wait_until_answering(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
