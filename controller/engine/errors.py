"""Typed engine errors. Each says whether retrying the same request can help.

Each class carries the `Reason` its failures are reported with (conditions and events alike);
controller/policy.py `error_policy` turns `retryable` into policy: retry with backoff (Reconciling) or
stop until the spec changes (Stalled). The engine answers validation errors with 500 and a plain-text body, busy
runners with 409 (docs/engine-contract.md §3.2, §8.8); those texts are kept verbatim in `message`.
"""

from __future__ import annotations

from controller.redact import redact
from controller.refs import canonical_ref
from controller.status import Reason


class EngineError(Exception):
    """Base class. `status` is the HTTP status when there was a response, `message` the engine's text."""

    retryable: bool = False
    reason: Reason = Reason.ENGINE_ERROR

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
    reason = Reason.ENGINE_UNREACHABLE


class RunnerBusy(EngineError):
    """409 `runner already active`: a request is in flight on the runner; its stored config is unchanged."""

    retryable = True
    reason = Reason.RUNNER_BUSY


class EngineRejected(EngineError):
    """500 with the engine's text on `_configure`: a runtime flag not allowed, a bad hf_overrides key...
    Sending the same request again gives the same answer."""

    retryable = False
    reason = Reason.FLAG_REJECTED


class LoadFailed(EngineError):
    """The runner could not start (500 `unable to load runner: ...` on preload/inference).
    Sometimes transient (a crash, a slow start), sometimes not (bad arguments): retried with backoff."""

    retryable = True
    reason = Reason.LOAD_FAILED


class NotFound(EngineError):
    """404: a model that is not in the store or the registry, or a backend the engine does not know."""

    retryable = False
    reason = Reason.MODEL_NOT_FOUND


class ModelNotInRegistry(NotFound):
    """A pull that the registry refused for want of the model: 404 `Model not found`, or the refusal the engine
    relays as a 500 (Docker Hub answers 401 `insufficient_scope` for a repository it does not have,
    docs/engine-contract.md §6.3). `message` is the engine's text; str() is what every front-end reports:
    the model, what the engine answered, and the field to fix (`field`: the spec field that names `model`)."""

    retryable = False
    reason = Reason.MODEL_NOT_FOUND
    _GENERIC = frozenset({"", "model not found", "not found"})  # the engine's text adds nothing to the sentence

    def __init__(
        self, message: str, *, status: int | None = None, url: str | None = None, model: str = "", field: str = ""
    ) -> None:
        super().__init__(message, status=status, url=url)
        self.model = model
        self.field = field or "spec.model"

    def __str__(self) -> str:
        model = canonical_ref(self.model) if self.model else "the model"
        said = "" if self.message.strip().lower() in self._GENERIC else f": {self.message.strip()}"
        answered = f"the engine answered {self.status} to the pull{said}" if self.status else self.message
        if self.status == 404:
            return f"model {model} was not found in its registry ({answered}): check {self.field}'s name and tag"
        return (
            f"model {model} was not found in its registry, or the registry wants credentials ({answered}): check "
            f"{self.field}'s name and tag, and the engine's credentials for that registry (docker login)"
        )


class BadRequest(EngineError):
    """400 `invalid request`: the engine could not decode the JSON (a bug on our side or a bad value)."""

    retryable = False
    reason = Reason.ENGINE_ERROR


class PullFailed(EngineError):
    """A pull that failed before or during the stream (a stream without a `success` line is a failure)."""

    retryable = True
    reason = Reason.PULL_FAILED


class ServerError(EngineError):
    """Any other 5xx (503 while the engine starts or shuts down, 412 backend not installed...)."""

    retryable = True
    reason = Reason.ENGINE_ERROR


class PullRejected(PullFailed):
    """A pull refused before streaming for a reason a retry cannot fix: 401 (credentials), 422 (unsupported
    media type). The spec (model reference or token) has to change."""

    retryable = False
    reason = Reason.PULL_FAILED


class DeleteConflict(EngineError):
    """409 on `DELETE /models/{name}`: the model has several tags. Delete one tag, or delete with force."""

    retryable = False
    reason = Reason.ENGINE_ERROR


class BackendNotInstalled(ServerError):
    """The backend is not installed in this engine and cannot be: 412 on inference/preload, or 503
    `backend installation failed: ...` (MLX on Linux, SGLang without its package)."""

    retryable = False
    reason = Reason.ENGINE_ERROR


class EngineTooSlow(EngineError):
    """The engine answered, but did not finish within the request's deadline (a trickle, a hung proxy).
    Not "unreachable": it is there and answering badly. Retried with backoff."""

    retryable = True
    reason = Reason.ENGINE_ERROR


class AnswerTooLarge(ServerError):
    """An answer larger than the request's limit (an endless body, a newline-less stream): not a DMR answer."""

    retryable = True
    reason = Reason.ENGINE_ERROR


class RequestTooLarge(EngineError):
    """413: the engine, or a proxy in front of it, refuses the request's size. The same request gets the
    same answer: not retried."""

    retryable = False
    reason = Reason.ENGINE_ERROR


class VerifyFailed(EngineError):
    """The engine accepted a config but does not read it back as sent (docs/engine-contract.md §4.1, §4.2)."""

    retryable = True
    reason = Reason.VERIFY_FAILED


class BackendOverridden(EngineError):
    """The engine stored the config under another backend: it re-selects the backend from the model's
    format (docs/engine-contract.md §3.3 step 6). Sending it again would store it there again."""

    retryable = False
    reason = Reason.BACKEND_MISMATCH
