"""Terminal output of the one-shot commands: pull progress, tables, the daemon status table."""

from __future__ import annotations

import io

from controller.standalone.status_view import daemon_rows
from controller.standalone.terminal import Progress, human_bytes, table
from controller.status import EngineStatus, Phase, PullProgressInfo, Reason


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pulling(done: int, total: int = 1000) -> EngineStatus:
    return EngineStatus("local", Phase.PULLING, Reason.PULLING, "pulling ai/x", pull=PullProgressInfo(done, total))


def test_off_a_terminal_progress_is_a_plain_line_every_few_seconds_and_at_the_end() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = Progress(out, tty=False, clock=clock)
    for done in (100, 200, 300):
        progress.update("a", pulling(done))
        clock.now += 1.0
    clock.now += 5.0
    progress.update("a", pulling(600))
    progress.update("a", pulling(1000))
    assert out.getvalue().splitlines() == [
        "a:  10% 100 B/1.0 kB  pulling ai/x",
        "a:  60% 600 B/1.0 kB  pulling ai/x",
        "a: 100% 1.0 kB/1.0 kB  pulling ai/x",
    ]


def test_on_a_terminal_each_model_has_one_line_redrawn_in_place() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = Progress(out, tty=True, clock=clock)
    progress.update("a", pulling(100))
    clock.now += 1
    progress.update("b", pulling(500))
    clock.now += 1
    progress.update("a", pulling(200))
    text = out.getvalue()
    assert text.count("\x1b[2F") == 1  # the two-line block was redrawn once, in place
    assert text.endswith("\x1b[2Ka:  20% 200 B/1.0 kB  pulling ai/x\n\x1b[2Kb:  50% 500 B/1.0 kB  pulling ai/x\n")
    progress.done("a")
    progress.print("a: Pulled")
    final = out.getvalue()
    assert final.endswith("a: Pulled\n\x1b[2Kb:  50% 500 B/1.0 kB  pulling ai/x\n")


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (999, 1000, 2_500_000, 9_000_000_000)] == ["999 B", "1.0 kB", "2.5 MB", "9.0 GB"]


def test_table_aligns_columns() -> None:
    assert table(["A", "LONGER"], [["xyz", "1"], ["q", "22"]]) == "A    LONGER\nxyz  1\nq    22"


def test_daemon_rows_read_the_applied_config_and_the_ready_condition() -> None:
    status = {
        "models": [
            {
                "name": "chat",
                "model": "ai/qwen3",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Applied",
                        "message": "ai/qwen3 on llama.cpp: config verified",
                    }
                ],
                "engines": [
                    {
                        "backend": "llama.cpp",
                        "loaded": True,
                        "appliedConfig": {"context-size": 8192, "keep_alive": "30m0s"},
                    }
                ],
            },
            {
                "name": "late",
                "model": "ai/x",
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "Conflict", "message": "chat already declares it"}
                ],
                "engines": [{"loaded": False}],
            },
        ]
    }
    assert daemon_rows(status) == [
        ["chat", "ai/qwen3", "llama.cpp", "8192", "30m0s", "yes", "True", "ai/qwen3 on llama.cpp: config verified"],
        ["late", "ai/x", "-", "-", "-", "no", "Conflict", "chat already declares it"],
    ]
