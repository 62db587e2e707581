"""Benchmark: how long declared configs stay lapsed after an engine restart or an overwrite, and what
watching for that costs, for the daemon with its engine watch, the drift pass alone, and a cron loop.

    .venv/bin/python bench/restart_bench.py [--restarts 20] [--real-restarts 5] [--idle 60] [--no-real]

One run prints, side by side:
- restart -> every declared config back, p50/p95: the DMR emulator restarted --restarts times
  (`POST /_emulator/restart`: configs and runners wiped, it answers at once), and the real
  model-runner v1.2.9 (tests/peers/build) stopped and started --real-restarts times, timed from the
  first answer of the restarted engine;
- overwrite by another client (`POST /engines/_configure` with another context size) -> repaired;
- idle requests per minute per engine (counted by the emulator), bytes per minute of the watch at 10
  and at 1,000 models (the listing measured on the emulator with 1,000 configs, and on the real
  engine per entry), and the daemon's idle CPU (utime+stime from /proc over --idle seconds).
The same for the drift pass alone (`--watch-period 0`, the default 30 s interval: the restarts are
measured, fewer of them since each waits for a pass) and for the cron loop users run
(`localmodel apply` every 5 minutes: computed from one measured apply, since the lapse is uniform
over the 5 minutes: p50 = 150 s + apply, p95 = 285 s + apply).

Every daemon runs as a subprocess with default settings except where said; 10 LocalModels.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.daemon_bench import emulator, stop  # noqa: E402
from tests.support.util import free_port  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
MODELS = 10
CONTEXT = 8192
DRIFT_INTERVAL = 30.0
CRON_PERIOD = 300.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def ref(index: int) -> str:
    return f"bench/model-{index:04d}"


def write_catalog(path: Path, count: int) -> None:
    path.write_text(
        json.dumps(
            [{"name": ref(i), "tags": ["latest"], "size_bytes": 1000, "context_size": 4096} for i in range(count)]
        )
    )


def write_models(directory: Path, refs: list[str]) -> None:
    for index, model in enumerate(refs):
        (directory / f"model-{index:04d}.yaml").write_text(
            f"apiVersion: localmodel.io/v1alpha1\nkind: LocalModel\nmetadata: {{name: model-{index:04d}}}\n"
            f"spec:\n  model: {model}\n  contextSize: {CONTEXT}\n"
        )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0], ordered[0]
    cuts = statistics.quantiles(ordered, n=20, method="inclusive")
    return statistics.median(ordered), cuts[18]


@contextmanager
def daemon(directory: Path, url: str, workdir: Path, *extra: str) -> Iterator[subprocess.Popen[Any]]:
    port = free_port()
    command = [sys.executable, "-m", "controller", "watch", str(directory), "--engine", url]
    command += ["--status-addr", f"127.0.0.1:{port}", "--log-format", "json", *extra]
    command += ["--state-file", str(workdir / f"status-{port}.json")]  # saved as a user's would be, not in ~
    log = (workdir / f"daemon-{port}.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                summary = httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).json()["summary"]
                if summary["models"] and summary["ready"] == summary["models"]:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the daemon did not get every model Ready; see {log.name}")
            time.sleep(0.1)
        process.status_url = f"http://127.0.0.1:{port}/status"  # type: ignore[attr-defined]
        yield process
    finally:
        stop(process)
        log.close()


def all_back(http: httpx.Client, url: str, model_ids: set[str]) -> bool:
    """Every declared model has its config (context-size CONTEXT) stored, by the full listing."""
    entries = http.get(f"{url}/engines/_configure", timeout=5).json() or []
    good = {e["ModelID"] for e in entries if e["Config"].get("context-size") == CONTEXT}
    return model_ids <= good


def wait(probe: Callable[[], bool], timeout: float, every: float = 0.005) -> float:
    start = time.monotonic()
    while not probe():
        if time.monotonic() - start > timeout:
            raise RuntimeError("timed out")
        time.sleep(every)
    return time.monotonic() - start


@dataclass
class Column:
    restart: list[float] = field(default_factory=list)
    real_restart: list[float] = field(default_factory=list)
    overwrite: list[float] = field(default_factory=list)
    requests_per_min: float = 0.0
    cpu_percent: float = 0.0
    bytes_per_min_10: float = 0.0
    bytes_per_min_1000: float = 0.0
    note: str = ""


def model_ids(http: httpx.Client, url: str, refs: list[str]) -> set[str]:
    return {http.get(f"{url}/models/{r}", timeout=5).json()["id"] for r in refs}


def measure_emulator(args: argparse.Namespace, workdir: Path, extra: tuple[str, ...], restarts: int) -> Column:
    column = Column()
    catalog = workdir / "catalog.json"
    write_catalog(catalog, MODELS)
    directory = workdir / f"models{len(extra)}"
    directory.mkdir()
    refs = [ref(i) for i in range(MODELS)]
    write_models(directory, refs)
    with emulator(catalog, workdir) as engine, daemon(directory, engine.url, workdir, *extra) as process:
        http = httpx.Client()
        ids = model_ids(http, engine.url, refs)
        time.sleep(2)  # let the first reconciles' requeues settle
        engine.reset_counters()
        watch0 = httpx.get(process.status_url).json()["engine"]["watch"]  # type: ignore[attr-defined]
        cpu0, t0 = cpu_seconds(process.pid), time.monotonic()
        time.sleep(args.idle)
        elapsed = time.monotonic() - t0
        watch1 = httpx.get(process.status_url).json()["engine"]["watch"]  # type: ignore[attr-defined]
        if watch0 and watch1:
            column.bytes_per_min_10 = (watch1["bytes"] - watch0["bytes"]) * 60 / elapsed
        column.cpu_percent = 100 * (cpu_seconds(process.pid) - cpu0) / elapsed
        counters = engine.counters()
        column.requests_per_min = sum(counters.values()) * 60 / elapsed
        for _ in range(restarts):
            time.sleep(random.uniform(0, 1.0))  # at a random phase of the watch period, as in life
            http.post(f"{engine.url}/_emulator/restart", json={}).raise_for_status()
            column.restart.append(wait(lambda: all_back(http, engine.url, ids), timeout=DRIFT_INTERVAL + 10))
        for i in range(restarts):
            target = refs[i % MODELS]
            time.sleep(random.uniform(0, 1.0))
            http.post(f"{engine.url}/engines/_configure", json={"model": target, "context-size": 4096})
            column.overwrite.append(wait(lambda: all_back(http, engine.url, ids), timeout=DRIFT_INTERVAL + 10))
        http.close()
    return column


def listing_bytes(count: int, workdir: Path) -> int:
    """Size of GET /engines/_configure with `count` stored configs, on the emulator."""
    catalog = workdir / f"catalog-{count}.json"
    write_catalog(catalog, count)
    with emulator(catalog, workdir) as engine, httpx.Client(timeout=30) as http:
        for i in range(count):
            http.post(f"{engine.url}/models/create", json={"from": ref(i)}).read()
            http.post(f"{engine.url}/engines/_configure", json={"model": ref(i), "context-size": CONTEXT})
        return len(http.get(f"{engine.url}/engines/_configure").content)


def measure_cron(workdir: Path) -> tuple[float, float, float]:
    """One `localmodel apply DIR` against an emulator holding the configs already: its requests and
    CPU seconds, and its wall time (the repair time once it runs)."""
    catalog = workdir / "catalog.json"
    directory = workdir / "cron"
    directory.mkdir()
    refs = [ref(i) for i in range(MODELS)]
    write_models(directory, refs)
    command = [sys.executable, "-m", "controller", "apply", str(directory)]
    with emulator(catalog, workdir) as engine:
        subprocess.run([*command, "--engine", engine.url], env=ENV, capture_output=True, check=True)
        engine.reset_counters()  # an idle run: every config in place
        idle = subprocess.run(
            ["/usr/bin/time", "-f", "%U %S", *command, "--engine", engine.url], env=ENV, capture_output=True, text=True
        )
        requests = float(sum(engine.counters().values()))
        user, system = (float(x) for x in idle.stderr.strip().splitlines()[-1].split())
        httpx.post(f"{engine.url}/_emulator/restart", json={})
        started = time.monotonic()
        subprocess.run([*command, "--engine", engine.url], env=ENV, capture_output=True, check=True)
        wall = time.monotonic() - started  # the repair, once the cron job runs
        return requests, user + system, wall


# ---- the real model-runner ------------------------------------------------------------------------


def measure_real(args: argparse.Namespace, workdir: Path) -> tuple[list[float], list[float], int, int]:
    """Restarts and overwrites on the real model-runner with the daemon's default settings; returns
    (restart seconds, overwrite seconds, listing bytes with the declared configs, number of entries)."""
    from tests.support.peers import DMRServer, load_peer_binaries, start_model_registry

    binaries = load_peer_binaries()
    count = 5
    registry_models = {f"ai/bench{i}:latest": f"dummy.gguf,context-size={1024 + i}" for i in range(count)}
    registry = start_model_registry(binaries, workdir / "registry", registry_models)
    dmr = DMRServer(binaries, workdir / "dmr", registry)
    try:
        dmr.start()
        refs = list(registry_models)
        for r in refs:
            dmr.pull(r)
        directory = workdir / "real-models"
        directory.mkdir()
        write_models(directory, refs)
        restarts: list[float] = []
        overwrites: list[float] = []
        with daemon(directory, dmr.url, workdir), httpx.Client() as http:
            ids = model_ids(http, dmr.url, refs)
            size = len(http.get(f"{dmr.url}/engines/_configure").content)
            for _ in range(args.real_restarts):
                time.sleep(random.uniform(0, 1.0))
                dmr.stop()
                starter = threading.Thread(target=dmr.start)
                starter.start()
                answered = None
                while True:  # from the first answer of the restarted engine until every config is back
                    try:
                        back = all_back(http, dmr.url, ids)
                    except (httpx.HTTPError, json.JSONDecodeError):
                        time.sleep(0.005)
                        continue
                    if answered is None:
                        answered = time.monotonic()
                    if back:
                        restarts.append(time.monotonic() - answered)
                        break
                    if time.monotonic() - answered > DRIFT_INTERVAL + 30:
                        raise RuntimeError("the configs did not come back on the real engine")
                    time.sleep(0.005)
                starter.join()
            for i in range(args.real_restarts):
                time.sleep(random.uniform(0, 1.0))
                http.post(f"{dmr.url}/engines/_configure", json={"model": refs[i % count], "context-size": 4096})
                overwrites.append(wait(lambda: all_back(http, dmr.url, ids), timeout=DRIFT_INTERVAL + 10))
        return restarts, overwrites, size, count
    finally:
        dmr.stop()
        registry.proc.stop()


def show(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p95 = percentiles(values)
    return f"{p50:.2f} / {p95:.2f} s (n={len(values)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restarts", type=int, default=20, help="emulator restarts (and overwrites) (default: 20)")
    parser.add_argument("--drift-restarts", type=int, default=3, help="restarts with the drift pass alone (default: 3)")
    parser.add_argument("--real-restarts", type=int, default=5, help="real model-runner restarts (default: 5)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement (default: 60)")
    parser.add_argument("--no-real", action="store_true", help="skip the real model-runner")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="restart-bench-") as tmp:
        workdir = Path(tmp)
        size_10, size_1000 = listing_bytes(10, workdir), listing_bytes(1000, workdir)
        print(f"GET /engines/_configure on the emulator: {size_10} B at 10 configs, {size_1000} B at 1,000", flush=True)
        watch = measure_emulator(args, workdir, (), args.restarts)
        print("watch: done", flush=True)
        drift = measure_emulator(args, workdir, ("--watch-period", "0"), args.drift_restarts)
        print("drift pass alone: done", flush=True)
        cron_requests, cron_cpu, cron_wall = measure_cron(workdir)
        real_size = real_entries = 0
        if not args.no_real:
            watch.real_restart, real_overwrites, real_size, real_entries = measure_real(args, workdir)
            print(
                f"real model-runner: listing {real_size} B with {real_entries} configs; "
                f"overwrite -> repaired {show(real_overwrites)}",
                flush=True,
            )

    per_entry = (size_1000 - size_10) / 990
    # 1,000 models: listings every listing_interval (the byte budget decides on a quick engine), probes
    # (3 bytes: nothing loaded) the rest of the periods.
    from controller.engine.watch import listing_interval

    every = listing_interval(1.0, 0.0, size_1000)
    watch.bytes_per_min_1000 = 60 / every * size_1000 + (60 - 60 / every) * 3
    cron = Column(
        restart=[CRON_PERIOD / 2 + cron_wall, CRON_PERIOD * 0.95 + cron_wall],
        requests_per_min=cron_requests * 60 / CRON_PERIOD,
        cpu_percent=100 * cron_cpu / CRON_PERIOD,
    )
    rows = [
        ("restart -> all configs back, emulator p50 / p95", show(watch.restart), show(drift.restart), "computed"),
        ("restart -> all configs back, real model-runner", show(watch.real_restart), "-", "-"),
        ("overwrite -> repaired, emulator p50 / p95", show(watch.overwrite), show(drift.overwrite), "computed"),
        (
            "restart/overwrite, uniform lapse model p50 / p95",
            f"<= {1.0:.2f} s + repair",
            f"{DRIFT_INTERVAL / 2:.0f} / {DRIFT_INTERVAL * 0.95:.1f} s + repair",
            f"{CRON_PERIOD / 2 + cron_wall:.0f} / {CRON_PERIOD * 0.95 + cron_wall:.0f} s",
        ),
        (
            "idle requests per minute per engine",
            f"{watch.requests_per_min:.1f}",
            f"{drift.requests_per_min:.1f}",
            f"{cron.requests_per_min:.1f}",
        ),
        (
            "idle bytes per minute of the watch, 10 models (measured)",
            f"{watch.bytes_per_min_10 / 1024:.1f} KiB",
            "0 (3 requests per pass)",
            "0",
        ),
        (
            "idle bytes per minute of the watch, 1,000 models (computed)",
            f"{watch.bytes_per_min_1000 / 1024:.0f} KiB (a listing every {every:.1f} s)",
            "0 (3 requests per pass)",
            "0",
        ),
        (
            "idle CPU of the process (% of one core)",
            f"{watch.cpu_percent:.2f} %",
            f"{drift.cpu_percent:.2f} %",
            f"{cron.cpu_percent:.2f} % (one apply: {cron_cpu:.2f} s CPU)",
        ),
    ]
    print()
    print(
        f"{MODELS} LocalModels, daemon defaults (watch 1 s, drift pass {DRIFT_INTERVAL:g} s); idle over {args.idle:g} s"
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("", "daemon + watch", "drift pass alone", f"cron (every {CRON_PERIOD / 60:g} min)")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    print(f"listing size per config entry: emulator {per_entry:.0f} B", end="")
    if real_entries:
        print(f"; real model-runner {real_size / real_entries:.0f} B ({real_entries} configs, {real_size} B)")
    else:
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
