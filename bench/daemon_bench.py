"""Benchmark: the `localmodel watch` daemon against the naive re-configure loop (the cron job).

    .venv/bin/python bench/daemon_bench.py [--models 1000] [--edits 20] [--interval 2]

Both run as subprocesses against a fresh DMR emulator (also a subprocess) whose catalog holds one
distinct model per LocalModel, with one LocalModel file per model in one directory. Measured, side by
side:

- edit -> engine: time from rewriting one file (a new contextSize) until `GET /engines/_configure`
  on the engine reports the new value (p50, p95 over --edits edits);
- all Ready: time from process start until every model is applied (daemon: its
  `localmodel_models_ready` gauge; naive: the end of its first pass, since it never verifies);
- requests per idle pass, counted by the emulator (daemon: per drift pass, the passes counted by
  its `GET /engines/ps`; naive: per pass, counted by its `GET /models`);
- RSS of the process (VmRSS) once all models are applied.

The naive baseline is what users run today (docs/engine-contract.md §7; docker/model-runner issue #726):
every `--interval` seconds, re-read the files, pull what is missing and POST `_configure` for every model, in order,
with the same EngineClient the daemon uses. The same interval is used for both so that the figures
compare mechanisms; a real cron job runs every few minutes, which makes its edit latency minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.daemon_process import watch_command  # noqa: E402
from tests.support.util import eventually, free_port  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
FIRST_CONTEXT = 2048


def model_ref(index: int) -> str:
    return f"bench/model-{index:04d}"


def localmodel(index: int, context: int) -> str:
    return (
        f"apiVersion: localmodel.io/v1alpha1\nkind: LocalModel\nmetadata: {{name: model-{index:04d}}}\n"
        f"spec:\n  model: {model_ref(index)}\n  contextSize: {context}\n"
    )


def write_models(directory: Path, count: int) -> None:
    for index in range(count):
        (directory / f"model-{index:04d}.yaml").write_text(localmodel(index, FIRST_CONTEXT))


def write_catalog(path: Path, count: int) -> None:
    artifacts = [
        {"name": model_ref(i), "tags": ["latest"], "size_bytes": 1_000_000, "context_size": 4096} for i in range(count)
    ]
    path.write_text(json.dumps(artifacts))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---- the engine ----------------------------------------------------------------------------------


class Emulator:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=30)

    def counters(self) -> dict[str, int]:
        return self.http.get(f"{self.url}/_emulator/state").json()["counters"]  # type: ignore[no-any-return]

    def reset_counters(self) -> None:
        self.http.post(f"{self.url}/_emulator/reset-counters", json={})

    def context_size(self, ref: str) -> Any:
        entries = self.http.get(f"{self.url}/engines/_configure", params={"model": ref}).json()
        return entries[0]["Config"].get("context-size") if entries else None


@contextmanager
def emulator(catalog: Path, workdir: Path) -> Iterator[Emulator]:
    command = [
        sys.executable,
        "-m",
        "controller",
        "emulator",
        "--port",
        "0",
        "--catalog",
        str(catalog),
        "--load-seconds",
        "0",
    ]
    log = (workdir / "emulator.log").open("w")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=ENV)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("emulator listening on "):
            raise RuntimeError(f"the emulator did not start: {line!r}")
        yield Emulator(line.split()[-1])
    finally:
        stop(process)
        log.close()


# ---- the two contenders --------------------------------------------------------------------------


@dataclass
class Figures:
    edit_p50: float
    edit_p95: float
    all_ready: float
    idle_requests: float
    rss_mib: float


def run_daemon(directory: Path, engine: Emulator, workdir: Path, count: int, edits: int, interval: float) -> Figures:
    port = free_port()
    log = (workdir / "daemon.log").open("w")
    started = time.monotonic()
    process = subprocess.Popen(watch_command(directory, engine.url, port, interval), stdout=log, stderr=log, env=ENV)
    http = httpx.Client(timeout=30)

    def gauge(name: str) -> float:
        try:
            text = http.get(f"http://127.0.0.1:{port}/metrics").text
        except httpx.HTTPError:
            return -1
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return -1

    try:
        eventually(lambda: gauge("localmodel_models_ready") == count, timeout=600, what="every model Ready", every=0.1)
        all_ready = time.monotonic() - started
        # Let the first drift passes read the loaded runners' own configs once, then count idle passes.
        time.sleep(2 * interval + 0.5)
        engine.reset_counters()
        time.sleep(3 * interval + 0.2)
        counters = engine.counters()
        passes = counters.get("GET /engines/ps", 0)
        idle = sum(counters.values()) / passes if passes else float("nan")
        rss = rss_kib(process.pid) / 1024
        latencies = measure_edits(directory, engine, edits)
    finally:
        stop(process)
        http.close()
        log.close()
    return Figures(*percentiles(latencies), all_ready, idle, rss)


NAIVE_WORKER = """
import asyncio, json, sys, time
from controller.desired import render_configure
from controller.documents import load_paths
from controller.engine.client import EngineClient
from controller.plan import Observation

async def main(directory, url, interval):
    async with EngineClient(url, timeout=60) as client:
        while True:
            started = time.monotonic()
            loaded = load_paths([directory])
            models = await client.list_models()
            for model in loaded.models:
                if Observation(url, tuple(models)).find_model(model.spec.model) is None:
                    await client.pull(model.spec.model)
                request = render_configure(model.spec)
                await client.configure(request.body, backend=request.backend)
            print(json.dumps({"pass": time.monotonic() - started}), flush=True)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


def run_naive(directory: Path, engine: Emulator, workdir: Path, count: int, edits: int, interval: float) -> Figures:
    command = [sys.executable, "-c", NAIVE_WORKER, str(directory), engine.url, str(interval)]
    log = (workdir / "naive.log").open("w")
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=ENV)
    assert process.stdout is not None
    try:
        process.stdout.readline()  # the end of the first pass: everything pulled and configured
        all_ready = time.monotonic() - started
        process.stdout.readline()
        engine.reset_counters()  # right after a pass ends: count whole passes
        for _ in range(2):
            process.stdout.readline()
        counters = engine.counters()
        idle = sum(counters.values()) / counters.get("GET /models", 1)
        rss = rss_kib(process.pid) / 1024
        drain(process.stdout)
        latencies = measure_edits(directory, engine, edits, timeout=60 + 10 * interval)
    finally:
        stop(process)
        log.close()
    return Figures(*percentiles(latencies), all_ready, idle, rss)


def drain(stream: Any) -> None:
    """Keep reading a worker's stdout in a thread (it ends with the process) so it never blocks on a full pipe."""
    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()


# ---- measurements --------------------------------------------------------------------------------


def measure_edits(directory: Path, engine: Emulator, edits: int, timeout: float = 30.0) -> list[float]:
    """Rewrite one file at a time with a new contextSize; seconds until the engine reports it."""
    latencies = []
    for edit in range(edits):
        index = (edit * 37) % max(1, len(list(directory.glob("*.yaml"))))
        context = FIRST_CONTEXT + 16 * (edit + 1)
        path = directory / f"model-{index:04d}.yaml"
        started = time.monotonic()
        path.write_text(localmodel(index, context))
        eventually(
            lambda index=index, context=context: engine.context_size(model_ref(index)) == context,
            timeout=timeout,
            what=f"edit {edit} on the engine",
            every=0.01,
        )
        latencies.append(time.monotonic() - started)
    return latencies


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def report(count: int, edits: int, interval: float, daemon: Figures, naive: Figures) -> str:
    rows = [
        (f"edit -> engine p50 ({edits} edits)", f"{daemon.edit_p50 * 1000:.0f} ms", f"{naive.edit_p50 * 1000:.0f} ms"),
        (f"edit -> engine p95 ({edits} edits)", f"{daemon.edit_p95 * 1000:.0f} ms", f"{naive.edit_p95 * 1000:.0f} ms"),
        (f"{count} models all applied", f"{daemon.all_ready:.1f} s", f"{naive.all_ready:.1f} s"),
        ("requests per idle pass", f"{daemon.idle_requests:.1f}", f"{naive.idle_requests:.1f}"),
        (f"RSS at {count} models", f"{daemon.rss_mib:.0f} MiB", f"{naive.rss_mib:.0f} MiB"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}}  {'daemon':>10}  {'naive loop':>10}"]
    lines += [f"{label:<{width}}  {a:>10}  {b:>10}" for label, a, b in rows]
    lines.append(
        f"(interval {interval:g}s for both; the naive loop verifies nothing, so 'applied' is the end of its first pass)"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000, help="LocalModels (and catalog models) (default: 1000)")
    parser.add_argument("--edits", type=int, default=20, help="file edits timed per contender (default: 20)")
    parser.add_argument("--interval", type=float, default=2.0, help="drift pass / loop interval, seconds (default: 2)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) and print its path")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="localmodel-bench-"))
    catalog = workdir / "catalog.json"
    write_catalog(catalog, args.models)
    results: dict[str, Figures] = {}
    for name, contender in (("daemon", run_daemon), ("naive", run_naive)):
        directory = workdir / name
        directory.mkdir()
        write_models(directory, args.models)
        print(f"running the {name} against a fresh emulator with {args.models} models...", file=sys.stderr, flush=True)
        with emulator(catalog, workdir) as engine:
            results[name] = contender(directory, engine, workdir, args.models, args.edits, args.interval)
    print(report(args.models, args.edits, args.interval, results["daemon"], results["naive"]))
    if args.keep:
        print(f"logs in {workdir}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
