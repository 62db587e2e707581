"""What the daemon's GET /status serves and /healthz decides: its records and the engine's health, as shown.

`Record` is one declared LocalModel and how it stands; `EngineHealth` what the daemon knows of the engine;
`status_document` puts them together with the files, the deletions and the saved status into the /status
document (controller/standalone/status_view.py prints it), and `loop_healthy` says whether the pass loop runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.documents import ModelSource
from controller.engine.capabilities import Capabilities
from controller.engine.watch import EngineWatch
from controller.spec import LocalModel
from controller.standalone.files import ModelFiles
from controller.status import READY, TRUE, Condition, EngineStatus, ModelStatus, rfc3339


@dataclass
class Record:
    """One declared LocalModel and how it stands."""

    model: LocalModel  # with the daemon's generation
    source: ModelSource
    conditions: tuple[Condition, ...] = ()
    engine: EngineStatus | None = None
    conflict: str | None = None  # set while another LocalModel owns this (model, mode)
    # From the saved status (controller/standalone/state.py), what a previous process knew: the
    # conditions' lastTransitionTimes until the first status of this process, and the engine entry
    # (lastAppliedTime, a DriftRepaired reason) that inherit_persisted completes each status with.
    restored: tuple[Condition, ...] = ()
    persisted: dict[str, Any] | None = None

    @property
    def generation(self) -> int:
        return self.model.metadata.generation or 1

    @property
    def ready(self) -> bool:
        return any(c.type == READY and c.status == TRUE for c in self.conditions)

    def to_dict(self) -> dict[str, Any]:
        status = ModelStatus(
            self.model.name,
            self.model.spec.model,
            self.generation,
            self.conditions,
            (self.engine,) if self.engine else (),
        )
        return {**status.to_dict(), "source": str(self.source)}


@dataclass
class EngineHealth:
    url: str
    source: str
    up: bool | None = None  # None until the first observation
    failures: int = 0
    last_observed: datetime | None = None
    last_error: str | None = None


def watch_report(watch: EngineWatch | None) -> dict[str, Any] | None:
    """The engine watch's figures (None: drift passes only)."""
    if watch is None:
        return None
    return {
        "period": watch.period,
        "looks": watch.stats.looks,
        "bytes": watch.stats.bytes,
        "listings": watch.stats.listings,
        "lastSize": watch.stats.last_size,
        "lastListingSeconds": round(watch.stats.last_listing_seconds, 4),
        "watched": len(watch.expected()),
    }


def engine_report(
    health: EngineHealth,
    name: str,
    *,
    requests_sent: int,
    capabilities: Capabilities | None,
    watch: EngineWatch | None,
) -> dict[str, Any]:
    return {
        "name": name,
        "url": health.url,
        "foundBy": health.source,
        "up": health.up,
        "lastObserved": rfc3339(health.last_observed) if health.last_observed else None,
        "lastError": health.last_error,
        "requestsSent": requests_sent,
        # What the engine's release keeps (controller/engine/capabilities.py), once detected.
        "capabilities": capabilities.to_dict() if capabilities else None,
        "watch": watch_report(watch),
    }


def status_document(
    *,
    root: Path,
    interval: float,
    now: float,
    watcher_error: str | None,
    engine: dict[str, Any],
    records: Iterable[Record],
    deleting: list[dict[str, Any]],
    files: ModelFiles,
    saved_status: dict[str, Any],
) -> dict[str, Any]:
    """The /status document; `now` is monotonic time (for the removals pending after the grace period)."""
    ordered = sorted(records, key=lambda r: r.model.name)
    pending = files.pending_removal(now)
    models = [r.to_dict() for r in ordered]
    for entry in models:
        if entry["name"] in pending:
            entry["pendingRemoval"] = (
                f"pending removal in {math.ceil(pending[entry['name']])} s: gone from its file; "
                "it stays if the file declares it again before then"
            )
    return {
        "directory": str(root),
        "interval": interval,
        "watcherError": watcher_error,
        "engine": engine,
        "summary": {
            "models": len(ordered),
            "ready": sum(1 for r in ordered if r.ready),
            "stalled": sum(1 for r in ordered if r.engine is not None and r.engine.stalled),
            "fileErrors": len(files.errors),
            "pendingRemoval": len(pending),
        },
        "models": models,
        "deleting": deleting,
        "deletionGrace": files.grace,
        "savedStatus": saved_status,
        "files": files.report(now),
    }


def loop_healthy(last_pass: float | None, interval: float, now: float) -> bool:
    """The loop has run within two intervals (plus slack): it is not stuck."""
    return last_pass is not None and now - last_pass <= 2 * interval + 10
