"""Operator benchmark: N LocalModels (default 500) applied at once against the real kube-apiserver
(tests/peers/build) and one emulated engine.

Measures
- time from the first create to every object Ready (for its current generation);
- after two drift intervals to settle, API requests per idle minute, counted by the API server itself
  (`apiserver_request_total` for the resources the operator touches: localmodels, localmodels/status, events, nodes,
  configmaps);
  watch streams count once, when opened;
- engine requests per idle minute (the emulator's own counters);
- engine restart -> every declared config back, p50/p95 over --restarts restarts of the emulator
  (`POST /_emulator/restart`, at a random phase of the watch period), with the operator's default
  engine watch (1 s), and the same computed for the drift pass alone (uniform over the interval).

Baseline, printed side by side: a controller that writes status on every drift pass instead of
comparing first would send N x 60 / drift-interval status writes per idle minute (computed, not run).

    .venv/bin/python bench/operator_bench.py [--count 500] [--drift-interval 30] [--idle 60] [--restarts 10]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.emulator import emulator_process  # noqa: E402
from tests.support.kstatus import ready_verdict  # noqa: E402
from tests.support.kube import (  # noqa: E402
    KubeApi,
    install_localmodel,
    operator_args,
    operator_process,
)
from tests.support.peers import (  # noqa: E402
    load_peer_binaries,
    start_kube_apiserver,
)

OPERATOR_RESOURCES = {"localmodels", "events", "nodes", "configmaps"}


def operator_requests(http: httpx.Client) -> dict[str, int]:
    """apiserver_request_total over the resources the operator uses, by `VERB resource[/subresource]`."""
    totals: dict[str, int] = {}
    for line in http.get("/metrics").text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, value = line.rsplit(" ", 1)
        fields = dict(part.split("=", 1) for part in labels[len("apiserver_request_total{") : -1].split(","))
        fields = {k: v.strip('"') for k, v in fields.items()}
        if fields.get("resource") in OPERATOR_RESOURCES:
            key = f"{fields['verb']} {fields['resource']}" + (
                f"/{fields['subresource']}" if fields.get("subresource") else ""
            )
            totals[key] = totals.get(key, 0) + int(float(value))
    return totals


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def engine_requests(url: str) -> int:
    return sum(httpx.get(url + "/_emulator/state", timeout=10).json()["counters"].values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--drift-interval", type=float, default=30.0)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement (default 60)")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--restarts", type=int, default=10, help="engine restarts to time (default 10)")
    args = parser.parse_args()

    binaries = load_peer_binaries()
    missing = [n for n in ("kube-apiserver", "etcd") if not binaries.get(n)]
    if missing:
        print(f"peers unavailable: {', '.join(missing)} (run tests/peers/build)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    cluster = start_kube_apiserver(binaries, workdir / "kube")
    try:
        install_localmodel(cluster)
        namespace = cluster.new_namespace("bench")
        api = KubeApi(cluster)
        with emulator_process("--load-seconds", "0") as engine:
            for i in range(args.count):  # one model per object: two objects may not share (model, mode)
                httpx.post(
                    engine.url + "/_emulator/catalog", json={"name": f"bench/m{i}", "pulled": True}, timeout=10
                ).raise_for_status()
            command = operator_args(engine.url, namespace, "--workers", str(args.workers), drift=args.drift_interval)
            with operator_process(cluster, *command, workdir=workdir) as op:
                started = time.monotonic()
                with concurrent.futures.ThreadPoolExecutor(16) as pool:
                    codes = list(
                        pool.map(
                            lambda i: (
                                KubeApi(cluster)
                                .create_localmodel(namespace, f"m{i}", {"model": f"bench/m{i}", "contextSize": 2048})
                                .status_code
                            ),
                            range(args.count),
                        )
                    )
                assert set(codes) == {201}, set(codes)
                applied = time.monotonic() - started
                while True:
                    items = api.http.get(KubeApi.path(namespace)).json()["items"]
                    ready = sum(ready_verdict(o) for o in items)
                    if ready == args.count:
                        break
                    op.proc.check_alive()
                    time.sleep(0.5)
                all_ready = time.monotonic() - started

                # Settle: each object's next pass (within one drift interval) reports what changed
                # since its first one (the runner the engine loaded in the background, "verified").
                time.sleep(2 * args.drift_interval)
                before_api, before_engine = operator_requests(api.http), engine_requests(engine.url)
                time.sleep(args.idle)
                idle = delta(operator_requests(api.http), before_api)
                idle_api = sum(idle.values()) * 60 / args.idle
                idle_engine = (engine_requests(engine.url) - before_engine) * 60 / args.idle
                restarts = []
                for _ in range(args.restarts):
                    time.sleep(random.uniform(0, 1.0))
                    httpx.post(engine.url + "/_emulator/restart", timeout=10).raise_for_status()
                    started = time.monotonic()
                    while len(httpx.get(engine.url + "/engines/_configure", timeout=30).json() or []) < args.count:
                        op.proc.check_alive()
                        time.sleep(0.01)
                    restarts.append(time.monotonic() - started)
        naive = args.count * 60 / args.drift_interval
        print(f"LocalModels: {args.count}, drift interval {args.drift_interval:g}s, workers {args.workers}")
        print(f"created in {applied:.1f}s; all Ready after {all_ready:.1f}s")
        print(f"{'per idle minute':<28}{'localmodel operator':>22}{'write-every-pass (computed)':>30}")
        print(f"{'API server requests':<28}{idle_api:>22.0f}{naive:>30.0f}")
        print(f"{'engine requests':<28}{idle_engine:>22.0f}{'':>30}")
        for key, count in sorted(idle.items()):
            print(f"  {key:<26}{count * 60 / args.idle:>22.0f}")
        if restarts:
            ordered = sorted(restarts)
            p50, p95 = statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
            drift = f"{args.drift_interval / 2:.0f} / {args.drift_interval * 0.95:.1f} s + repair"
            print(f"{'restart -> all configs back':<28}{f'{p50:.2f} / {p95:.2f} s (n={len(ordered)})':>22}{drift:>30}")
            print("  (p50 / p95; the right column: the drift pass alone, computed)")
        api.close()
    finally:
        for proc in reversed(cluster.procs):
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
