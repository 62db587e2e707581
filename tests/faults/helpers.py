"""Shared pieces of the fault suite: metrics read from a running operator, log lines counted."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from pathlib import Path

import httpx

from tests.support.peers import KubeAPIServer, Proc, wait_until


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


def kill_peer(cluster: KubeAPIServer, name: str) -> Proc:
    """SIGKILL one of the cluster's processes (`kube-apiserver` or `etcd`); returns the dead Proc."""
    proc = next(p for p in cluster.procs if p.name == name)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.popen.wait(10)
    return proc


def start_peer_again(cluster: KubeAPIServer, dead: Proc) -> None:
    """Start a killed peer again with the same command line (same ports, same data), and wait until the
    API server is ready."""
    index = cluster.procs.index(dead)
    dead.stop()
    cluster.procs[index] = Proc(dead.name, dead.argv, dead.log_path)

    def ready() -> bool:
        with cluster.http() as http:
            return http.get("/readyz", timeout=2).status_code == 200

    wait_until(f"{dead.name} back", ready, 60, interval=0.2)


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
