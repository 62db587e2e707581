"""Applying a LocalModel's deletionPolicy, tried again and given up on by one rule, for both front-ends (pure).

The daemon (controller/standalone/deletions.py) and the operator (controller/operator/runtime.py) each run
`reconciler.finalize` for a LocalModel that went away. What follows a try is the same for both and decided
here: done, try again after the `Retries` delay, or give up after `attempts` failed tries, with the message
that says so. What each does then is its own: the daemon schedules the next try in its pass loop and, on
giving up, logs the commands to clean up by hand; the operator sleeps in its delete handler (`retry_finalize`)
and, on giving up, releases the finalizer and records a clean-up owed to the engine.

The one rule: exponential from `first` seconds (1 s), doubling up to BACKOFF_CAP_SECONDS, 5 tries. The daemon
spreads its delays (many files removed at once fail at once); the operator's are its configured
--finalize-backoff and --finalize-attempts, unspread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from controller.backoff import BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, Retries

DELETE_ATTEMPTS = 5  # tries of a deletionPolicy before giving up


def deletion_retries(
    first: float = BACKOFF_BASE_SECONDS, attempts: int = DELETE_ATTEMPTS, *, jittered: bool = False
) -> Retries:
    """How a deletionPolicy is tried again: from `first` seconds, doubling up to BACKOFF_CAP_SECONDS (a
    long run of tries never waits hours), given up after `attempts` failed tries (at least one try)."""
    return Retries(first, BACKOFF_CAP_SECONDS, attempts=max(1, attempts), jittered=jittered)


class Outcome(Protocol):
    """One try (controller.reconcile.FinalizeOutcome)."""

    @property
    def done(self) -> bool: ...

    @property
    def message(self) -> str: ...


@dataclass(frozen=True)
class Step:
    """What follows one try at applying a deletionPolicy."""

    done: bool
    failures: int  # failed tries so far, this one included
    retry_in: float | None  # seconds before the next try; None when done or given up
    message: str  # the try's outcome

    @property
    def given_up(self) -> bool:
        return not self.done and self.retry_in is None


def next_step(retries: Retries, failures: int, outcome: Outcome, jitter: float = 1.0) -> Step:
    """After a try whose result is `outcome`, `failures` failed tries before it: done, or the delay before
    the next try, or give up. `jitter` is a number in [0, 1) (used when `retries` is jittered)."""
    if outcome.done:
        return Step(True, failures, None, outcome.message)
    failures += 1
    return Step(False, failures, retries.after(failures, jitter), outcome.message)


def gave_up_message(policy: str, failures: int, error: str, engine: str | None = None) -> str:
    """The words both front-ends use when they stop trying a deletionPolicy."""
    where = f" on engine {engine}" if engine else ""
    return f"gave up applying deletionPolicy {policy}{where} after {failures} failed attempts: {error}"


async def retry_finalize(
    attempt: Callable[[], Awaitable[Outcome]],
    retries: Retries,
    sleep: Callable[[float], Awaitable[object]],
    jitter: Callable[[], float] = lambda: 1.0,
) -> Step:
    """Try `attempt` until it is done or `retries` gives up, sleeping (`sleep`, injected) between tries;
    returns the last step (done, or given_up)."""
    failures = 0
    while True:
        step = next_step(retries, failures, await attempt(), jitter())
        if step.retry_in is None:
            return step
        failures = step.failures
        await sleep(step.retry_in)
