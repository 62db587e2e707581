"""Structured logging shared by the long-running front-ends (the daemon, later the operator).

One line per meaningful event: a model applied or repaired, a pull, a stalled model with its
reason, a file error, the engine going down or coming back. Never one line per idle pass.

Two formats:

- `text` (the default on a terminal): `12:00:01 INFO  Applied  qwen3-chat  applied and verified ... file=a.yaml:3`
- `json` (the default otherwise, i.e. under systemd, in a container, piped to a file): one JSON
  object per line, `{"time", "level", "logger", "event", "message", ...fields}`.

JSON rather than logfmt off a terminal: the fields carry free text (engine error messages, config
differences with quotes and `=`), which logfmt escapes ambiguously across tools, while journald,
Loki, jq and every log shipper parse JSON lines as they are.

Emit events with `log_event(logger, Event.READY, "message", model="x", file="a.yaml:3")` (one vocabulary of
CamelCase names for both front-ends: controller/fleet.py `Event`, controller/status.py `Reason`); plain
`logger.info(...)` calls from other modules are formatted too (event = the logger's last part).

Two guards on every line: credentials in URLs are masked (`controller.redact`), and a warning or
error repeated identically (asyncio's "socket.accept() out of system resource" when file descriptors
run out, a library retrying in a loop) is logged once per REPEAT_WINDOW seconds; the next one after
the window carries the count of those left out (`RepeatFilter`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any, TextIO

from controller.redact import redact

FORMATS = ("text", "json")
_FIELDS = "lm_fields"
_EVENT = "lm_event"
# Libraries that log every request or every file event at INFO: kept to warnings.
_CHATTY = ("httpx", "httpcore", "watchfiles", "aiohttp.access", "kopf.objects")
REPEAT_WINDOW = 60.0  # seconds during which an identical warning or error is logged once
_REPEAT_KEYS = 1024  # distinct messages remembered; the oldest is forgotten first


def log_event(logger: logging.Logger, event: str, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with structured fields (None values are left out)."""
    clean = {key: value for key, value in fields.items() if value is not None}
    logger.log(level, message, extra={_EVENT: event, _FIELDS: clean})


def default_format(stream: TextIO) -> str:
    """`text` for a person at a terminal, `json` for machines."""
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def setup_logging(fmt: str | None = None, *, level: int = logging.INFO, stream: TextIO | None = None) -> str:
    """Install one handler on the root logger; returns the format chosen. Safe to call again."""
    stream = stream or sys.stderr
    chosen = fmt or default_format(stream)
    if chosen not in FORMATS:
        raise ValueError(f"log format {chosen!r}: use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    return chosen


class RepeatFilter(logging.Filter):
    """Logs a warning or error at most once per `window` seconds per (logger, level, message, exception);
    the first one after the window says how many identical ones were left out. Lower levels pass."""

    def __init__(self, window: float = REPEAT_WINDOW, keys: int = _REPEAT_KEYS) -> None:
        super().__init__()
        self.window = window
        self.keys = keys
        self._seen: OrderedDict[tuple[str, int, str, str], tuple[float, int]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        key = (record.name, record.levelno, record.getMessage(), f"{type(exc).__name__}: {exc}" if exc else "")
        seen = self._seen.get(key)
        if seen is not None and record.created - seen[0] < self.window:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        if seen is not None and seen[1]:
            record.msg = f"{record.getMessage()} (and {seen[1]} more identical in the {self.window:g} s before)"
            record.args = None
        self._seen[key] = (record.created, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self.keys:
            self._seen.popitem(last=False)
        return True


def _event(record: logging.LogRecord) -> str:
    return str(getattr(record, _EVENT, None) or record.name.rsplit(".", 1)[-1])


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, _FIELDS, None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; exceptions go in `error` as one string."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _event(record),
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """`HH:MM:SS LEVEL event [model] message key=value ...` for people."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        model = fields.pop("model", None)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [stamp, f"{record.levelname:<7}", _event(record)]
        if model:
            parts.append(str(model))
        parts.append(record.getMessage())
        parts += [f"{key}={_text_value(value)}" for key, value in fields.items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (" " in text or not text) else text
