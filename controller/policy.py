"""Errors are policy: what an engine error means for a model, decided in one place (pure).

The executor (controller/reconcile.py) catches `EngineError`s and asks `error_policy` what to report and
when to come back, as kube-rs pairs `reconcile` with `error_policy`. Each error class carries its
`Reason` (controller/engine/errors.py); whether it is worth retrying is `retryable`. Conditions,
`/status` and the events of every front-end use the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from controller.backoff import backoff_delay
from controller.engine.errors import EngineError, EngineRejected, EngineUnreachable, RunnerBusy
from controller.plan import Blocked
from controller.status import EngineStatus, Phase, Reason


@dataclass(frozen=True)
class Decision:
    """What a failed reconcile reports and does next."""

    phase: Phase  # Retrying (Reconciling) or Stalled
    reason: Reason
    message: str  # says what went wrong and what to do
    retry_after: float | None  # seconds until the next try; None: stalled until the spec changes

    @property
    def stalled(self) -> bool:
        return self.retry_after is None


def error_policy(exc: EngineError, *, attempt: int = 1, jitter: float = 0.5) -> Decision:
    """The decision for `exc`, the `attempt`-th failure in a row (1 for the first); `jitter` in [0, 1)
    spreads the retries of many models (controller.backoff.backoff_delay)."""
    message = error_message(exc)
    if exc.retryable:
        return Decision(Phase.RETRYING, exc.reason, message, backoff_delay(attempt, jitter))
    return Decision(Phase.STALLED, exc.reason, message, None)


def unobserved_policy(exc: EngineError, *, attempt: int = 1, jitter: float = 0.5) -> Decision:
    """The decision for a model whose engine could not be observed (GET /models, /engines/_configure or
    /engines/ps failed): always retried, EngineUnreachable when there was no answer, EngineError when it
    answered wrongly (HTML, a redirect, a 404 from a wrong path, bad JSON, too slow, too large). The class's
    own reason is about the model (a 404 on a pull is ModelNotFound), so it is not used here."""
    text = str(exc)
    if isinstance(exc, EngineUnreachable):
        reason, message = Reason.ENGINE_UNREACHABLE, f"the engine is unreachable ({text})"
    else:
        reason, message = Reason.ENGINE_ERROR, f"the engine answered, but not as an engine should: {text}"
    return Decision(Phase.RETRYING, reason, message, backoff_delay(attempt, jitter))


def blocked_policy(blocked: Blocked, *, attempt: int = 1, jitter: float = 0.5) -> Decision:
    """The decision for a plan that cannot go on (controller.plan.Blocked): a block that clears by itself
    (a busy runner becomes idle) is retried with backoff, the others are Stalled."""
    if blocked.retryable:
        return Decision(Phase.RETRYING, blocked.reason, blocked.message, backoff_delay(attempt, jitter))
    return Decision(Phase.STALLED, blocked.reason, blocked.message, None)


# Stalled reasons that the next observation can clear without a spec change (someone pulls the
# model by hand for pullPolicy Never), or whose model still has fields to keep applied (EngineUnsupported:
# the other fields are repaired after a restart): re-planned on every pass, which costs no request.
_RECHECKED_EACH_PASS = frozenset({Reason.MODEL_NOT_PRESENT, Reason.ENGINE_UNSUPPORTED})


def rechecked_each_pass(reason: Reason) -> bool:
    """Whether a model Stalled for `reason` is planned again on every pass; the others wait for a spec change."""
    return reason in _RECHECKED_EACH_PASS


def unreachable_status(
    engine: str, error: EngineError | str, previous: EngineStatus | None = None, generation: int | None = None
) -> EngineStatus:
    """A model's status while the engine cannot be observed: Retrying, EngineUnreachable when there was no
    answer, EngineError when it answered wrongly (HTML, a redirect, a 500, bad JSON, too slow, too large):
    the message says which. What the previous status knew (backend, model ID, applied config) stays; a
    pull in progress does not."""
    base = previous or EngineStatus(engine, Phase.PENDING, Reason.PENDING, "")
    decision = unobserved_policy(error if isinstance(error, EngineError) else EngineUnreachable(error))
    return replace(
        base,
        phase=decision.phase,
        reason=decision.reason,
        ready=False,
        stalled=False,
        message=f"{decision.message}; retrying",
        last_error=str(error),
        pull=None,
        observed_generation=generation if generation is not None else base.observed_generation,
    )


def error_message(exc: EngineError) -> str:
    """The error as a model's status says it: the engine's text, and the fix where there is one to name."""
    if isinstance(exc, EngineRejected):
        return f"the engine rejected the config: {exc.message} (fix the spec; the engine's allowlist decides)"
    if isinstance(exc, RunnerBusy):
        return f"the runner is busy serving a request ({exc.message}); the config is applied once it is idle"
    return str(exc)
