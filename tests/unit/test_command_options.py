"""The options `apply` and `watch` share (controller.commands.add_engine_options) and the number options
of `watch`: what is accepted and the message a wrong value gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import main


@pytest.mark.parametrize("command", ["apply", "watch"])
def test_engine_and_emulator_are_exclusive(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, ".", "--engine", "http://127.0.0.1:1", "--emulator"])
    assert exited.value.code == 2
    assert "argument --emulator: not allowed with argument --engine" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["apply", "watch"])
def test_emulator_version_names_the_releases(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, ".", "--emulator", "--emulator-version", "0.9"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --emulator-version: invalid choice: '0.9'" in err
    assert "1.2" in err
    assert "1.0" in err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--interval", "x", "'x' is not a number of seconds"),
        ("--interval", "0", "must be more than 0 seconds"),
        ("--watch-period", "-1", "must be 0 (off) or more seconds"),
        ("--watch-period", "nan", "'nan' is not a finite number of seconds"),
        ("--interval", "nan", "'nan' is not a finite number of seconds"),
        ("--interval", "inf", "'inf' is not a finite number of seconds"),
        ("--deletion-grace", "inf", "'inf' is not a finite number of seconds"),
        ("--deletion-grace", "soon", "'soon' is not a number of seconds"),
        ("--max-file-size", "1.5", "'1.5' is not a number of bytes"),
        ("--max-file-size", "0", "must be at least 1 byte"),
    ],
)
def test_watch_numbers_name_the_option_and_the_fix(
    option: str, value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["watch", str(tmp_path), option, value])
    assert exited.value.code == 2
    assert f"argument {option}: {message}" in capsys.readouterr().err
