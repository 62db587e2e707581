"""The emulated engine as one object: the release it emulates, its clock, and its three parts wired together.

The parts each hold one concern and follow docker/model-runner v1.2.9 (the pinned peer;
docs/engine-contract.md says what was checked on it):
- `store` (store.py): pulled models, tags and the registry (the distribution client);
- `configs` (configs.py): the stored `_configure` configs and their validation;
- `runners` (runners.py): the loader's runners, eviction, `/engines/ps` and `/engines/requests`.
They depend on each other in that order only. Engine failures are raised as the shared
`controller.engine.errors` types with the HTTP status and the engine's exact text, so the HTTP layer
(app.py) only renders them.

What is left here is what spans the parts or belongs to none: the emulated release's features, the
clock, a configure (validated by the config table, applied by the loader), a restart, background
work, and the knobs the control API (control.py) turns (`latency`, `pending_conflicts`, `counters`).

Time is `clock() + offset`: `advance(seconds)` moves the emulator's clock (and evicts idle runners)
so tests never sleep for a keep-alive. Runner loads take `load_seconds` of real time.

Everything here runs on one event loop; nothing is locked.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from controller.emulator.catalog import Catalog
from controller.emulator.configs import ConfigStore
from controller.emulator.runners import RunnerPool
from controller.emulator.store import ModelStore
from controller.engine import capabilities as caps
from controller.engine.errors import RunnerBusy

# `localmodel emulator --engine-version`: the model-runner release each short name emulates.
EMULATED_RELEASES = {"1.2": "v1.2.9", "1.0": "v1.0.10"}
DEFAULT_ENGINE_VERSION = "1.2"


class EmulatorState:
    """The engine's memory. `clock` returns seconds since the epoch; `advance` adds to it."""

    def __init__(
        self,
        *,
        catalog: Catalog | None = None,
        preload_models: Iterable[str] = (),
        load_seconds: float = 0.05,
        pull_seconds: float = 0.0,
        allowed_origins: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        release: str = EMULATED_RELEASES[DEFAULT_ENGINE_VERSION],
    ) -> None:
        self.engine_release = release  # the model-runner release emulated (controller/engine/capabilities.py)
        self.features = caps.features_of(release)
        self.allowed_origins = _origins(allowed_origins)
        self._clock = clock
        self._offset = 0.0
        self.store = ModelStore(catalog, pull_seconds=pull_seconds)
        self.configs = ConfigStore(self.store, self.features)
        self.runners = RunnerPool(self.store, self.configs, self.features, self.now, load_seconds=load_seconds)
        self.boot_id = uuid.uuid4().hex
        self.counters: dict[str, int] = {}  # requests per route, for tests and benchmarks
        self.pending_conflicts = 0  # the next configures that answer 409 whatever the runners do
        self.latency = 0.0  # seconds every engine request waits
        self._tasks: set[asyncio.Task[None]] = set()
        self.store.preload(preload_models)

    # --- the emulated release and its clock --------------------------------------------------

    def has(self, feature: str) -> bool:
        """Whether the emulated release has `feature` (a name of controller.engine.capabilities.FEATURES)."""
        return feature in self.features

    def now(self) -> float:
        return self._clock() + self._offset

    def advance(self, seconds: float) -> int:
        """Move the clock forward and evict runners whose keep-alive ran out. Returns how many went."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._offset += seconds
        return self.runners.evict_idle()

    # --- what spans the parts ------------------------------------------------------------------

    def configure(self, path_backend: str | None, body: bytes) -> tuple[str, str]:
        """POST /engines[/{backend}]/_configure. Returns (backend used, model as sent) for the preload."""
        request = self.configs.validate(path_backend, body)
        if self.pending_conflicts > 0:
            self.pending_conflicts -= 1
            raise RunnerBusy("runner already active", status=409)
        self.runners.set_config(request.backend, request.model_id, request.mode, request.config)
        return request.backend, request.model_ref

    def config_entries(self, model: str | None = None) -> list[dict[str, Any]]:
        """GET /engines/_configure[?model=] (ConfigStore.entries)."""
        return self.configs.entries(model)

    def resolve_id(self, ref: str) -> str:
        """ResolveID: the store ID when the model is local, otherwise the reference as sent."""
        return self.store.resolve_id(ref)

    def restart(self) -> None:
        """What an engine restart loses: stored configs, runners, recorded requests. Models stay on disk."""
        self.configs.clear()
        self.runners.clear()
        self.boot_id = uuid.uuid4().hex

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background coroutine (the post-configure preload), keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait until background work (post-configure preloads) has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def count(self, route: str) -> None:
        self.counters[route] = self.counters.get(route, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """GET /_emulator/state: everything, including configs the engine itself would not list."""
        return {
            "boot_id": self.boot_id,
            "now": self.now(),
            "models": [m.to_json() for m in self.store.models.values()],
            "configs": self.configs.to_json(),
            "runners": [r.to_json() for r in self.runners.by_key.values()],
            "counters": dict(self.counters),
            "pending_conflicts": self.pending_conflicts,
            "latency": self.latency,
            "pull_failure_armed": self.store.pull_failure is not None,
        }


def _origins(extra: Iterable[str]) -> frozenset[str]:
    """envconfig.AllowedOrigins: the listed ones plus localhost/127.0.0.1/0.0.0.0 on http and https.
    The engine compares exactly, so its `host:*` entries only match the literal string."""
    defaults = [
        f"{scheme}://{host}{port}"
        for host in ("localhost", "127.0.0.1", "0.0.0.0")
        for scheme in ("http", "https")
        for port in ("", ":*")
    ]
    return frozenset([o.strip() for o in extra if o.strip()] + defaults)
