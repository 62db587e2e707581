"""The adapter to Docker Model Runner: an async HTTP client, semantic config comparison, endpoint discovery.

`EngineClient` is imported lazily: the pure core imports `controller.engine.types` and `compare`, and
importing this package must not pull httpx into it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controller.engine.compare import config_differences, effective_flags, effective_mode, find_stored_config
from controller.engine.discovery import discover_endpoint, parse_endpoint
from controller.engine.errors import (
    AnswerTooLarge,
    BackendNotInstalled,
    BadRequest,
    DeleteConflict,
    EngineError,
    EngineRejected,
    EngineTooSlow,
    EngineUnreachable,
    LoadFailed,
    NotFound,
    PullFailed,
    PullRejected,
    RequestTooLarge,
    RunnerBusy,
    ServerError,
)
from controller.engine.types import (
    Endpoint,
    LiveRunnerConfig,
    ModelInfo,
    PullProgress,
    PullResult,
    RunnerInfo,
    StoredConfig,
)

if TYPE_CHECKING:
    from controller.engine.client import EngineClient


def __getattr__(name: str) -> Any:
    if name == "EngineClient":
        from controller.engine.client import EngineClient

        return EngineClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AnswerTooLarge",
    "BackendNotInstalled",
    "BadRequest",
    "DeleteConflict",
    "Endpoint",
    "EngineClient",
    "EngineError",
    "EngineRejected",
    "EngineTooSlow",
    "EngineUnreachable",
    "LiveRunnerConfig",
    "LoadFailed",
    "ModelInfo",
    "NotFound",
    "PullFailed",
    "PullProgress",
    "PullRejected",
    "PullResult",
    "RequestTooLarge",
    "RunnerBusy",
    "RunnerInfo",
    "ServerError",
    "StoredConfig",
    "config_differences",
    "discover_endpoint",
    "effective_flags",
    "effective_mode",
    "find_stored_config",
    "parse_endpoint",
]
