"""Node agents at cluster scale, simulated on the real kube-apiserver (tests/peers/build): N node agents
in this one process, each the real agent code (controller.operator.agent.NodeAgent: the Operator's
passes, its own LocalModelNode, its presence Lease, the aggregator election) with its own KubeClient,
its own emulated engine (all the engines in one process of their own; `--engines-here`: in this one) and
its own Node object, x 20 LocalModels that target every node.

Two designs, side by side, each on a fresh namespace of the same API server:
- `bounded`: today's agents (docs/scale.md): per-node detail in one LocalModelNode per node, one elected
  aggregator writes each LocalModel's summary and holds its one finalizer;
- `per-node` (the baseline): the agents of commit BASELINE_REV, the design before (every agent writes
  its entry into the LocalModel's `status.engines[]`, presence Leases listed by every agent), run from
  a git worktree of that commit in a child process against the same API server (`--baseline REV`,
  `--no-baseline` to skip it). A baseline that is not Ready within `--baseline-timeout` is reported so.

Per size and design it prints: time from creating the 20 LocalModels to all Ready; API-server requests
and response bytes during the rollout and per idle minute, from the API server's own /metrics
(`apiserver_request_total`, `apiserver_response_sizes_sum`, `apiserver_watch_events_sizes_sum`, for
localmodels, localmodelnodes and leases; the bench's own Ready polls are subtracted); status writes
to LocalModels per idle minute; the largest LocalModel object; the process's resident memory growth
per node (an agent; with `--engines-here`, and its emulated engine); idle requests per agent per renewal
period (the target: 1, the agent's own Lease renewal).

What the driver replaces: kopf's watch. Each agent has its own LocalModel watch (a real watch stream, so
watch event bytes are real) and relays its events to the agent, as handlers.py does.

    .venv/bin/python bench/scale_bench.py [--nodes 10,50,200] [--models 20] [--idle 60] [--settle 0] [--lease 40]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from controller.crd import GROUP, PLURAL, VERSION  # noqa: E402
from controller.crd import NAME as CRD_NAME  # noqa: E402
from controller.crd import NODE_NAME as NODE_CRD_NAME  # noqa: E402
from controller.emulator import running_emulator  # noqa: E402
from controller.emulator.catalog import DEFAULT_ARTIFACTS, Catalog, artifact_from_json  # noqa: E402
from controller.operator.agent import NodeAgent, aggregator_elector  # noqa: E402
from controller.operator.config import OperatorConfig  # noqa: E402
from controller.operator.engines import EngineRef  # noqa: E402
from controller.operator.kube import KubeClient  # noqa: E402
from controller.operator.presence import AgentPresence  # noqa: E402
from controller.operator.runtime import Operator  # noqa: E402
from tests.support.kstatus import ready_verdict  # noqa: E402
from tests.support.kube import CRD_FILE, NODE_CRD_FILE  # noqa: E402
from tests.support.peers import (  # noqa: E402
    apply_manifest,
    load_peer_binaries,
    start_kube_apiserver,
    wait_for_crd_established,
)

OPERATOR_NAMESPACE = "localmodel-system"
RESOURCES = ("localmodels", "localmodelnodes", "leases")
BASELINE_REV = "6e5e50a"  # the last commit before LocalModelNodes (issue 15)
# Every engine can keep all its models loaded: with the engine's 8 runner slots, 20 preloaded models evict
# each other, and each eviction is a real change of `loaded` that any status layout reports, for minutes
# after all are Ready; idle is meant to measure a cluster where nothing changes.
RUNNER_SLOTS = 64


def server_counters(http: httpx.Client) -> dict[str, float]:
    """Requests, response bytes and watch event bytes for localmodels and leases, from /metrics."""
    totals = {"requests": 0.0, "response_bytes": 0.0, "watch_events": 0.0, "watch_bytes": 0.0, "lm_writes": 0.0}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("#") or not any(f'"{r}"' in line for r in RESOURCES):
            continue
        name, value = line.split("{", 1)[0], float(line.rsplit(" ", 1)[1])
        if name == "apiserver_request_total":
            totals["requests"] += value
            resource, verb = _label(line, "resource"), _label(line, "verb")
            subresource = _label(line, "subresource")
            key = f"req {resource}{'/' + subresource if subresource else ''} {verb}"
            totals[key] = totals.get(key, 0.0) + value
            if resource == "localmodels" and verb in ("PATCH", "PUT", "POST", "APPLY"):
                totals["lm_writes"] += value
        elif name == "apiserver_response_sizes_sum":
            totals["response_bytes"] += value
        elif name == "apiserver_watch_events_total":
            totals["watch_events"] += value
        elif name == "apiserver_watch_events_sizes_sum":
            totals["watch_bytes"] += value
    return totals


def _label(line: str, name: str) -> str:
    found = re.search(rf'[{{,]{name}="([^"]*)"', line)
    return found.group(1) if found else ""


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def cpu_by_command() -> dict[str, float]:
    """CPU seconds (user + system) used so far by the processes of this machine, summed by command name
    (/proc/PID/stat: comm, utime, stime), to show where a rollout's time goes."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        if stat.parent.name == str(os.getpid()):
            comm = "agents (this process)"
        elif comm.startswith("python"):
            comm = "python (the engines)"
        fields = text[text.rindex(")") + 2 :].split()
        totals[comm] = totals.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


class Agent:
    """One simulated node agent: the real NodeAgent, and a LocalModel watch relaying its events (as kopf)."""

    def __init__(self, agent: NodeAgent, url: str, token: str, namespace: str) -> None:
        self.agent = agent
        self.namespace = namespace
        self.http = httpx.AsyncClient(
            base_url=url, verify=False, timeout=None, headers={"Authorization": f"Bearer {token}"}
        )

    async def run(self) -> None:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"
        while True:  # a fresh API server answers 429 for a while
            answer = await self.http.get(path)
            if answer.status_code == 200:
                break
            await asyncio.sleep(0.5)
        listed = answer.json()
        for item in listed.get("items") or []:
            self.agent.object_changed("ADDED", item)
        rv = listed["metadata"]["resourceVersion"]
        async with self.http.stream("GET", path, params={"watch": "1", "resourceVersion": rv}) as response:
            async for line in response.aiter_lines():
                if line:
                    event = json.loads(line)
                    self.agent.object_changed(event["type"], event["object"])

    async def aclose(self) -> None:
        await self.agent.aclose()
        await self.agent.kube.aclose()
        await self.http.aclose()


SERVE_ENGINES = "--serve-engines"  # (internal) this script as the engines' own process


async def serve_engines(count: int, models: list[str]) -> None:
    """(In the engines' own process) `count` emulated engines; their URLs as one JSON line on stdout;
    until stdin closes."""
    async with engines_here(count, models) as urls:
        print(json.dumps(urls), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


@contextlib.asynccontextmanager
async def engines_here(count: int, models: list[str]) -> AsyncIterator[list[str]]:
    catalog = Catalog([*DEFAULT_ARTIFACTS, *(artifact_from_json({"name": m}) for m in models)])
    async with contextlib.AsyncExitStack() as stack:
        urls = []
        for _ in range(count):
            emu = await stack.enter_async_context(
                running_emulator("127.0.0.1", 0, catalog=catalog, preload_models=models, load_seconds=0)
            )
            urls.append(emu.url)
        yield urls


@contextlib.asynccontextmanager
async def engines(count: int, models: list[str], *, separate: bool) -> AsyncIterator[list[str]]:
    """The nodes' emulated engines: in this process, or (`separate`) in one process of their own, as real
    engines are not in their agents' process (the agents' CPU is then theirs alone, as on real nodes)."""
    if not separate:
        async with engines_here(count, models) as urls:
            yield urls
        return
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, SERVE_ENGINES, str(count), json.dumps(models),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdin is not None
    line = await proc.stdout.readline()
    try:
        yield json.loads(line)
    finally:
        proc.stdin.close()
        await proc.wait()


@contextlib.asynccontextmanager
async def agents(
    url: str, token: str, namespace: str, nodes: list[str], models: list[str], lease: float, separate: bool
) -> AsyncIterator[list[Agent]]:
    labels = {node: {"localmodel-bench": "yes"} for node in nodes}
    async with contextlib.AsyncExitStack() as stack:
        running: list[Agent] = []
        tasks: list[asyncio.Task[None]] = []
        urls = await stack.enter_async_context(engines(len(nodes), models, separate=separate))
        for node, engine_url in zip(nodes, urls, strict=True):
            kube = KubeClient(url, token=lambda: token, verify=False)
            config = OperatorConfig(
                mode="node-agent",
                node_name=node,
                operator_namespace=OPERATOR_NAMESPACE,
                namespaces=(namespace,),
                watch_period=None,
                drift_interval=30.0,
                agent_lease_seconds=lease,
            )
            presence = AgentPresence(kube, OPERATOR_NAMESPACE, node, duration=lease)
            await presence.start()
            operator = Operator(config, kube, [EngineRef(node, engine_url)], nodes=labels)
            agent = NodeAgent(operator, kube, presence=presence, elector=aggregator_elector(config, kube, presence))
            await agent.load()
            agent.start_watches()
            driver = Agent(agent, url, token, namespace)
            running.append(driver)
            tasks.append(asyncio.create_task(driver.run()))
        try:
            yield running
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for driver in running:
                await driver.aclose()


async def run_design(
    http: httpx.Client,
    url: str,
    token: str,
    nodes: list[str],
    models: list[str],
    lease: float,
    idle: float,
    separate_engines: bool = True,
    settle: float = 0.0,
) -> dict[str, Any]:
    namespace = f"scale-bounded-{len(nodes)}-{int(time.time())}"
    created = await asyncio.to_thread(
        http.post,
        "/api/v1/namespaces",
        json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    created.raise_for_status()
    rss0 = rss_bytes()
    async with agents(url, token, namespace, nodes, models, lease, separate_engines) as running:
        await asyncio.sleep(1)  # watches open
        before = await asyncio.to_thread(server_counters, http)
        cpu_before = cpu_by_command()
        t0 = time.monotonic()
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        for index, model in enumerate(models):
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "LocalModel",
                "metadata": {"name": f"m{index}"},
                "spec": {"model": model, "contextSize": 2048, "nodeSelector": {"localmodel-bench": "yes"}},
            }
            (await asyncio.to_thread(http.post, path, json=body)).raise_for_status()
        polls = poll_bytes = 0
        while True:
            await asyncio.sleep(1.0)
            if time.monotonic() - t0 > 600:
                raise TimeoutError(f"{len(nodes)} nodes: not all Ready after 600 s")
            answer = await asyncio.to_thread(http.get, path)
            polls += 1
            poll_bytes += len(answer.content)
            if answer.status_code != 200:  # a swamped API server answers 429 or times out: poll again
                print(f"  Ready poll: HTTP {answer.status_code}", file=sys.stderr)
                continue
            items = answer.json()["items"]
            if len(items) == len(models) and all(ready_verdict(item) for item in items):
                break
            if polls % 15 == 0:
                waiting = [i for i in items if not ready_verdict(i)]
                print(f"  {len(waiting)} of {len(items)} LocalModels not Ready yet", file=sys.stderr)
        ready_seconds = time.monotonic() - t0
        cpu_after = cpu_by_command()
        cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_after.items() if v - cpu_before.get(k, 0.0) >= 0.5}
        engine_requests = sum(e.client.requests_sent for d in running for e in d.agent.operator.engines)
        rollout = delta(await asyncio.to_thread(server_counters, http), before)
        rss = rss_bytes() - rss0
        await asyncio.sleep(settle)
        idle_before = await asyncio.to_thread(server_counters, http)
        await asyncio.sleep(idle)
        idle_after = await asyncio.to_thread(server_counters, http)
        idle_delta = {k: v * 60 / idle for k, v in delta(idle_after, idle_before).items()}
        # The bench's own Ready polls (one LIST each, and the bytes it received): subtracted.
        rollout["requests"] -= polls
        rollout["response_bytes"] -= poll_bytes
        items = (await asyncio.to_thread(http.get, path)).json()["items"]
        largest = max(len(json.dumps(item, separators=(",", ":"))) for item in items)
        status_writes = sum(d.agent.aggregator.writes + d.agent.writer.writes for d in running)
    return {
        "ready_seconds": ready_seconds,
        "rollout": rollout,
        "idle_per_minute": idle_delta,
        "largest_object": largest,
        "rss_per_node": rss / len(nodes),
        "renewals_per_minute": len(nodes) * 60 / (lease / 4),  # one per agent per renewal period
        "status_writes": status_writes,
        "conflicts": 0,
        "engine_requests_per_node": engine_requests / len(nodes),  # until all Ready (the agents' own engines)
        "rollout_cpu_seconds": cpu,  # by process command name, until all Ready
    }


BASELINE_SCRIPT = """
import asyncio, json, sys
import httpx
import controller.emulator.state
from bench.scale_bench import run_design
controller.emulator.state.RUNNER_SLOTS = {slots}
url, token, nodes, models, lease, idle = json.loads(sys.argv[1])
http = httpx.Client(base_url=url, verify=False, timeout=300, headers={"Authorization": "Bearer " + token})
print(json.dumps(asyncio.run(run_design(http, url, token, nodes, models, lease, idle))))
"""


def run_baseline(
    worktree: Path, url: str, token: str, nodes: list[str], models: list[str], lease: float, idle: float, timeout: float
) -> dict[str, Any] | str:
    """The design of BASELINE_REV (its own run_design, `leases`), from its worktree, against this API server.
    Returns its figures, or why there are none."""
    argv = json.dumps([url, token, nodes, models, lease, idle])
    try:
        done = subprocess.run(
            [sys.executable, "-c", BASELINE_SCRIPT.replace("{slots}", str(RUNNER_SLOTS)), argv],
            cwd=worktree,
            env={**os.environ, "PYTHONPATH": str(worktree)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"not all Ready within {timeout:.0f} s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"failed: {last}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    import logging

    import controller.emulator.runners

    controller.emulator.runners.RUNNER_SLOTS = RUNNER_SLOTS
    if sys.argv[1:2] == [SERVE_ENGINES]:
        asyncio.run(serve_engines(int(sys.argv[2]), json.loads(sys.argv[3])))
        return 0

    logging.basicConfig(level=logging.ERROR, format="%(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="10,50,200", help="node counts, comma-separated (default: 10,50,200)")
    parser.add_argument("--models", type=int, default=20, help="LocalModels, each on every node (default: 20)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measured (default: 60)")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds between all Ready and the idle measurement (default: 0); the standby agents spread "
        "their reads of the aggregator Lease by the agent count, which the aggregator learns in its first minutes",
    )
    parser.add_argument("--lease", type=float, default=40.0, help="agent lease seconds (default: 40)")
    parser.add_argument("--baseline", default=BASELINE_REV, help=f"commit of the baseline (default: {BASELINE_REV})")
    parser.add_argument("--no-baseline", action="store_true", help="measure today's design only")
    parser.add_argument(
        "--engines-here",
        action="store_true",
        help="run the emulated engines in the agents' process (default: in one process of their own)",
    )
    parser.add_argument(
        "--baseline-timeout", type=float, default=600.0, help="seconds a baseline size may take (default: 600)"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))  # stop the API server too
    sizes = [int(n) for n in args.nodes.split(",")]
    models = [f"ai/sim-{i}" for i in range(args.models)]
    binaries = load_peer_binaries()
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "baseline"
        if not args.no_baseline:
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(worktree), args.baseline],
                check=True,
                capture_output=True,
            )
        kas = start_kube_apiserver(binaries, Path(tmp) / "kube")
        try:
            for crd_file, crd_name in ((CRD_FILE, CRD_NAME), (NODE_CRD_FILE, NODE_CRD_NAME)):
                apply_manifest(kas.admin_kubeconfig, crd_file)
                wait_for_crd_established(kas.admin_kubeconfig, crd_name)
            http = kas.http()
            http.timeout = httpx.Timeout(300.0)  # an API server swamped by N agents answers slowly
            http.post(
                "/api/v1/namespaces",
                json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
            )
            made = 0
            rows: list[tuple[int, str, dict[str, Any] | str]] = []
            for size in sizes:
                for index in range(made, size):
                    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{index:04d}"}}
                    node["metadata"]["labels"] = {"localmodel-bench": "yes"}  # type: ignore[index]
                    http.post("/api/v1/nodes", json=node).raise_for_status()
                made = max(made, size)
                nodes = [f"node-{i:04d}" for i in range(size)]
                result: dict[str, Any] | str = asyncio.run(
                    run_design(
                        http,
                        kas.url,
                        kas.admin_token,
                        nodes,
                        models,
                        args.lease,
                        args.idle,
                        not args.engines_here,
                        args.settle,
                    )
                )
                rows.append((size, "bounded", result))
                print_row(size, "bounded", result, flush=True)
                if not args.no_baseline:
                    timeout = args.baseline_timeout + args.idle + 120
                    result = run_baseline(
                        worktree, kas.url, kas.admin_token, nodes, models, args.lease, args.idle, timeout
                    )
                    rows.append((size, "per-node", result))
                    print_row(size, "per-node", result, flush=True)
        finally:
            for proc in reversed(kas.procs):
                proc.stop()
            if not args.no_baseline:
                subprocess.run(
                    ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(worktree)], check=False
                )
    print()
    print_table(rows, args)
    return 0


def print_row(size: int, design: str, r: dict[str, Any] | str, *, flush: bool = False) -> None:
    if isinstance(r, str):
        print(f"{size} nodes, {design}: {r}", file=sys.stderr, flush=flush)
        return
    print(
        f"{size} nodes, {design}: Ready in {r['ready_seconds']:.1f} s; rollout "
        f"{r['rollout']['requests']:.0f} req / {r['rollout']['response_bytes'] / 1e6:.2f} MB responses / "
        f"{r['rollout']['watch_bytes'] / 1e6:.2f} MB watch events; "
        f"idle/min {r['idle_per_minute']['requests']:.0f} req / "
        f"{r['idle_per_minute']['response_bytes'] / 1e3:.1f} kB / {r['idle_per_minute']['watch_bytes'] / 1e3:.1f} kB "
        f"watch / {r['idle_per_minute'].get('lm_writes', 0):.0f} LocalModel writes; "
        f"largest LocalModel {r['largest_object'] / 1e3:.1f} kB; RSS/node {r['rss_per_node'] / 1e6:.2f} MB; "
        f"{r['status_writes']:.0f} status writes, {r['conflicts']:.0f} conflicts (409) in the whole run",
        file=sys.stderr,
        flush=flush,
    )
    if "engine_requests_per_node" in r:
        print(f"  engine requests per node until all Ready: {r['engine_requests_per_node']:.0f}", file=sys.stderr)
    if r.get("rollout_cpu_seconds"):
        cpu = ", ".join(f"{k} {v:.0f} s" for k, v in sorted(r["rollout_cpu_seconds"].items(), key=lambda kv: -kv[1]))
        print(f"  CPU until all Ready: {cpu}", file=sys.stderr)
    idle = {k[4:]: v for k, v in r["idle_per_minute"].items() if k.startswith("req ") and v >= 0.5}
    if idle:
        print("  idle requests/min: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(idle.items())), file=sys.stderr)
    if "renewals_per_minute" in r:
        ratio = r["idle_per_minute"]["requests"] / r["renewals_per_minute"]
        print(f"  idle requests per agent per renewal period: {ratio:.3f}", file=sys.stderr)


def print_table(rows: list[tuple[int, str, dict[str, Any] | str]], args: argparse.Namespace) -> None:
    print(f"{args.models} LocalModels on every node; idle measured over {args.idle:.0f} s, scaled to a minute")
    header = (
        f"{'nodes':>5} {'design':<8} {'ready s':>8} {'rollout req':>11} {'rollout MB':>10} {'watch MB':>9} "
        f"{'idle req/min':>12} {'idle kB/min':>11} {'idle watch kB':>13} {'idle LM writes':>14} "
        f"{'largest kB':>10} {'RSS MB/node':>11} {'idle/renewal':>12}"
    )
    print(header)
    for size, design, r in rows:
        if isinstance(r, str):
            print(f"{size:>5} {design:<8} {r}")
            continue
        # idle requests per agent per renewal period (the target: 1, the renewal itself)
        renewals = r.get("renewals_per_minute")
        ratio = f"{r['idle_per_minute']['requests'] / renewals:.3f}" if renewals else "-"
        print(
            f"{size:>5} {design:<8} {r['ready_seconds']:>8.1f} {r['rollout']['requests']:>11.0f} "
            f"{r['rollout']['response_bytes'] / 1e6:>10.2f} {r['rollout']['watch_bytes'] / 1e6:>9.2f} "
            f"{r['idle_per_minute']['requests']:>12.0f} {r['idle_per_minute']['response_bytes'] / 1e3:>11.1f} "
            f"{r['idle_per_minute']['watch_bytes'] / 1e3:>13.1f} {r['idle_per_minute'].get('lm_writes', 0):>14.0f} "
            f"{r['largest_object'] / 1e3:>10.1f} {r['rss_per_node'] / 1e6:>11.2f} "
            f"{ratio:>12}"
        )


if __name__ == "__main__":
    sys.exit(main())
