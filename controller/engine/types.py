"""What the engine reports, as plain values. Parsed from the wire by the client; used by plan/status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    """One entry of `GET /models`."""

    id: str  # sha256:...
    tags: tuple[str, ...]
    format: str | None  # gguf | safetensors | dduf | diffusers
    context_size: int | None  # packaged context size, when the bundle has one
    size: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class StoredConfig:
    """One entry of `GET /engines/_configure`: the config the next load of (backend, model, mode) will use."""

    backend: str
    model: str  # first tag, "" if untagged
    model_id: str  # sha256:... (or the raw ref for a config stored before the pull)
    mode: str
    config: dict[str, Any]  # BackendConfiguration keys, as normalised by the engine


@dataclass(frozen=True)
class RunnerInfo:
    """One entry of `GET /engines/ps`."""

    backend: str
    model: str  # the reference as the client sent it
    mode: str
    in_use: bool
    loading: bool
    keep_alive: str | None
    last_used: str | None


@dataclass(frozen=True)
class PullProgress:
    """One NDJSON line of a pull stream."""

    type: str  # progress | success | warning | error
    message: str
    total: int | None = None
    current: int | None = None  # bytes of the current layer
    layer: str | None = None


@dataclass(frozen=True)
class PullResult:
    message: str  # the success line ("Model pulled successfully" or "Using cached model: ...")
    cached: bool


@dataclass(frozen=True)
class Endpoint:
    """Where an engine answers. `prefix` is Docker Desktop's `/exp/vDD4.40` on the engine socket."""

    url: str  # never holds credentials: they are split off into `auth` when the URL is parsed
    prefix: str = ""
    uds: str | None = None  # Unix socket path, for Docker Desktop's engine socket
    source: str = "explicit"  # explicit | MODEL_RUNNER_HOST | docker model status | default
    auth: tuple[str, str] | None = field(default=None, repr=False, compare=False)  # basic auth (user, password)

    @property
    def shown(self) -> str:
        """The endpoint as messages name it: the socket for a Unix socket, else the URL."""
        return f"unix://{self.uds}" if self.uds else self.url


@dataclass(frozen=True)
class LiveRunnerConfig:
    """One entry of `GET /engines/requests` that has a live runner: the config that runner was started with.
    It can differ from the stored config (a runner that was loading or busy during a configure)."""

    model_id: str  # sha256:... as the engine reports it
    config: dict[str, Any]
