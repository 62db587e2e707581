"""Fault schedule: the real processes driven through faults, one table of what happened.

The operator runs against the real kube-apiserver and etcd (tests/peers/build) and a `localmodel
emulator` process; the daemon runs against an emulator process. Each fault starts from a settled state
(every object Ready), injects the fault, and measures until the invariants hold again:

- converged: every object Ready for its newest generation, and the engine holds exactly the declared
  configs (none missing, no leftovers), within the fault's deadline;
- seconds: from the end of the fault (or the edit that follows it) to converged;
- writes: status writes of the operator during the fault and its recovery (metric), next to the number
  the fault makes necessary (`need`: objects whose status really changes);
- configures: `POST .../_configure` the engine received, next to the configures needed (`need`);
- leftovers: configs on the engine that nothing declares, plus declared configs missing, at the end;
- log lines: warning and error lines the process wrote for the fault.

    .venv/bin/python bench/faults.py            # the short schedule (about 4 minutes)
    .venv/bin/python bench/faults.py --full     # plus the API server down 90 s (about 7 minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.daemon_process import DaemonProcess  # noqa: E402
from tests.faults.helpers import kill_peer, log_lines, log_size, metric, start_peer_again  # noqa: E402
from tests.support.emulator import EmulatorProcess, emulator_process  # noqa: E402
from tests.support.kstatus import ready_verdict  # noqa: E402
from tests.support.kube import (  # noqa: E402
    KubeApi,
    OperatorProcess,
    deploy_rbac_for_user,
    install_localmodel,
    operator_args,
    operator_process,
)
from tests.support.peers import (  # noqa: E402
    KubeAPIServer,
    apply_manifest,
    load_peer_binaries,
    start_kube_apiserver,
)
from tests.support.util import localmodel_yaml  # noqa: E402

DRIFT = 5.0
MODELS = {"a": "ai/smollm2", "b": "ai/llama3.2", "c": "ai/qwen3:0.6B-F16"}
WRITES = "localmodel_operator_status_writes_total"


@dataclass
class Row:
    fault: str
    converged: bool
    seconds: float | None
    writes: str
    configures: str
    leftovers: int
    log_lines: int
    note: str = ""


def log(message: str) -> None:
    print(f"[faults] {message}", file=sys.stderr, flush=True)


def until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> float | None:
    """Seconds until `check()` holds, None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            pass
        time.sleep(interval)
    return None


def engine_configs(url: str) -> dict[str, dict[str, Any]]:
    """model ref -> stored config, as the engine reports them."""
    out = {}
    for entry in httpx.get(url + "/engines/_configure", timeout=5).json():
        out[str(entry["Model"]).removeprefix("docker.io/").removesuffix(":latest")] = entry["Config"]
    return out


def configures(url: str) -> int:
    counters = httpx.get(url + "/_emulator/state", timeout=5).json().get("counters", {})
    return sum(v for k, v in counters.items() if "_configure" in k and k.startswith("POST"))


def loud_lines(path: Path, since: int) -> int:
    return sum(1 for line in log_lines(path, since=since) if line.get("level") in ("warning", "error", "critical"))


# --------------------------------------------------------------------------------------------
# the operator


class OperatorBench:
    def __init__(self, cluster: KubeAPIServer, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.api = KubeApi(cluster)
        self._stack = contextlib.ExitStack()
        self._note = ""

    def declared(self, ns: str) -> dict[str, dict[str, Any]]:
        items = self.api.http.get(KubeApi.path(ns)).json()["items"]
        return {o["spec"]["model"]: o for o in items if not o["metadata"].get("deletionTimestamp")}

    def converged(self, ns: str, engine: EmulatorProcess) -> bool:
        declared = self.declared(ns)
        if not all(ready_verdict(o) for o in declared.values()):
            return False
        stored = engine_configs(engine.url)
        want = {m: {"context-size": o["spec"]["contextSize"]} for m, o in declared.items()}
        return stored == want

    def leftovers(self, ns: str, engine: EmulatorProcess) -> int:
        declared = set(self.declared(ns))
        stored = set(engine_configs(engine.url))
        return len(stored - declared) + len(declared - stored)

    @contextlib.contextmanager
    def setup(self, *extra: str) -> Iterator[tuple[str, EmulatorProcess, OperatorProcess]]:
        ns = self.cluster.new_namespace("fault")
        with emulator_process("--preload-models", "ai/smollm2,ai/llama3.2,ai/qwen3:0.6B-F16") as engine:
            args = operator_args(engine.url, ns, "--finalize-attempts", "1", *extra, drift=DRIFT)
            with operator_process(self.cluster, *args, workdir=self.workdir) as op:
                for i, (name, model) in enumerate(MODELS.items()):
                    self.api.create_localmodel(ns, name, {"model": model, "contextSize": 2048 + i}).raise_for_status()
                if until(lambda: self.converged(ns, engine), 60) is None:
                    raise RuntimeError(f"the objects did not get Ready; log {op.proc.log_path}")
                # Settled: a whole drift pass without a status write (the runners' loads are reported).
                for _ in range(6):
                    before = metric(op.health_url, WRITES, result="written")
                    time.sleep(DRIFT + 0.5)
                    if metric(op.health_url, WRITES, result="written") == before:
                        break
                yield ns, engine, op

    def measure(
        self,
        fault: str,
        inject: Callable[[str, EmulatorProcess, OperatorProcess], Any],
        *,
        need_writes: int,
        need_configures: int,
        timeout: float = 60.0,
        extra: tuple[str, ...] = (),
    ) -> Row:
        log(fault)
        with self.setup(*extra) as (ns, engine, op):
            writes0 = metric(op.health_url, WRITES, result="written") + metric(op.health_url, WRITES, result="progress")
            configures0 = configures(engine.url)
            since = log_size(op.proc.log_path)
            result = inject(ns, engine, op)
            old_lines = 0
            if isinstance(result, OperatorProcess):  # a new operator process: count from its start
                old_lines = loud_lines(op.proc.log_path, since)
                op, writes0, since = result, 0.0, 0
            seconds = until(lambda: self.converged(ns, engine), timeout)
            time.sleep(DRIFT + 1)  # one more drift pass: nothing may be written for an unchanged object
            converged = seconds is not None and self.converged(ns, engine)
            writes = metric(op.health_url, WRITES, result="written") + metric(op.health_url, WRITES, result="progress")
            lines = old_lines + loud_lines(op.proc.log_path, since)
            return Row(
                fault,
                converged,
                seconds,
                f"{writes - writes0:.0f} (need {need_writes})",
                f"{configures(engine.url) - configures0} (need {need_configures})",
                self.leftovers(ns, engine),
                lines,
                self._note,
            )

    # ---- the faults --------------------------------------------------------------------------

    def engine_restart(self, ns: str, engine: EmulatorProcess, op: OperatorProcess) -> None:
        httpx.post(engine.url + "/_emulator/restart", timeout=5).raise_for_status()

    def engine_frozen(self, ns: str, engine: EmulatorProcess, op: OperatorProcess) -> None:
        os.kill(engine.process.pid, signal.SIGSTOP)
        time.sleep(10)
        os.kill(engine.process.pid, signal.SIGCONT)

    def conflict_storm(self, ns: str, engine: EmulatorProcess, op: OperatorProcess) -> None:
        httpx.post(engine.url + "/_emulator/conflicts", json={"count": 20}, timeout=5).raise_for_status()
        self.api.patch_spec(ns, "a", {"contextSize": 4096})

    def pull_cut(self, ns: str, engine: EmulatorProcess, op: OperatorProcess) -> None:
        httpx.post(engine.url + "/_emulator/fail-next-pull", json={"after_bytes": 1000}, timeout=5).raise_for_status()
        self.api.create_localmodel(ns, "d", {"model": "ai/qwen3:8B", "contextSize": 2048}).raise_for_status()

    def apiserver_down(self, seconds: float, peer: str = "kube-apiserver") -> Callable[..., None]:
        def inject(ns: str, engine: EmulatorProcess, op: OperatorProcess) -> None:
            dead = kill_peer(self.cluster, peer)
            time.sleep(seconds)
            start_peer_again(self.cluster, dead)
            self.api.close()
            self.api = KubeApi(self.cluster)
            self.api.patch_spec(ns, "a", {"contextSize": 4096})

        return inject

    def operator_killed(self, ns: str, engine: EmulatorProcess, op: OperatorProcess) -> OperatorProcess:
        for name, model in (("d", "ai/qwen3:8B"), ("e", "ai/qwen3:14B"), ("f", "ai/embeddinggemma")):
            self.api.create_localmodel(ns, name, {"model": model, "contextSize": 2048}).raise_for_status()
        time.sleep(0.5)
        os.killpg(op.proc.pid, signal.SIGKILL)
        op.proc.popen.wait(10)
        args = op.proc.argv[op.proc.argv.index("operator") + 1 :]
        return self._stack.enter_context(_operator_from_argv(self.cluster, args, self.workdir))

    def racing_edits(self, ns: str, engine: EmulatorProcess, op: OperatorProcess) -> None:
        for size in (3000, 3001, 3002, 3003, 3004, 3005):
            self.api.patch_spec(ns, "a", {"contextSize": size})

    def permission_removed(self, ns: str, engine: EmulatorProcess, op: OperatorProcess) -> None:
        docs = deploy_rbac_for_user(self.cluster.operator_user)
        role = next(d for d in docs if d["kind"] == "ClusterRole")
        reduced = copy.deepcopy(role)
        reduced["rules"] = [r for r in reduced["rules"] if "localmodels/status" not in r.get("resources", [])]
        with self.cluster.http() as http:
            http.put(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role['metadata']['name']}", json=reduced)
        self.api.patch_spec(ns, "a", {"contextSize": 4096})
        time.sleep(10)
        self._note = "readyz " + str(httpx.get(op.health_url + "/readyz", timeout=5).status_code) + " while missing"
        apply_manifest(self.cluster.admin_kubeconfig, role)

    def released_finalizer(self, ns: str, engine: EmulatorProcess, op: OperatorProcess) -> None:
        os.kill(engine.process.pid, signal.SIGSTOP)
        try:
            self.api.delete(ns, "c")
            until(lambda: self.api.get(ns, "c") is None, 60)
        finally:
            os.kill(engine.process.pid, signal.SIGCONT)

    def operator_restarted(self, ns: str, engine: EmulatorProcess, op: OperatorProcess) -> OperatorProcess:
        op.proc.stop()
        args = op.proc.argv[op.proc.argv.index("operator") + 1 :]
        restarted = self._stack.enter_context(_operator_from_argv(self.cluster, args, self.workdir))
        time.sleep(2 * DRIFT)  # every object's first pass and a drift pass in the new process
        return restarted


@contextlib.contextmanager
def _operator_from_argv(cluster: KubeAPIServer, argv: list[str], workdir: Path) -> Iterator[OperatorProcess]:
    """The same operator command line again (operator_process adds its own kubeconfig and port)."""
    skip = {"--kubeconfig", "--health-addr", "--log-format", "--operator-namespace"}
    args: list[str] = []
    it = iter(argv)
    for item in it:
        if item in skip:
            next(it, None)
            continue
        args.append(item)
    with operator_process(cluster, *args, workdir=workdir) as op:
        yield op


def operator_faults(full: bool, workdir: Path) -> list[Row]:
    binaries = load_peer_binaries()
    cluster = start_kube_apiserver(binaries, workdir / "kube")
    try:
        install_localmodel(cluster)
        bench = OperatorBench(cluster, workdir)
        n = len(MODELS)
        single = ("--no-leader-election",)  # an outage longer than the lease stops a leader on purpose
        schedule: list[tuple[str, Callable[..., Any], int, int, tuple[str, ...]]] = [
            ("operator restarted, 3 objects Ready", bench.operator_restarted, 0, 0, ()),
            ("engine restart (configs wiped)", bench.engine_restart, n, n, ()),
            ("engine frozen 10 s (SIGSTOP/SIGCONT)", bench.engine_frozen, 2 * n, 0, ()),
            ("409 storm (20 conflicts) + an edit", bench.conflict_storm, 1, 1, ()),
            ("pull cut midway (new object)", bench.pull_cut, 2, 1, ()),
            ("API server killed 15 s + an edit", bench.apiserver_down(15), 1, 1, single),
            ("etcd killed 15 s + an edit", bench.apiserver_down(15, "etcd"), 1, 1, single),
            ("operator SIGKILLed mid-rollout (3 new)", bench.operator_killed, 3, 3, ()),
            ("6 racing edits of one object", bench.racing_edits, 1, 1, ()),
            ("status permission removed 10 s + an edit", bench.permission_removed, 1, 1, ()),
            ("engine frozen during a delete", bench.released_finalizer, 0, 0, ()),
        ]
        if full:
            schedule.insert(6, ("API server killed 90 s + an edit", bench.apiserver_down(90), 1, 1, single))
        rows = []
        for fault, inject, need_writes, need_configures, extra in schedule:
            with contextlib.ExitStack() as stack:
                bench._stack = stack
                bench._note = ""
                try:
                    rows.append(
                        bench.measure(
                            fault,
                            inject,
                            need_writes=need_writes,
                            need_configures=need_configures,
                            timeout=120,
                            extra=extra,
                        )
                    )
                except Exception as exc:  # noqa: BLE001 - one fault failing does not stop the schedule
                    rows.append(Row(fault, False, None, "-", "-", -1, -1, f"error: {exc!r}"[:80]))
        bench.api.close()
        return rows
    finally:
        for proc in reversed(cluster.procs):
            proc.stop()


# --------------------------------------------------------------------------------------------
# the daemon


def daemon_faults(workdir: Path) -> list[Row]:
    rows = []
    files = {"a": ("ai/smollm2", 2048), "b": ("ai/llama3.2", 2049)}

    def write_files(directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, (model, size) in files.items():
            (directory / f"{name}.yaml").write_text(localmodel_yaml(name, model, contextSize=size))

    def converged(running: DaemonProcess, engine: EmulatorProcess, declared: dict[str, int]) -> bool:
        if not all(running.ready(name) for name in files if name in declared):
            return False
        return engine_configs(engine.url) == {files[n][0]: {"context-size": s} for n, s in declared.items()}

    def scenario(fault: str, inject: Callable[[Path, EmulatorProcess, DaemonProcess], Any]) -> Row:
        log(f"daemon: {fault}")
        directory = workdir / f"d-{len(rows)}" / "models"
        write_files(directory)
        with emulator_process("--preload-models", "ai/smollm2,ai/llama3.2") as engine:
            running = DaemonProcess(
                directory,
                engine.url,
                interval=DRIFT,
                log_path=workdir / f"daemon-{len(rows)}.log",
                args=("--deletion-grace", "1"),
            )
            try:
                declared = {n: s for n, (_, s) in files.items()}
                if until(lambda: converged(running, engine, declared), 60) is None:
                    raise RuntimeError("the daemon did not get Ready")
                configures0 = configures(engine.url)
                since = log_size(running.log_path)
                result = inject(directory, engine, running)
                if isinstance(result, tuple):
                    running, declared, need = result
                else:
                    need = result
                seconds = until(lambda: converged(running, engine, declared), 60)
                return Row(
                    f"daemon: {fault}",
                    seconds is not None,
                    seconds,
                    "-",
                    f"{configures(engine.url) - configures0} (need {need})",
                    len(set(engine_configs(engine.url)) ^ {files[n][0] for n in declared}),
                    loud_lines(running.log_path, since if running.log_path.exists() else 0),
                )
            finally:
                running.close()

    def restart(directory: Path, engine: EmulatorProcess, running: DaemonProcess) -> int:
        httpx.post(engine.url + "/_emulator/restart", timeout=5).raise_for_status()
        return 2

    def killed(directory: Path, engine: EmulatorProcess, running: DaemonProcess) -> tuple[DaemonProcess, dict, int]:
        (directory / "a.yaml").write_text(localmodel_yaml("a", "ai/smollm2", contextSize=4096))
        time.sleep(0.3)
        running.process.kill()
        running.close()
        again = DaemonProcess(directory, engine.url, interval=DRIFT, log_path=running.log_path.with_suffix(".2.log"))
        return again, {"a": 4096, "b": 2049}, 1

    def recloned(directory: Path, engine: EmulatorProcess, running: DaemonProcess) -> int:
        backup = directory.with_name("clone")
        os.rename(directory, backup)
        time.sleep(3)
        os.rename(backup, directory)
        return 0

    def frozen_delete(directory: Path, engine: EmulatorProcess, running: DaemonProcess) -> tuple:
        os.kill(engine.process.pid, signal.SIGSTOP)
        (directory / "b.yaml").unlink()
        time.sleep(15)
        os.kill(engine.process.pid, signal.SIGCONT)
        return running, {"a": 2048}, 0

    for fault, inject in (
        ("engine restart (configs wiped)", restart),
        ("daemon SIGKILLed mid-edit", killed),
        ("directory re-cloned (gone 3 s)", recloned),
        ("engine frozen 15 s during a file deletion", frozen_delete),
    ):
        try:
            rows.append(scenario(fault, inject))
        except Exception as exc:  # noqa: BLE001
            rows.append(Row(f"daemon: {fault}", False, None, "-", "-", -1, -1, f"error: {exc!r}"[:80]))
    return rows


def table(rows: list[Row]) -> str:
    head = "| fault | converged | seconds | status writes | configures | leftovers | warn/error lines | note |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        seconds = f"{r.seconds:.1f}" if r.seconds is not None else "-"
        lines.append(
            f"| {r.fault} | {'yes' if r.converged else 'NO'} | {seconds} | {r.writes} | {r.configures} | "
            f"{r.leftovers} | {r.log_lines} | {r.note} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also the API server down for 90 s")
    parser.add_argument("--only", choices=("operator", "daemon"), help="one front-end only")
    parser.add_argument("--json", action="store_true", help="the rows as JSON too")
    args = parser.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="lm-faults-") as tmp:
        if args.only in (None, "operator"):
            rows += operator_faults(args.full, Path(tmp))
        if args.only in (None, "daemon"):
            rows += daemon_faults(Path(tmp))
    print(table(rows))
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=1))
    return 0 if all(r.converged and r.leftovers == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
