"""error_policy: every engine error class to one phase, reason, message and retry delay (pure, table-driven)."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from controller.backoff import BACKOFF_CAP_SECONDS
from controller.engine import errors
from controller.engine.errors import EngineError
from controller.plan import Blocked, Observation
from controller.policy import (
    blocked_policy,
    error_policy,
    rechecked_each_pass,
    unobserved_policy,
    unreachable_status,
)
from controller.reconcile import EngineReconciler
from controller.spec import parse_localmodel
from controller.status import Phase, Reason

# (reason, retryable) of every error class; a new class must be added here with the reason it reports.
EXPECTED: dict[str, tuple[Reason, bool]] = {
    "EngineError": (Reason.ENGINE_ERROR, False),
    "EngineUnreachable": (Reason.ENGINE_UNREACHABLE, True),
    "RunnerBusy": (Reason.RUNNER_BUSY, True),
    "EngineRejected": (Reason.FLAG_REJECTED, False),
    "LoadFailed": (Reason.LOAD_FAILED, True),
    "NotFound": (Reason.MODEL_NOT_FOUND, False),
    "ModelNotInRegistry": (Reason.MODEL_NOT_FOUND, False),
    "BadRequest": (Reason.ENGINE_ERROR, False),
    "PullFailed": (Reason.PULL_FAILED, True),
    "ServerError": (Reason.ENGINE_ERROR, True),
    "PullRejected": (Reason.PULL_FAILED, False),
    "DeleteConflict": (Reason.ENGINE_ERROR, False),
    "BackendNotInstalled": (Reason.ENGINE_ERROR, False),
    "EngineTooSlow": (Reason.ENGINE_ERROR, True),
    "AnswerTooLarge": (Reason.ENGINE_ERROR, True),
    "RequestTooLarge": (Reason.ENGINE_ERROR, False),
    "VerifyFailed": (Reason.VERIFY_FAILED, True),
    "BackendOverridden": (Reason.BACKEND_MISMATCH, False),
}

ERROR_CLASSES = {
    name: cls
    for name, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, EngineError) and cls.__module__ == errors.__name__
}


def test_every_error_class_is_in_the_table() -> None:
    assert sorted(ERROR_CLASSES) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(ERROR_CLASSES))
def test_every_error_class_declares_its_own_reason_member(name: str) -> None:
    """Declared on the class itself, not inherited by accident from the class it extends."""
    cls = ERROR_CLASSES[name]
    assert isinstance(cls.__dict__.get("reason"), Reason)
    assert isinstance(cls.__dict__.get("retryable"), bool)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_error_policy_per_class(name: str) -> None:
    reason, retryable = EXPECTED[name]
    decision = error_policy(ERROR_CLASSES[name]("the engine's text", status=500, url="http://engine"), attempt=1)
    assert decision.reason is reason
    if retryable:
        assert decision.phase is Phase.RETRYING
        assert decision.retry_after is not None
        assert decision.retry_after > 0
    else:
        assert decision.phase is Phase.STALLED
        assert decision.retry_after is None
        assert decision.stalled


def test_the_message_names_the_fix_for_a_rejected_config_and_a_busy_runner() -> None:
    rejected = error_policy(errors.EngineRejected("flag --foo not allowed"))
    assert rejected.message == (
        "the engine rejected the config: flag --foo not allowed (fix the spec; the engine's allowlist decides)"
    )
    busy = error_policy(errors.RunnerBusy("runner already active"))
    assert busy.message == (
        "the runner is busy serving a request (runner already active); the config is applied once it is idle"
    )
    other = error_policy(errors.ServerError("boom", status=503, url="http://engine"))
    assert other.message == "boom (503 from http://engine)"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            errors.ModelNotInRegistry("Model not found", status=404, url="http://e/models/create", model="nonexistent"),
            "model ai/nonexistent:latest was not found in its registry (the engine answered 404 to the pull): "
            "check spec.model's name and tag",
        ),
        (
            errors.ModelNotInRegistry(
                "manifest unknown", status=404, model="ai/x:7B", field="spec.speculative.draftModel"
            ),
            "model ai/x:7B was not found in its registry (the engine answered 404 to the pull: manifest unknown): "
            "check spec.speculative.draftModel's name and tag",
        ),
        (
            errors.ModelNotInRegistry(
                "error while pulling model: 401 Unauthorized (insufficient_scope)", status=500, model="ai/private"
            ),
            "model ai/private:latest was not found in its registry, or the registry wants credentials (the engine "
            "answered 500 to the pull: error while pulling model: 401 Unauthorized (insufficient_scope)): check "
            "spec.model's name and tag, and the engine's credentials for that registry (docker login)",
        ),
    ],
)
def test_a_model_the_registry_does_not_have_is_named_with_the_field_to_fix(
    error: errors.EngineError, message: str
) -> None:
    """Helm 4's `--wait` prints the Stalled message as it is: it used to be `Model not found (404 from URL)`."""
    decision = error_policy(error)
    assert (decision.phase, decision.reason, decision.message) == (Phase.STALLED, Reason.MODEL_NOT_FOUND, message)


@pytest.mark.parametrize(
    ("attempt", "jitter", "delay"),
    [(1, 0.0, 0.5), (1, 0.999999, 0.9999995), (2, 0.0, 1.0), (4, 0.0, 4.0), (30, 0.0, BACKOFF_CAP_SECONDS / 2)],
)
def test_retry_delay_is_the_capped_backoff_of_the_attempt(attempt: int, jitter: float, delay: float) -> None:
    decision = error_policy(errors.EngineUnreachable("refused"), attempt=attempt, jitter=jitter)
    assert decision.retry_after == pytest.approx(delay)


SPEC = {"model": "ai/smollm2", "contextSize": 8192}

# An engine that cannot be observed: the operator reports it through EngineReconciler.reconcile, the
# daemon and `apply` through policy.unreachable_status. Both must say the same, whatever the error.
OBSERVE_ERRORS = [
    errors.EngineUnreachable("cannot reach the engine at http://e: refused", url="http://e"),
    errors.ServerError("bad gateway", status=502, url="http://e/models"),
    errors.NotFound("404 page not found", status=404, url="http://e/models"),  # a wrong path prefix
    errors.BadRequest("invalid request", status=400, url="http://e/models"),
    errors.EngineTooSlow("no answer within 30s", url="http://e/models"),
    errors.RequestTooLarge("too large", status=413, url="http://e/models"),
]


@pytest.mark.parametrize("error", OBSERVE_ERRORS, ids=lambda e: type(e).__name__)
def test_an_unobservable_engine_is_reported_alike_by_every_front_end(error: errors.EngineError) -> None:
    model = parse_localmodel(
        {"apiVersion": "localmodel.io/v1alpha1", "kind": "LocalModel", "metadata": {"name": "m"}, "spec": SPEC}
    )
    reconciler = EngineReconciler("e", None, jitter=lambda: 0.5)  # type: ignore[arg-type]  # no request is sent
    outcome = asyncio.run(reconciler.reconcile("m", model, Observation("e", error=error)))
    daemon = unreachable_status("e", error)
    assert outcome.status.reason is daemon.reason
    assert outcome.status.phase is Phase.RETRYING
    assert outcome.requeue_after is not None
    assert outcome.status.message.startswith(daemon.message.removesuffix("; retrying"))


def test_the_reason_of_an_unobservable_engine_says_whether_it_answered() -> None:
    refused = unobserved_policy(errors.EngineUnreachable("refused"))
    assert (refused.reason, refused.message) == (Reason.ENGINE_UNREACHABLE, "the engine is unreachable (refused)")
    wrong = unobserved_policy(errors.NotFound("404 page not found"))
    assert wrong.reason is Reason.ENGINE_ERROR
    assert wrong.message == "the engine answered, but not as an engine should: 404 page not found"
    assert wrong.retry_after is not None


@pytest.mark.parametrize(
    ("blocked", "phase", "retried"),
    [
        (Blocked(Reason.RUNNER_STALE, "busy; evicted once idle", retryable=True), Phase.RETRYING, True),
        (Blocked(Reason.MODEL_NOT_PRESENT, "pull it or set pullPolicy: IfNotPresent"), Phase.STALLED, False),
        (Blocked(Reason.ENGINE_UNSUPPORTED, "upgrade the engine"), Phase.STALLED, False),
    ],
)
def test_a_blocked_plan_is_retried_only_when_it_clears_by_itself(blocked: Blocked, phase: Phase, retried: bool) -> None:
    decision = blocked_policy(blocked, attempt=3, jitter=0.0)
    assert (decision.phase, decision.reason, decision.message) == (phase, blocked.reason, blocked.message)
    assert decision.retry_after == (2.0 if retried else None)


@pytest.mark.parametrize("reason", list(Reason))
def test_only_stalls_the_next_observation_can_clear_are_planned_again_each_pass(reason: Reason) -> None:
    assert rechecked_each_pass(reason) is (reason in (Reason.MODEL_NOT_PRESENT, Reason.ENGINE_UNSUPPORTED))
