"""Which request can the engine watch use? Each candidate measured on the real model-runner v1.2.9
(tests/peers/build), with 5 models pulled and configured and one of them loaded:

- bytes of the answer and mean time per request (50 requests);
- whether its answer (in a canonical form: entries sorted, as Go map order is random) changes after
  each disturbance the watch must catch: another client's overwrite of a config, an unload of a
  config (`POST /engines/unload` with models and backend), and an engine restart.

    .venv/bin/python bench/watch_signals.py [--scale 200]

With --scale N it also times the full listing and the `?model=` filter with N models configured
(the engine looks each stored config's model up in its store on every listing, filtered or not),
and prints the model-runner's CPU per listing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.peers import DMRServer, load_peer_binaries, start_model_registry  # noqa: E402

COUNT = 5
CANDIDATES = [
    ("GET", "/engines/_configure"),
    ("GET", "/engines/_configure?model=ai/bench0"),
    ("GET", "/engines/_configure?model=ai/bench3"),
    ("HEAD", "/engines/_configure"),
    ("GET", "/engines/ps"),
    ("GET", "/engines/requests"),
    ("GET", "/engines/status"),
    ("GET", "/version"),
    ("GET", "/"),
]


def canonical(response: httpx.Response) -> str:
    if response.request.method == "HEAD":
        return response.headers.get("content-length", "?")
    try:
        data: Any = response.json()
    except json.JSONDecodeError:
        return response.text
    if isinstance(data, list):
        data = sorted(data, key=lambda item: json.dumps(item, sort_keys=True))
    if isinstance(data, list):  # ps: last_used moves on its own; keep what a watch would compare
        data = [
            {k: v for k, v in item.items() if k != "last_used"} if isinstance(item, dict) else item for item in data
        ]
    return json.dumps(data, sort_keys=True)


def snapshot(http: httpx.Client, url: str) -> dict[str, str]:
    return {f"{m} {p}": canonical(http.request(m, url + p, timeout=10)) for m, p in CANDIDATES}


def scale(count: int) -> None:
    """Listing time and engine CPU with `count` configs on the real model-runner."""
    binaries = load_peer_binaries()
    with tempfile.TemporaryDirectory(prefix="watch-scale-") as tmp:
        workdir = Path(tmp)
        models = {f"ai/scale{i}:latest": f"dummy.gguf,context-size={2048 + i}" for i in range(count)}
        registry = start_model_registry(binaries, workdir / "registry", models, timeout=120)
        dmr = DMRServer(binaries, workdir / "dmr", registry)
        try:
            dmr.start()
            http = httpx.Client(timeout=60)
            for ref in models:
                dmr.pull(ref)
                http.post(f"{dmr.url}/engines/_configure", json={"model": ref, "context-size": 8192}).raise_for_status()
            time.sleep(2)
            assert dmr.proc is not None
            ticks = os.sysconf("SC_CLK_TCK")

            def engine_cpu() -> float:
                assert dmr.proc is not None
                fields = Path(f"/proc/{dmr.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / ticks

            for path in ("/engines/_configure", "/engines/_configure?model=ai/scale0"):
                cpu0, started, rounds = engine_cpu(), time.perf_counter(), 3
                for _ in range(rounds):
                    size = len(http.get(dmr.url + path).content)
                wall = (time.perf_counter() - started) / rounds
                cpu = (engine_cpu() - cpu0) / rounds
                print(
                    f"{count} configs: GET {path}: {size} B, {wall * 1000:.1f} ms per request, "
                    f"engine CPU {cpu * 1000:.1f} ms per request"
                )
            http.close()
        finally:
            dmr.stop()
            registry.proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=0, metavar="N", help="also time the listing with N models")
    args = parser.parse_args()
    if args.scale:
        scale(args.scale)
        return 0
    binaries = load_peer_binaries()
    with tempfile.TemporaryDirectory(prefix="watch-signals-") as tmp:
        workdir = Path(tmp)
        models = {f"ai/bench{i}:latest": f"dummy.gguf,context-size={1024 + i}" for i in range(COUNT)}
        registry = start_model_registry(binaries, workdir / "registry", models)
        dmr = DMRServer(binaries, workdir / "dmr", registry)
        try:
            dmr.start()
            http = httpx.Client()
            for ref in models:
                dmr.pull(ref)
                http.post(f"{dmr.url}/engines/_configure", json={"model": ref, "context-size": 8192}).raise_for_status()
            # one loaded, as a declared preload would leave it
            http.post(
                f"{dmr.url}/engines/v1/chat/completions",
                json={"model": "ai/bench3"},
                headers={"X-Preload-Only": "true"},
                timeout=120,
            )
            time.sleep(1)
            costs = {}
            for method, path in CANDIDATES:
                started = time.perf_counter()
                for _ in range(50):
                    response = http.request(method, dmr.url + path)
                costs[f"{method} {path}"] = (len(response.content), (time.perf_counter() - started) / 50)
            before = snapshot(http, dmr.url)
            http.post(f"{dmr.url}/engines/_configure", json={"model": "ai/bench3", "context-size": 4096})
            time.sleep(0.5)
            after_overwrite = snapshot(http, dmr.url)
            http.post(f"{dmr.url}/engines/unload", json={"all": False, "backend": "llama.cpp", "models": ["ai/bench1"]})
            time.sleep(0.5)
            after_unload = snapshot(http, dmr.url)
            dmr.restart()
            after_restart = snapshot(http, dmr.url)
            http.close()
        finally:
            dmr.stop()
            registry.proc.stop()
    print(f"real model-runner, {COUNT} models configured, ai/bench3 loaded; 'yes' = the answer changed")
    print(f"{'request':42} {'bytes':>6} {'ms':>6}  overwrite  unload  restart")
    for key, (size, seconds) in costs.items():
        marks = [
            "yes" if snap[key] != prev[key] else "no"
            for prev, snap in (
                (before, after_overwrite),
                (after_overwrite, after_unload),
                (after_unload, after_restart),
            )
        ]
        print(f"{key:42} {size:>6} {seconds * 1000:>6.2f}  {marks[0]:>9}  {marks[1]:>6}  {marks[2]:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
