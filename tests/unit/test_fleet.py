"""controller/fleet.py: the fleet logic the daemon and the operator share (pure, virtual time)."""

from __future__ import annotations

import logging

import pytest

from controller.backoff import BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, Retries, backoff_delay
from controller.fleet import Claims, Readiness, RepairCauses, conflict_status, event_level
from controller.spec import LocalModelSpec, validate_spec
from controller.status import Phase, Reason


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_drift_repaired_event_says_what_the_watch_noticed_and_how_long_the_config_was_gone() -> None:
    clock = Clock()
    causes = RepairCauses[str](clock)
    causes.noticed("m", "the engine restarted", at=100.0)
    clock.now = 102.25
    message = causes.explain("m", Reason.DRIFT_REPAIRED.value, "re-applied the config of ai/smollm2")
    assert message == "the engine restarted; config back after 2.2 s (re-applied the config of ai/smollm2)"
    assert "m" not in causes  # said once


def test_other_events_and_other_keys_leave_the_message_and_the_cause_alone() -> None:
    causes = RepairCauses[tuple[str, str]](Clock())
    causes.noticed(("gpu", "ns/m"), "overwritten by another client", at=100.0)
    assert causes.explain(("gpu", "ns/m"), "Preloaded", "loaded") == "loaded"
    assert causes.explain(("cpu", "ns/m"), Reason.DRIFT_REPAIRED.value, "re-applied") == "re-applied"
    assert ("gpu", "ns/m") in causes


def test_a_forgotten_cause_is_not_told() -> None:
    causes = RepairCauses[str](Clock())
    causes.noticed("m", "unloaded", at=100.0)
    causes.forget("m")
    causes.forget("never noticed")
    assert causes.explain("m", Reason.DRIFT_REPAIRED.value, "re-applied") == "re-applied"


@pytest.mark.parametrize(("kind", "level"), [("Warning", logging.WARNING), ("Normal", logging.INFO)])
def test_event_level(kind: str, level: int) -> None:
    assert event_level(kind) == level


def test_readiness_counts_ready_models_and_says_when_one_becomes_ready() -> None:
    ready = Readiness[str]()
    assert ready.update("a", True) is True  # became Ready: the daemon logs "ready" once
    assert ready.update("a", True) is False  # still Ready: no second line
    assert ready.update("b", False) is False
    assert len(ready) == 1
    assert ready.update("a", False) is False
    assert len(ready) == 0
    assert ready.update("a", True) is True  # Ready again after a failure: said again
    ready.forget("a")
    ready.forget("never seen")
    assert len(ready) == 0


def spec(model: str = "ai/smollm2", **fields: object) -> LocalModelSpec:
    return validate_spec({"model": model, **fields}, "test")


def test_the_first_claim_owns_a_model_and_mode_when_no_rank_is_given() -> None:
    claims = Claims()
    claims.claim("zeta", spec())
    claims.claim("alpha", spec())  # declared later, though its name sorts first
    claims.claim("embed", spec(mode="embedding"))
    assert claims.ordered() == ["zeta", "alpha", "embed"]
    assert list(claims.conflicts()) == ["alpha"]
    assert "zeta already declares model ai/smollm2 in mode completion" in claims.conflicts()["alpha"]
    claims.claim("zeta", spec())  # claimed again on the next pass: keeps its place
    assert list(claims.conflicts()) == ["alpha"]
    claims.release("zeta")
    assert claims.conflicts() == {}
    claims.claim("zeta", spec())  # back after a release: now the newest claim
    assert list(claims.conflicts()) == ["zeta"]


def test_a_rank_orders_claims_then_the_key_breaks_ties() -> None:
    claims = Claims()
    claims.claim("ns/b", spec(), rank="2026-01-02T00:00:00Z")
    claims.claim("ns/c", spec(), rank="2026-01-01T00:00:00Z")
    claims.claim("ns/a", spec(), rank="2026-01-01T00:00:00Z")
    assert claims.ordered() == ["ns/a", "ns/c", "ns/b"]
    assert sorted(claims.conflicts()) == ["ns/b", "ns/c"]
    assert "ns/c" in claims
    claims.release("ns/a")
    assert "ns/a" not in claims
    assert sorted(claims.conflicts()) == ["ns/b"]


def test_a_conflict_is_stalled_until_one_of_the_two_changes() -> None:
    status = conflict_status("local", "a already declares model ai/smollm2 in mode completion", 3)
    assert (status.phase, status.reason, status.stalled, status.ready) == (Phase.STALLED, Reason.CONFLICT, True, False)
    assert status.observed_generation == 3


@pytest.mark.parametrize("failures", range(0, 12))
@pytest.mark.parametrize("jitter", [0.0, 0.3, 0.999])
def test_jittered_retries_are_the_reconcile_backoff_until_given_up(failures: int, jitter: float) -> None:
    retries = Retries(BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, attempts=5, jittered=True)
    expected = None if failures >= 5 else backoff_delay(failures, jitter)
    assert retries.after(failures, jitter) == expected


@pytest.mark.parametrize(
    ("retries", "delays"),
    [
        (Retries(first=2.0, cap=30.0), [2.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]),  # never given up
        (Retries(first=1.5, attempts=3), [1.5, 1.5, 3.0, None, None, None, None]),  # no cap, no jitter
    ],
)
def test_retries_double_up_to_the_cap(retries: Retries, delays: list[float | None]) -> None:
    assert [retries.after(failures, jitter=0.0) for failures in range(7)] == delays
