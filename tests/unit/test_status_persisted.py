"""A restarted process keeps what only the previous one knew, as the persisted status recorded it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.operator.statuses import compose_status
from controller.status import EngineStatus, Phase, Reason, inherit_persisted

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = datetime(2026, 1, 2, 4, 0, 0, tzinfo=UTC)


def ready(reason: Reason = Reason.APPLIED, applied: datetime | None = None, generation: int = 1) -> EngineStatus:
    return EngineStatus(
        "emu",
        Phase.READY,
        reason,
        "m on llama.cpp: config verified",
        ready=True,
        last_applied_time=applied,
        observed_generation=generation,
    )


@pytest.mark.parametrize(
    ("fresh", "persisted", "expected"),
    [
        # a new process that did not apply: the persisted time and drift-repair reason stay
        (ready(), ready(Reason.DRIFT_REPAIRED, T0).to_dict(), ready(Reason.DRIFT_REPAIRED, T0)),
        (ready(), ready(Reason.APPLIED, T0).to_dict(), ready(Reason.APPLIED, T0)),
        # it applied itself: its own time and reason win
        (ready(Reason.APPLIED, T1), ready(Reason.DRIFT_REPAIRED, T0).to_dict(), ready(Reason.APPLIED, T1)),
        # a newer generation keeps the time (the engine holds that config since) but not the old reason
        (ready(generation=2), ready(Reason.DRIFT_REPAIRED, T0).to_dict(), ready(Reason.APPLIED, T0, generation=2)),
        # nothing persisted, or another engine's entry
        (ready(), None, ready()),
        (ready(), {**ready(Reason.APPLIED, T0).to_dict(), "name": "other"}, ready()),
        (ready(), {**ready().to_dict(), "lastAppliedTime": "not a time"}, ready()),
    ],
)
def test_inherit_persisted(fresh: EngineStatus, persisted: dict | None, expected: EngineStatus) -> None:
    assert inherit_persisted(fresh, persisted) == expected


def test_a_restart_composes_the_status_the_object_already_holds() -> None:
    before = compose_status(
        None,
        [ready(Reason.DRIFT_REPAIRED, T0)],
        generation=1,
        expected=["emu"],
        now=T0,
    )
    after_restart = compose_status(
        before.status,
        [ready()],
        generation=1,
        expected=["emu"],
        now=T1,
    )
    assert not after_restart.changed
    assert after_restart.status == before.status
