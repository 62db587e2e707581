"""Typed engine errors. Each says whether retrying the same request can help.

The reconciler turns `retryable` into policy: retry with backoff (Reconciling) or stop until the
spec changes (Stalled). The engine answers validation errors with 500 and a plain-text body, busy
runners with 409 (docs/engine-contract.md §3.2, §8.8); those texts are kept verbatim in `message`.
"""

from __future__ import annotations

from controller.redact import redact


class EngineError(Exception):
    """Base class. `status` is the HTTP status when there was a response, `message` the engine's text."""

    retryable: bool = False
    reason: str = "EngineError"

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None) -> None:
        # Credentials never reach a message: the engine URL may have carried them (controller.redact).
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.status = status
        self.url = redact(url) if url is not None else None

    def __str__(self) -> str:
        where = f" ({self.status} from {self.url})" if self.status and self.url else ""
        return f"{self.message}{where}"


class EngineUnreachable(EngineError):
    """No HTTP answer: connection refused, DNS, timeout. The engine may be restarting."""

    retryable = True
    reason = "EngineUnreachable"


class RunnerBusy(EngineError):
    """409 `runner already active`: a request is in flight on the runner; its stored config is unchanged."""

    retryable = True
    reason = "RunnerBusy"


class EngineRejected(EngineError):
    """500 with the engine's text on `_configure`: a runtime flag not allowed, a bad hf_overrides key...
    Sending the same request again gives the same answer."""

    retryable = False
    reason = "EngineRejected"


class LoadFailed(EngineError):
    """The runner could not start (500 `unable to load runner: ...` on preload/inference).
    Sometimes transient (a crash, a slow start), sometimes not (bad arguments): retried with backoff."""

    retryable = True
    reason = "LoadFailed"


class NotFound(EngineError):
    """404: a model that is not in the store or the registry, or a backend the engine does not know."""

    retryable = False
    reason = "NotFound"


class BadRequest(EngineError):
    """400 `invalid request`: the engine could not decode the JSON (a bug on our side or a bad value)."""

    retryable = False
    reason = "BadRequest"


class PullFailed(EngineError):
    """A pull that failed before or during the stream (a stream without a `success` line is a failure)."""

    retryable = True
    reason = "PullFailed"


class ServerError(EngineError):
    """Any other 5xx (503 while the engine starts or shuts down, 412 backend not installed...)."""

    retryable = True
    reason = "EngineError"


class PullRejected(PullFailed):
    """A pull refused before streaming for a reason a retry cannot fix: 401 (credentials), 422 (unsupported
    media type). The spec (model reference or token) has to change."""

    retryable = False
    reason = "PullRejected"


class DeleteConflict(EngineError):
    """409 on `DELETE /models/{name}`: the model has several tags. Delete one tag, or delete with force."""

    retryable = False
    reason = "DeleteConflict"


class BackendNotInstalled(ServerError):
    """The backend is not installed in this engine and cannot be: 412 on inference/preload, or 503
    `backend installation failed: ...` (MLX on Linux, SGLang without its package)."""

    retryable = False
    reason = "BackendNotInstalled"


class EngineTooSlow(EngineError):
    """The engine answered, but did not finish within the request's deadline (a trickle, a hung proxy).
    Not "unreachable": it is there and answering badly. Retried with backoff."""

    retryable = True
    reason = "EngineError"


class AnswerTooLarge(ServerError):
    """An answer larger than the request's limit (an endless body, a newline-less stream): not a DMR answer."""


class RequestTooLarge(EngineError):
    """413: the engine, or a proxy in front of it, refuses the request's size. The same request gets the
    same answer: not retried."""

    retryable = False
    reason = "EngineError"
