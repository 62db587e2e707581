"""Terminal output of the one-shot commands: pull progress and tables."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TextIO

from controller.status import EngineStatus

PLAIN_EVERY_SECONDS = 5.0  # off a terminal, one progress line per model at most this often
REDRAW_EVERY_SECONDS = 0.1


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def progress_text(status: EngineStatus) -> str:
    """`45% 1.2 GB/2.6 GB pulling ai/qwen3:14B: ...` for a pulling status, its message otherwise."""
    pull = status.pull
    if pull is None:
        return status.message
    done = human_bytes(pull.completed_bytes)
    if pull.total_bytes:
        return f"{pull.percent:>3}% {done}/{human_bytes(pull.total_bytes)}  {status.message}"
    return f"{done}  {status.message}"


class Progress:
    """Pull progress per model. On a terminal: one line per model, updated in place (a block
    redrawn below the other output). Otherwise: a plain line per model every few seconds."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._clock = clock
        self._lines: dict[str, str] = {}
        self._drawn = 0
        self._last_draw = -1e9
        self._last_plain: dict[str, float] = {}

    def update(self, name: str, status: EngineStatus) -> None:
        line = f"{name}: {progress_text(status)}"
        finished = status.pull is not None and status.pull.percent == 100
        if self.tty:
            self._lines[name] = line
            if finished or self._clock() - self._last_draw >= REDRAW_EVERY_SECONDS:
                self._redraw()
            return
        now = self._clock()
        if finished or now - self._last_plain.get(name, -1e9) >= PLAIN_EVERY_SECONDS:
            self._last_plain[name] = now
            self.stream.write(line + "\n")
            self.stream.flush()

    def print(self, line: str) -> None:
        """A line of other output, above the progress block."""
        if self.tty and self._drawn:
            self._clear()
            self.stream.write(line + "\n")
            self._redraw()
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def done(self, name: str) -> None:
        """Stop showing a model (its pull is over); the last line stays on screen."""
        if self.tty and name in self._lines:
            final = self._lines.pop(name)
            if self._drawn:
                self._clear()
            self.stream.write(final + "\n")
            self._redraw()

    def _clear(self) -> None:
        self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
        self._drawn = 0

    def _redraw(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F")
        for line in self._lines.values():
            self.stream.write("\x1b[2K" + line + "\n")
        self._drawn = len(self._lines)
        self._last_draw = self._clock()
        self.stream.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    all_rows = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in all_rows)
