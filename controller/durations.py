"""Go `time.Duration` parsing and formatting, and DMR's keep-alive rules (docs/engine-contract.md §5.4).

The engine re-renders keep-alive values with Go's `Duration.String()` on read-back
(`10m` comes back as `10m0s`), so comparing what we sent with what it reports needs both
directions of Go's duration syntax.
"""

from __future__ import annotations

import re

NANOSECOND = 1
MICROSECOND = 1_000
MILLISECOND = 1_000_000
SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "µs": MICROSECOND,  # U+00B5
    "μs": MICROSECOND,  # U+03BC
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_MAX = 2**63 - 1

FOREVER = "-1"  # keep-alive: never evict


class DurationError(ValueError):
    pass


def parse_go_duration(text: str) -> int:
    """Parse a Go duration string (`1h30m`, `-1.5s`, `0`) into integer nanoseconds."""
    if not isinstance(text, str):
        raise DurationError(f"duration must be a string, got {type(text).__name__}")
    s = text
    sign = 1
    if s[:1] in ("-", "+"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise DurationError(f"invalid duration {text!r}")
    total = 0
    pos = 0
    while pos < len(s):
        match = _TERM.match(s, pos)
        if match is None:
            if re.match(r"(\d+(?:\.\d*)?|\.\d+)", s[pos:]):
                raise DurationError(f"missing unit in duration {text!r} (use s, m or h, e.g. 30s, 5m, 1h)")
            raise DurationError(f"invalid duration {text!r}")
        number, unit = match.group(1), match.group(2)
        scale = _UNITS[unit]
        whole, _, frac = number.partition(".")
        value = int(whole or "0") * scale
        if frac:
            value += int(frac) * scale // (10 ** len(frac))
        total += value
        if total > _MAX:
            raise DurationError(f"duration {text!r} is out of range")
        pos = match.end()
    return sign * total


def format_go_duration(ns: int) -> str:
    """Format nanoseconds as Go's `time.Duration.String()` does (`10m0s`, `1.5s`, `0s`, `500ms`)."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    if u < SECOND:
        for unit, scale in (("ns", NANOSECOND), ("µs", MICROSECOND), ("ms", MILLISECOND)):
            if u < scale * 1000:
                out = _fraction(u, scale) + unit
                break
    else:
        hours, rem = divmod(u, HOUR)
        minutes, rem = divmod(rem, MINUTE)
        seconds = _fraction(rem, SECOND) + "s"
        if hours:
            out = f"{hours}h{minutes}m{seconds}"
        elif minutes:
            out = f"{minutes}m{seconds}"
        else:
            out = seconds
    return "-" + out if neg else out


def _fraction(value: int, scale: int) -> str:
    whole, frac = divmod(value, scale)
    if not frac:
        return str(whole)
    digits = len(str(scale)) - 1
    return f"{whole}.{str(frac).rjust(digits, '0').rstrip('0')}"


def parse_keep_alive(text: str) -> int | None:
    """DMR's ParseKeepAlive: nanoseconds, or None for "never evict" (`-1` or any negative duration)."""
    if text == FOREVER:
        return None
    ns = parse_go_duration(text)
    return None if ns < 0 else ns


def normalize_keep_alive(text: str) -> str:
    """The keep-alive string as the engine reports it back (`10m` -> `10m0s`, `0` -> `0s`, `-5m` -> `-1`)."""
    ns = parse_keep_alive(text)
    return FOREVER if ns is None else format_go_duration(ns)
