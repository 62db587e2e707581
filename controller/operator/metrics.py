"""Prometheus metrics and the probe endpoints, served on one port (`--health-addr`, default `:8080`):

/healthz   200 while the event loop answers (liveness)
/readyz    200 once the operator has started (engines resolved, API server reachable) and while the API
           server grants it every permission it used; else 503 with what is missing (`missing permission:
           patch localmodels/status (localmodel.io) in namespace ns (grant it ...)`)
/metrics   Prometheus text format
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controller.listen import bound_port

NAMESPACE = "localmodel_operator"


@dataclass
class Metrics:
    """The operator's metrics, in their own registry (one per operator, so tests can read them)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconciles = Counter(
            f"{NAMESPACE}_reconciles",
            "LocalModel passes, by result (ready, progressing, stalled, invalid)",
            ["result"],
            registry=r,
        )
        self.errors = Counter(
            f"{NAMESPACE}_errors", "Engine or API errors met during passes, by reason", ["reason"], registry=r
        )
        self.duration = Histogram(
            f"{NAMESPACE}_reconcile_duration_seconds",
            "Duration of one LocalModel pass (all its engines, and the status write)",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.engines_up = Gauge(
            f"{NAMESPACE}_engine_up", "1 when the engine answered its last observation", ["engine"], registry=r
        )
        self.models_ready = Gauge(f"{NAMESPACE}_models_ready", "LocalModels whose Ready condition is True", registry=r)
        self.models = Gauge(f"{NAMESPACE}_models", "LocalModels this process reconciles", registry=r)
        self.status_writes = Counter(
            f"{NAMESPACE}_status_writes",
            "Status writes, by result (written, unchanged, conflict, forbidden; progress: a pull-progress write, "
            "progress-conflict: one answered 409, the object is re-read)",
            ["result"],
            registry=r,
        )
        self.permission_denied = Gauge(
            f"{NAMESPACE}_permission_denied",
            "1 while the API server refuses this process a permission it needs (verb, resource)",
            ["verb", "resource"],
            registry=r,
        )
        self.pending_cleanups = Gauge(
            f"{NAMESPACE}_pending_cleanups",
            "deletionPolicy runs owed to engines that did not answer when the finalizer was released",
            registry=r,
        )
        self.finalizations = Counter(
            f"{NAMESPACE}_finalizations",
            "deletionPolicy runs, by result (done, released-after-errors, cleaned-up-later)",
            ["result"],
            registry=r,
        )


class HealthServer:
    """The aiohttp server behind the probes and /metrics."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.ready = False
        self.problems: Callable[[], list[str]] = list  # what fails /readyz once started (missing permissions)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host or None, self.port)
        await site.start()
        if self.port == 0:  # tests: report the port picked
            self.port = bound_port(site)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(status=503, text="starting\n")
        problems = self.problems()
        if problems:
            return web.Response(status=503, text="".join(f"{problem}\n" for problem in problems))
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
