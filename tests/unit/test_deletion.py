"""controller/deletion.py: one rule for trying a deletionPolicy again and giving up, shared by the daemon and
the operator (pure, virtual time: sleeps are recorded, never slept)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from controller.backoff import BACKOFF_CAP_SECONDS
from controller.deletion import DELETE_ATTEMPTS, deletion_retries, gave_up_message, next_step, retry_finalize


@dataclass
class Outcome:
    done: bool
    message: str


FAILED = Outcome(False, "unload failed: 500")
DONE = Outcome(True, "unloaded ai/smollm2")


class Tries:
    """A finalize that fails `failures` times, then succeeds; and a sleep that only records."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.slept: list[float] = []

    async def attempt(self) -> Outcome:
        self.calls += 1
        return FAILED if self.calls <= self.failures else DONE

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_a_try_that_is_done_is_done_whatever_failed_before() -> None:
    step = next_step(deletion_retries(), 3, DONE)
    assert (step.done, step.given_up, step.retry_in, step.failures, step.message) == (
        True,
        False,
        None,
        3,
        "unloaded ai/smollm2",
    )


def test_failed_tries_wait_twice_as_long_each_time_and_give_up_after_the_last_attempt() -> None:
    retries = deletion_retries()
    failures, delays = 0, []
    while True:
        step = next_step(retries, failures, FAILED)
        failures = step.failures
        if step.retry_in is None:
            break
        delays.append(step.retry_in)
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert step.given_up
    assert step.failures == DELETE_ATTEMPTS
    assert step.message == FAILED.message


def test_the_daemon_s_spread_keeps_each_delay_within_half_and_all_of_its_step() -> None:
    retries = deletion_retries(jittered=True)
    assert next_step(retries, 2, FAILED, jitter=0.0).retry_in == 2.0  # third try: step 4 s, spread to [2, 4)
    assert next_step(retries, 2, FAILED, jitter=0.5).retry_in == 3.0


def test_many_attempts_never_wait_longer_than_the_backoff_cap() -> None:
    retries = deletion_retries(first=1.0, attempts=20)
    step = next_step(retries, 18, FAILED)
    assert step.retry_in == BACKOFF_CAP_SECONDS  # not 2**18 s (three days)
    assert next_step(retries, 19, FAILED).given_up


@pytest.mark.parametrize("attempts", [0, -3])
def test_at_least_one_try_is_made(attempts: int) -> None:
    step = next_step(deletion_retries(attempts=attempts), 0, FAILED)
    assert step.given_up
    assert step.failures == 1


async def test_retry_finalize_tries_until_done_sleeping_by_the_rule() -> None:
    tries = Tries(failures=2)
    step = await retry_finalize(tries.attempt, deletion_retries(), tries.sleep)
    assert step.done
    assert step.failures == 2
    assert tries.calls == 3
    assert tries.slept == [1.0, 2.0]


async def test_retry_finalize_gives_up_after_the_attempts_without_a_last_sleep() -> None:
    tries = Tries(failures=100)
    step = await retry_finalize(tries.attempt, deletion_retries(first=0.5, attempts=3), tries.sleep)
    assert step.given_up
    assert step.failures == 3
    assert tries.calls == 3
    assert tries.slept == [0.5, 1.0]


async def test_retry_finalize_spreads_its_delays_with_the_jitter_it_is_given() -> None:
    tries = Tries(failures=2)
    await retry_finalize(tries.attempt, deletion_retries(jittered=True), tries.sleep, jitter=lambda: 0.0)
    assert tries.slept == [0.5, 1.0]


def test_both_front_ends_give_up_in_the_same_words() -> None:
    assert gave_up_message("Unload", 5, "unload failed: 500") == (
        "gave up applying deletionPolicy Unload after 5 failed attempts: unload failed: 500"
    )
    assert gave_up_message("Delete", 2, "timed out", engine="node-a") == (
        "gave up applying deletionPolicy Delete on engine node-a after 2 failed attempts: timed out"
    )
