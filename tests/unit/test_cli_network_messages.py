"""What the CLI says when the engine (or the daemon) is slow or busy (issue 10, "messages that mislead",
and case 8 for `status --daemon`)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from controller.cli import main
from controller.standalone.status_view import fetch_status
from tests.contract.hostile import HostileThread, endless, trickle
from tests.support.emulator import emulator_thread
from tests.support.util import eventually
from tests.support.util import localmodel_yaml as localmodel


def test_apply_wait_timeout_while_a_pull_has_not_started_streaming_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The engine pulls two models at a time: with both slots taken, our pull is accepted but sends no
    # progress line before --timeout. It was reported as "timed out ... before its first reconcile".
    with emulator_thread(pull_seconds=6) as emu:  # the two holders finish 6 s later, so the emulator can stop
        holders = [
            threading.Thread(
                target=lambda ref=ref: httpx.post(f"{emu.url}/models/create", json={"from": ref}, timeout=120),
                daemon=True,
            )
            for ref in ("ai/qwen3:14B", "ai/llama3.2")
        ]
        for thread in holders:
            thread.start()
        eventually(lambda: emu.state.store.pull_slots.locked(), what="both pull slots taken")
        (tmp_path / "a.yaml").write_text(localmodel("small", "ai/smollm2:135M-Q4_0"))
        code = main(["apply", str(tmp_path), "--engine", emu.url, "--wait", "--timeout", "1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "before its first reconcile" not in out + err
    assert "during its first reconcile (a pull, configure or load still in progress)" in out


def test_status_daemon_gives_up_on_a_trickling_answer() -> None:
    with HostileThread(trickle(0.05)) as url, pytest.raises(ValueError, match=r"did not finish within 1 s"):
        fetch_status(url + "/status", deadline=1.0)


def test_status_daemon_gives_up_on_an_endless_answer() -> None:
    with HostileThread(endless()) as url, pytest.raises(ValueError, match=r"larger than 1 MiB"):
        fetch_status(url + "/status", max_body=1024 * 1024)


def test_status_daemon_names_what_went_wrong_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with HostileThread(endless()) as url:
        code = main(["status", "--daemon", url.removeprefix("http://")])
    assert code == 1
    assert "larger than" in capsys.readouterr().err
