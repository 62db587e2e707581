"""Fleet logic that the daemon (controller/standalone/daemon.py) and the operator
(controller/operator/runtime.py) share: what concerns many LocalModels on an engine rather than one
reconcile, and is the same whichever front-end holds the models. Pure: the caller brings the clock.

So far: claims and their conflict order (which LocalModel owns a model and mode), the engine watch's
repair causes and the events they explain (event-to-log mapping), readiness accounting (which models
are Ready, for the models_ready gauge and the "Ready" log line), and the one vocabulary of event names
(`Event`). How the front-ends' chores are retried is controller/backoff.py `Retries`; a deletionPolicy's
tries are controller/deletion.py.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Hashable
from enum import StrEnum
from typing import Generic, TypeVar

from controller.plan import find_conflicts
from controller.spec import LocalModelSpec
from controller.status import EngineStatus, Phase, Reason

K = TypeVar("K", bound=Hashable)  # a model's key: its name (daemon), or (engine, namespace/name) (operator)


class Claims:
    """Which LocalModel owns each (model, mode): the engine keeps one config per key, so of two LocalModels
    declaring the same, the older claim wins and the other is a Conflict (controller.plan.find_conflicts).

    Claims are ordered by `rank`, then by key: the operator ranks by creationTimestamp, so that every
    process (each node agent) picks the same owner; without a rank (the daemon) a key ranks by when it was
    first claimed, so a LocalModel added to the files never takes the model from one already there."""

    def __init__(self) -> None:
        self._specs: dict[str, LocalModelSpec] = {}
        self._ranks: dict[str, str] = {}
        self._sequence = itertools.count()
        self._conflicts: dict[str, str] | None = None  # computed once per change of the claims (every pass asks)

    def claim(self, key: str, spec: LocalModelSpec, rank: str | None = None) -> None:
        before = (self._specs.get(key), self._ranks.get(key))
        self._specs[key] = spec
        if rank is not None:
            self._ranks[key] = rank
        elif key not in self._ranks:
            self._ranks[key] = f"{next(self._sequence):020d}"
        if before != (spec, self._ranks[key]):
            self._conflicts = None

    def release(self, key: str) -> None:
        """`key` claims nothing any more (gone, an invalid spec, no engine targeted): a later one may own it."""
        if self._specs.pop(key, None) is not None:
            self._conflicts = None
        self._ranks.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._specs

    def ordered(self) -> list[str]:
        """Every key that claims, the oldest claim first."""
        return sorted(self._specs, key=lambda key: (self._ranks[key], key))

    def conflicts(self) -> dict[str, str]:
        """The keys whose (model, mode) an older claim holds, with the message that says so."""
        if self._conflicts is None:
            self._conflicts = find_conflicts([(key, self._specs[key]) for key in self.ordered()])
        return dict(self._conflicts)


def conflict_status(engine: str, message: str, generation: int | None = None) -> EngineStatus:
    """The status of a LocalModel that loses its claim (Claims.conflicts): Stalled until one of the two changes."""
    return EngineStatus(engine, Phase.STALLED, Reason.CONFLICT, message, stalled=True, observed_generation=generation)


class RepairCauses(Generic[K]):
    """What the engine watch noticed happen to a model's config (restarted away, unloaded, overwritten by
    another client) and when, kept until the DriftRepaired event of its repair says it."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._causes: dict[K, tuple[str, float]] = {}

    def noticed(self, key: K, what: str, at: float) -> None:
        """The watch saw `what` happen to `key`'s config at monotonic time `at`."""
        self._causes[key] = (what, at)

    def forget(self, key: K) -> None:
        """The model is verified (nothing to explain any more), or being deleted."""
        self._causes.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._causes

    def explain(self, key: K, reason: str, message: str) -> str:
        """The message of an engine event about `key`: a DriftRepaired one says what the watch noticed and
        how long the config was gone, once; any other event is left as it is."""
        if reason != Reason.DRIFT_REPAIRED.value:
            return message
        cause = self._causes.pop(key, None)
        if cause is None:
            return message
        what, noticed = cause
        return f"{what}; config back after {self._monotonic() - noticed:.1f} s ({message})"


class Readiness(Generic[K]):
    """Which models are Ready now."""

    def __init__(self) -> None:
        self._ready: set[K] = set()

    def update(self, key: K, ready: bool) -> bool:
        """Record whether `key` is Ready; True when it just became Ready (it was not, or was unknown)."""
        if not ready:
            self._ready.discard(key)
            return False
        if key in self._ready:
            return False
        self._ready.add(key)
        return True

    def forget(self, key: K) -> None:
        """The model is gone."""
        self._ready.discard(key)

    def __len__(self) -> int:
        """How many models are Ready (the models_ready gauge)."""
        return len(self._ready)


def event_level(kind: str) -> int:
    """The log level of an event of `kind` ("Normal" or "Warning", as Kubernetes Events have it)."""
    return logging.WARNING if kind == "Warning" else logging.INFO


class Event(StrEnum):
    """What happens to a fleet, named once for both front-ends: the `event` field of their log lines and, from
    the operator, the reason of its Kubernetes Events. CamelCase, as Kubernetes has reasons. What happens in
    one model's reconcile is named by its condition reason (controller.status.Reason: Applied, DriftRepaired,
    PullFailed, Conflict, ...) or below; every name a log line or an Event carries is one of these or a
    Reason (tests/unit/test_fleet.py reads the sources to make sure)."""

    # The process.
    STARTED = "Started"  # the daemon watches its directory
    STOPPED = "Stopped"
    FAILED = "Failed"  # stopped on an unexpected error (the daemon; systemd restarts it)
    STATUS_SERVER = "StatusServer"  # serving /status, /metrics and /healthz
    CONNECTION_CAP = "ConnectionCap"  # the status server closed a connection: too many were open
    # The engine.
    ENGINE_FOUND = "EngineFound"  # which engine, found how (or the embedded emulator started)
    ENGINE_DOWN = "EngineDown"
    ENGINE_UP = "EngineUp"
    # A model's reconcile (controller/reconcile.py), besides its condition reasons.
    PULLED = "Pulled"
    PRELOADED = "Preloaded"
    UNLOADED = "Unloaded"
    DELETED = "Deleted"  # deletionPolicy Delete removed the model from the engine's store
    DELETE_REFUSED = "DeleteRefused"
    RUNNER_EVICTED = "RunnerEvicted"  # an idle runner of an older config was unloaded
    # A model's standing among the others.
    READY = "Ready"  # it became Ready (once, not on every pass)
    CONFLICT_RESOLVED = "ConflictResolved"  # no other LocalModel claims its model and mode any more
    # A model going away.
    REMOVED = "Removed"  # gone from the files for the grace period (the daemon)
    DELETION_APPLIED = "DeletionApplied"  # its deletionPolicy was applied
    DELETION_ABANDONED = "DeletionAbandoned"  # tries used up; the daemon says what to run by hand
    FINALIZER_RELEASED = "FinalizerReleased"  # the operator's DeletionAbandoned: the object goes, a clean-up is owed
    CLEANUPS_PENDING = "CleanupsPending"
    CLEANED_UP = "CleanedUp"
    CLEANUP_SUPERSEDED = "CleanupSuperseded"
    # The daemon's files and its saved status.
    FILE_ERROR = "FileError"
    FILE_FIXED = "FileFixed"
    WATCH_FAILED = "WatchFailed"  # the file watcher failed; restarted after a delay
    WATCH_RESTARTED = "WatchRestarted"
    STATE_INVALID = "StateInvalid"
    STATE_IGNORED = "StateIgnored"
    STATE_SAVED = "StateSaved"  # written again after failed writes
    STATE_UNSAVED = "StateUnsaved"
    # The operator's cluster.
    LEADER_ELECTED = "LeaderElected"
    LEADERSHIP_LOST = "LeadershipLost"
    AGGREGATOR_ELECTED = "AggregatorElected"
    PERMISSION_DENIED = "PermissionDenied"
    PERMISSION_GRANTED = "PermissionGranted"
    STATUS_WRITE_FORBIDDEN = "StatusWriteForbidden"
    API_SERVER_DOWN = "ApiServerDown"
    API_SERVER_UP = "ApiServerUp"
