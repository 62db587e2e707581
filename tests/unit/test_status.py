"""Conditions as kstatus reads them: Ready summary, Reconciling while working, Stalled on permanent errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.status import (
    FALSE,
    TRUE,
    Condition,
    EngineStatus,
    ModelStatus,
    Phase,
    PullProgressInfo,
    Reason,
    condition_map,
    set_condition,
    summarize,
)

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)


def engine(name="n1", ready=False, stalled=False, reason=Reason.PENDING, message="m"):
    phase = Phase.READY if ready else Phase.STALLED if stalled else Phase.RETRYING
    return EngineStatus(engine=name, phase=phase, reason=reason, message=message, ready=ready, stalled=stalled)


def statuses(conditions):
    return {c.type: c.status for c in conditions}


@pytest.mark.parametrize(
    ("engines", "expected"),
    [
        ([engine(ready=True, reason=Reason.APPLIED)], {"Ready": TRUE, "Reconciling": FALSE, "Stalled": FALSE}),
        ([engine(reason=Reason.PULLING)], {"Ready": FALSE, "Reconciling": TRUE, "Stalled": FALSE}),
        ([engine(stalled=True, reason=Reason.FLAG_REJECTED)], {"Ready": FALSE, "Reconciling": FALSE, "Stalled": TRUE}),
        (
            [engine(ready=True), engine("n2", reason=Reason.RUNNER_BUSY)],
            {"Ready": FALSE, "Reconciling": TRUE, "Stalled": FALSE},
        ),
        (
            [engine(stalled=True), engine("n2", reason=Reason.RUNNER_BUSY)],
            {"Ready": FALSE, "Reconciling": TRUE, "Stalled": TRUE},
        ),
        ([], {"Ready": FALSE, "Reconciling": FALSE, "Stalled": TRUE}),
    ],
)
def test_summary_table(engines, expected):
    conditions = summarize(engines, 3, [], T0)
    assert statuses(conditions) == expected
    assert [c.type for c in conditions] == ["Ready", "Reconciling", "Stalled"]
    assert all(c.observed_generation == 3 for c in conditions)


def test_ready_false_reason_comes_from_the_failing_engine():
    conditions = condition_map(
        summarize(
            [engine(ready=True), engine("n2", stalled=True, reason=Reason.FLAG_REJECTED, message="flag --foo")],
            1,
            [],
            T0,
        )
    )
    assert conditions["Ready"].reason == "FlagRejected"
    assert conditions["Ready"].message == "engine n2: flag --foo"


def test_last_transition_time_moves_only_on_flip():
    first = summarize([engine(reason=Reason.PULLING)], 1, [], T0)
    same = summarize([engine(reason=Reason.CONFIGURING, message="other")], 2, first, T1)
    assert condition_map(same)["Ready"].last_transition_time == T0
    assert condition_map(same)["Ready"].reason == "Configuring"
    flipped = summarize([engine(ready=True, reason=Reason.APPLIED)], 2, same, T1)
    assert condition_map(flipped)["Ready"].last_transition_time == T1
    assert condition_map(flipped)["Stalled"].last_transition_time == T0


def test_set_condition_keeps_unrelated_conditions():
    other = Condition("Custom", TRUE, "X", "y", 1, T0)
    out = set_condition([other], Condition("Ready", TRUE, "Applied", "ok", 1), T1)
    assert out[0] == other
    assert out[1].last_transition_time == T1


def test_condition_round_trips_through_kubernetes_shape():
    c = Condition("Ready", TRUE, "Applied", "ok", 4, T0)
    data = c.to_k8s()
    assert data == {
        "type": "Ready",
        "status": "True",
        "reason": "Applied",
        "message": "ok",
        "observedGeneration": 4,
        "lastTransitionTime": "2026-11-28T12:00:00Z",
    }
    assert Condition.from_k8s(data) == c


def test_engine_detail_is_camel_case_and_omits_absent_values():
    status = EngineStatus(
        engine="n1",
        phase=Phase.PULLING,
        reason=Reason.PULLING,
        message="pulling",
        pull=PullProgressInfo(50, 200),
        notes=("vllm options not sent",),
    )
    assert status.to_dict() == {
        "name": "n1",
        "phase": "Pulling",
        "ready": False,
        "reason": "Pulling",
        "message": "pulling",
        "loaded": False,
        "notes": ["vllm options not sent"],
        "pullProgress": {"completedBytes": 50, "totalBytes": 200, "percent": 25},
    }


def test_model_status_reads_its_conditions():
    conditions = tuple(summarize([engine(ready=True)], 1, [], T0))
    status = ModelStatus("m", "ai/smollm2", 1, conditions, (engine(ready=True),))
    assert status.ready
    assert not status.stalled
    assert status.to_dict()["conditions"][0]["type"] == "Ready"
