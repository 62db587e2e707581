"""`localmodel apply`, `plan`, `status` and `watch` as a user runs them (in-process, against the emulator)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli import main
from controller.emulator import EmulatorThread
from controller.engine.client import EngineClient
from controller.engine.errors import ServerError
from tests.support.emulator import emulator_thread
from tests.support.util import localmodel_yaml as localmodel

SMALL = "ai/smollm2:135M-Q4_0"


@pytest.fixture
def engine() -> Iterator[EmulatorThread]:
    with emulator_thread() as emu:
        yield emu


@pytest.mark.parametrize("command", ["watch", "apply", "plan", "status"])
def test_help_has_a_description_and_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "examples:" in out
    assert f"localmodel {command}" in out


def test_apply_then_plan_shows_up_to_date_and_drift(
    tmp_path: Path, engine: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(localmodel("small", SMALL, contextSize=4096))
    assert main(["plan", str(path), "--engine", engine.url, "--exit-code"]) == 2
    assert f"pull {SMALL}" in capsys.readouterr().out
    assert main(["apply", str(path), "--engine", engine.url, "--wait", "--timeout", "10"]) == 0
    assert "small  Ready  Applied" in capsys.readouterr().out
    assert main(["plan", str(path), "--engine", engine.url, "--exit-code"]) == 0
    assert "small (ai/smollm2:135M-Q4_0): up to date" in capsys.readouterr().out
    path.write_text(localmodel("small", SMALL, contextSize=8192))
    assert main(["plan", str(path), "--engine", engine.url]) == 0
    out = capsys.readouterr().out
    assert "the engine holds a different config" in out
    assert "context-size: want 8192, engine has 4096" in out
    assert main(["status", "--engine", engine.url, "--output", "json"]) == 0
    [row] = [r for r in json.loads(capsys.readouterr().out)["models"] if r["mode"] == "completion"]
    assert (row["model"], row["context"], row["message"]) == ("docker.io/ai/smollm2:135M-Q4_0", "4096", "configured")


def test_apply_sends_nothing_when_a_file_is_invalid(
    tmp_path: Path, engine: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.yaml").write_text(localmodel("good", SMALL))
    (tmp_path / "bad.yaml").write_text(localmodel("bad", SMALL, keepAlive="soon"))
    assert main(["apply", str(tmp_path), "--engine", engine.url]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml:6: bad: spec.keepAlive" in err
    assert "nothing applied" in err
    assert engine.state.counters == {}


def test_apply_reports_why_a_model_is_stalled(
    tmp_path: Path, engine: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text(localmodel("missing", "ai/no-such-model", pullPolicy="Never"))
    assert main(["apply", str(tmp_path), "--engine", engine.url, "--wait", "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert "missing: stalled until the spec changes: ModelNotPresent" in err


def test_apply_with_the_emulator_needs_no_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text(localmodel("small", SMALL, contextSize=2048))
    assert main(["apply", str(tmp_path), "--emulator", "--wait"]) == 0


def test_plan_and_status_fail_clearly_when_the_engine_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text(localmodel("small", SMALL))
    assert main(["plan", str(tmp_path), "--engine", "http://127.0.0.1:1"]) == 1
    assert "cannot observe the engine at http://127.0.0.1:1" in capsys.readouterr().err
    assert main(["status", "--engine", "http://127.0.0.1:1"]) == 1
    assert main(["status", "--daemon", "127.0.0.1:1"]) == 1
    assert "is `localmodel watch --status-addr 127.0.0.1:1` running?" in capsys.readouterr().err


def test_watch_refuses_a_missing_directory_and_a_bad_status_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["watch", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["watch", str(tmp_path), "--status-addr", "localhost"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


def test_plan_reports_an_engine_error_after_the_observation_without_a_traceback(
    tmp_path: Path, engine: EmulatorThread, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(localmodel("small", SMALL, contextSize=4096, keepAlive="10m", preload="true"))
    assert main(["apply", str(path), "--engine", engine.url, "--wait", "--timeout", "10"]) == 0
    capsys.readouterr()

    async def failing(self: EngineClient, **_: object) -> list[object]:
        raise ServerError("the engine broke while listing runners", status=500)

    monkeypatch.setattr(EngineClient, "runner_configs", failing)
    assert main(["plan", str(path), "--engine", engine.url]) == 1
    err = capsys.readouterr().err
    assert "localmodel plan: the engine broke while listing runners" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_emulator_refuses_a_port_out_of_range_as_a_usage_error(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["emulator", "--port", port])
    assert exit_info.value.code == 2
    assert "is not a port number" in capsys.readouterr().err


def test_apply_wait_timeout_cuts_a_long_pull_short(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with emulator_thread(pull_seconds=12) as slow:
        (tmp_path / "a.yaml").write_text(localmodel("small", SMALL, contextSize=2048))
        started = time.monotonic()
        code = main(["apply", str(tmp_path), "--engine", slow.url, "--wait", "--timeout", "1"])
        elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 1, (code, elapsed)
    assert elapsed < 4, (code, elapsed)
    assert "timed out after 1s" in err
    assert "small: not ready: Pulling" in err
    assert "small  Pulling  Pulling" in out
