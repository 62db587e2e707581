"""How anything that failed is tried again: one backoff rule (pure).

A model's reconcile retries with `backoff_delay` (through controller/policy.py); the front-ends' chores
(a deletion, a clean-up owed after one, a refused status write) each have their own `Retries`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 300.0


@dataclass(frozen=True)
class Retries:
    """Exponential backoff from `first` seconds, doubling up to `cap`, spread over [50%, 100%] of the step
    when `jittered`; given up after `attempts` failures (None: never)."""

    first: float
    cap: float = math.inf
    attempts: int | None = None
    jittered: bool = False

    def after(self, failures: int, jitter: float = 1.0) -> float | None:
        """Seconds before the next try after `failures` failures in a row (1 for the first), or None to give
        up; `jitter` is a number in [0, 1) (used when `jittered`)."""
        if self.attempts is not None and failures >= self.attempts:
            return None
        step = min(self.cap, self.first * 2 ** max(0, failures - 1))
        return step * (0.5 + jitter / 2) if self.jittered else step


RECONCILE_RETRIES = Retries(BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, jittered=True)


def backoff_delay(attempt: int, jitter: float) -> float:
    """A model's reconcile: capped exponential backoff with jitter in [50%, 100%] of the step, never given up.

    `attempt` counts failures in a row (1 for the first); `jitter` is a number in [0, 1)."""
    delay = RECONCILE_RETRIES.after(attempt, jitter)
    assert delay is not None  # RECONCILE_RETRIES has no attempt limit
    return delay
