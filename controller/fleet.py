"""Fleet logic that the daemon (controller/standalone/daemon.py) and the operator
(controller/operator/runtime.py) share: what concerns many LocalModels on an engine rather than one
reconcile, and is the same whichever front-end holds the models. Pure: the caller brings the clock.

So far: the engine watch's repair causes and the events they explain (event-to-log mapping), and
readiness accounting (which models are Ready, for the models_ready gauge and the "ready" log line).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from controller.status import Reason

K = TypeVar("K", bound=Hashable)  # a model's key: its name (daemon), or (engine, namespace/name) (operator)


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
