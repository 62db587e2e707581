"""Shared pieces of the fault suite: metrics read from a running operator, log lines counted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx


def metric(health_url: str, name: str, **labels: str) -> float:
    """The value of one sample of `name` (labels matched exactly) on /metrics; 0 when absent."""
    text = httpx.get(health_url + "/metrics", timeout=5).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def log_lines(path: Path, *, since: int = 0, level: str | None = None) -> list[dict]:
    """The JSON log lines of a process (from byte offset `since`), optionally of one level."""
    out = []
    with path.open("rb") as f:
        f.seek(since)
        for raw in f:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"level": "RAW", "message": raw.decode(errors="replace").rstrip()}
            if level is None or line.get("level") == level:
                out.append(line)
    return out
