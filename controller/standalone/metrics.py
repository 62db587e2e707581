"""Prometheus metrics of the daemon, in their own registry (served on GET /metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class _RequestsCollector(Collector):
    """`localmodel_engine_requests_total`, read from the engine client's own counter at scrape time."""

    def __init__(self, read: Callable[[], int]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("localmodel_engine_requests", "HTTP requests sent to the engine.")
        family.add_metric([], self._read())
        yield family


class Metrics:
    def __init__(self, requests_sent: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "localmodel_reconciles",
            "Reconciles of one LocalModel, by result (ready, retrying, stalled, unreachable).",
            ["result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "localmodel_reconcile_errors",
            "Reconciles that did not end Ready, by condition reason.",
            ["reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "localmodel_reconcile_duration_seconds",
            "Time one LocalModel's reconcile took (pulls included).",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.engine_up = Gauge(
            "localmodel_engine_up", "1 when the last observation of the engine succeeded.", registry=self.registry
        )
        self.models = Gauge(
            "localmodel_models", "LocalModels declared in the watched directory.", registry=self.registry
        )
        self.models_ready = Gauge(
            "localmodel_models_ready", "LocalModels whose Ready condition is True.", registry=self.registry
        )
        self.file_errors = Gauge(
            "localmodel_file_errors", "Problems found in the watched files.", registry=self.registry
        )
        self.registry.register(_RequestsCollector(requests_sent))
