"""The emulated engine's runners: the loader's bookkeeping and what `/engines/ps` and `/engines/requests` show.

It follows model-runner v1.2.9's `loader.load`/`release`/`evict`/`Unload` and `setRunnerConfig`: a
runner per (backend, model ID, draft model ID, mode), loading for `load_seconds` before it is
registered for reuse, in use while a request (or the control API's mark) holds it, evicted when idle
past its keep-alive, when `unload` asks, when a slot is needed or when its config changes (a busy
one makes the configure answer 409). The recorded requests (`/engines/requests`) belong here because
they live and die with the runner of their model.

It reads the model store (store.py) and the config table (configs.py); neither reads it. Time comes
from the `now` it is given (the emulator's clock, which tests move forward).
Everything runs on one event loop; nothing is locked. Waiters wake on `_notify`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller import wire
from controller.durations import SECOND
from controller.emulator.config import KEEP_ALIVE_FOREVER, BackendConfig, render_keep_alive
from controller.emulator.configs import ConfigStore
from controller.emulator.store import ModelStore, StoredModel
from controller.engine import capabilities as caps
from controller.engine.errors import BadRequest, EngineError, LoadFailed, NotFound, RunnerBusy, ServerError

RUNNER_SLOTS = 8  # min(NumCPU, 8) on the engine; fixed here so behaviour does not depend on the machine
PRELOAD_TIMEOUT = 60  # seconds a background load after a configure may wait for a slot
INSTALLED_BACKENDS = (wire.LLAMA_CPP, wire.VLLM_BACKEND)
BACKEND_STATUS = {
    wire.LLAMA_CPP: "Running: llama.cpp emulated",
    wire.VLLM_BACKEND: "Running: vllm emulated",
    wire.MLX: "Not Installed: only supported on Apple Silicon",
    wire.SGLANG: "Not Installed: package not installed",
    wire.DIFFUSERS: "Not Installed",
}
# Why the backends that are not installed fail to install on demand, as the engine on Linux answers
# (503 `backend installation failed: ...` from installer.wait; v1.2.6's 412 is never sent:
# docs/engine-contract.md §6.5).
INSTALL_FAILURES = {
    wire.MLX: "MLX is only available on macOS ARM64",
    wire.SGLANG: "sglang package not installed",
    wire.DIFFUSERS: "failed to install diffusers: the emulator does not download backends",
}

RunnerKey = tuple[str, str, str, str]  # (backend, model ID, draft model ID, mode)


@dataclass(eq=False)
class Runner:
    """A (backend, model, draft, mode) runner. While `loading` it is not yet registered for reuse."""

    backend: str
    model_id: str
    model_ref: str  # as the client sent it (GET /engines/ps shows this)
    mode: str
    draft_id: str
    config: BackendConfig  # the config it started with (GET /engines/requests shows this)
    loading: bool = True
    requests: int = 0  # requests in flight
    held: bool = False  # marked busy through the control API
    last_used: float | None = None  # None while in use or loading (ps shows the zero time)
    stuck: bool = False  # a loading runner that finishes only when the control API says so

    @property
    def key(self) -> RunnerKey:
        return (self.backend, self.model_id, self.draft_id, self.mode)

    @property
    def in_use(self) -> bool:
        return self.requests > 0 or self.held

    def to_json(self) -> dict[str, Any]:
        """The runner as the control API shows it."""
        return {
            "backend": self.backend,
            "model_id": self.model_id,
            "model_ref": self.model_ref,
            "mode": self.mode,
            "draft_id": self.draft_id,
            "loading": self.loading,
            "in_use": self.in_use,
            "requests": self.requests,
            "held": self.held,
            "last_used": self.last_used,
            "config": self.config.to_json(),
        }


@dataclass
class RequestsEntry:
    """GET /engines/requests for one model ID: the live runner's start config and the recorded requests."""

    config: BackendConfig
    records: list[dict[str, Any]] = field(default_factory=list)


class RunnerPool:
    """The loader: runners by key, the requests view by model ID, and the waits for a change."""

    def __init__(
        self,
        store: ModelStore,
        configs: ConfigStore,
        features: Collection[str],
        now: Callable[[], float],
        *,
        load_seconds: float = 0.05,
    ) -> None:
        self._store = store
        self._configs = configs
        self._features = features
        self._now = now
        self.load_seconds = load_seconds
        self.by_key: dict[RunnerKey, Runner] = {}
        self.requests: dict[str, RequestsEntry] = {}
        self._changed: asyncio.Event | None = None

    # --- configs -------------------------------------------------------------------------------

    def set_config(self, backend: str, model_id: str, mode: str, config: BackendConfig) -> None:
        """setRunnerConfig: equal config -> no-op; an idle runner is evicted; a busy one -> 409."""
        if self._configs.get(model_id, backend, mode) == config:
            return
        key = (backend, model_id, self._configs.draft_id(config), mode)
        if self._ready(key) is not None:
            self._evict_matching(backend, model_id, mode)
        if self._ready(key) is not None:
            raise RunnerBusy("runner already active", status=409)
        self._configs.put(model_id, backend, mode, config)

    # --- views ---------------------------------------------------------------------------------

    def running(self) -> list[dict[str, Any]]:
        """GET /engines/ps: registered runners, then loading ones (BackendStatus, omitempty)."""
        entries = []
        for runner in self.by_key.values():
            if runner.loading:
                continue
            entry: dict[str, Any] = {
                wire.PS_BACKEND: runner.backend,
                wire.PS_MODEL: runner.model_ref,
                wire.PS_MODE: runner.mode,
                wire.PS_LAST_USED: go_time(None if runner.in_use else runner.last_used),
            }
            if runner.in_use:
                entry[wire.PS_IN_USE] = True
            config = self._configs.get(runner.model_id, runner.backend, runner.mode)
            if config is not None and config.keep_alive_ns is not None:
                entry[wire.PS_KEEP_ALIVE] = render_keep_alive(config.keep_alive_ns)
            entries.append(entry)
        for runner in self.by_key.values():
            if runner.loading and caps.LOADING_STATE in self._features:  # older releases list a runner once ready
                entries.append(
                    {
                        wire.PS_BACKEND: runner.backend,
                        wire.PS_MODEL: runner.model_ref,
                        wire.PS_MODE: runner.mode,
                        wire.PS_LAST_USED: go_time(None),
                        wire.PS_LOADING: True,
                    }
                )
        return entries

    def requests_view(self, model: str | None = None) -> list[dict[str, Any]]:
        """GET /engines/requests[?model=]: per model ID, the live runner's start config and its records."""
        if model:
            model_id = self._store.resolve_id(model)
            entry = self.requests.get(model_id)
            items = [(model_id, entry)] if entry is not None else []
        else:
            items = list(self.requests.items())
        return [
            {
                wire.REQUESTS_COUNT: len(e.records),
                wire.REQUESTS_MODEL: model_id,
                wire.REQUESTS_CONFIG: e.config.to_json(),
                wire.REQUESTS_RECORDS: list(e.records),
            }
            for model_id, e in items
        ]

    def record(self, runner: Runner, record: dict[str, Any]) -> None:
        entry = self.requests.get(runner.model_id)
        if entry is not None:
            entry.records.append(record)

    # --- registration and eviction -------------------------------------------------------------

    def _ready(self, key: RunnerKey) -> Runner | None:
        runner = self.by_key.get(key)
        return runner if runner is not None and not runner.loading else None

    def _ready_count(self) -> int:
        return sum(1 for r in self.by_key.values() if not r.loading)

    def _terminate(self, runner: Runner) -> None:
        if self.by_key.get(runner.key) is runner:
            del self.by_key[runner.key]
        self.requests.pop(runner.model_id, None)  # RemoveModel: the config view goes with the runner
        self._notify()

    def _start(self, runner: Runner) -> None:
        self.by_key[runner.key] = runner
        entry = self.requests.setdefault(runner.model_id, RequestsEntry(runner.config))
        entry.config = runner.config  # SetConfigForModel at runner start
        self._notify()

    def _evict_matching(self, backend: str, model_id: str, mode: str) -> None:
        """evictRunner: idle runners of (backend or any when empty, model ID, mode), whatever their draft."""
        for runner in list(self.by_key.values()):
            if (
                not runner.loading
                and not runner.in_use
                and (not backend or runner.backend == backend)
                and runner.model_id == model_id
                and runner.mode == mode
            ):
                self._terminate(runner)

    def evict_idle(self) -> int:
        """Idle eviction: unused runners whose keep-alive has run out (`-1` never, `0` at once)."""
        now = self._now()
        evicted = 0
        for runner in list(self.by_key.values()):
            if runner.loading or runner.in_use or runner.last_used is None:
                continue
            keep_alive = self._configs.keep_alive_ns(runner.model_id, runner.backend, runner.mode)
            if keep_alive == KEEP_ALIVE_FOREVER:
                continue
            if (now - runner.last_used) * SECOND >= keep_alive:
                self._terminate(runner)
                evicted += 1
        return evicted

    def _evict_unused(self) -> int:
        """evict(false): every unused runner, keep-alive ignored."""
        idle = [r for r in self.by_key.values() if not r.loading and not r.in_use]
        for runner in idle:
            self._terminate(runner)
        return len(idle)

    def unload(self, all_: bool, backend: str, models: list[str]) -> int:
        """POST /engines/unload: idle runners only. `all` also drops every stored config; `models` with a
        backend drops that backend's configs of those models."""
        before = self._ready_count()
        if all_:
            self._configs.clear()
            self._evict_unused()
        else:
            for ref in models:
                model_id = self._store.resolve_id(ref)
                self._configs.drop(model_id, backend)
                for mode in wire.MODES:
                    self._evict_matching(backend, model_id, mode)
        return before - self._ready_count()

    def clear(self) -> None:
        """An engine restart: no runner and no recorded request survives it."""
        self.by_key.clear()
        self.requests.clear()
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_change(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()

    # --- loading and serving -------------------------------------------------------------------

    async def acquire(self, path_backend: str | None, model_ref: str, mode: str) -> Runner:
        """Find or start the runner for an inference request (handleOpenAIInference + loader.load).
        The caller must `release` it."""
        backend = path_backend or wire.DEFAULT_BACKEND
        if backend not in wire.BACKENDS:
            raise NotFound("backend not found", status=404)
        model = self._store.local_model(model_ref)
        backend = model.backend_for(backend)
        if backend not in INSTALLED_BACKENDS:
            raise ServerError(f"backend installation failed: {INSTALL_FAILURES[backend]}", status=503)
        config, draft_id = self._configs.for_load(backend, model.id, mode)
        key = (backend, model.id, draft_id, mode)
        while True:
            runner = self.by_key.get(key)
            if runner is not None and runner.loading:
                await self._wait_change()
                continue
            if runner is not None:
                runner.requests += 1
                runner.last_used = None
                return runner
            if len(self.by_key) >= RUNNER_SLOTS and not self._evict_unused():
                await self._wait_change()
                continue
            return await self._load(Runner(backend, model.id, model_ref, mode, draft_id, config))

    async def _load(self, runner: Runner) -> Runner:
        self._start(runner)
        await asyncio.sleep(self.load_seconds)
        if self.by_key.get(runner.key) is not runner:
            raise LoadFailed("unable to load runner: backend loading disabled", status=500)
        problem = self._start_problem(runner)
        if problem:
            self._terminate(runner)
            raise LoadFailed(f"unable to load runner: error waiting for runner to be ready: {problem}", status=500)
        runner.loading = False
        runner.requests = 1
        self._notify()
        return runner

    def _start_problem(self, runner: Runner) -> str | None:
        """Why the backend process would exit at start (llamacpp.go / vllm.go Run, *_config.go GetArgs)."""
        config = runner.config
        if config.draft_model and self._store.lookup(config.draft_model) is None:
            return "failed to get draft model: error while getting model bundle: find model content: model not found"
        prefix = (
            "failed to get vLLM arguments"
            if runner.backend == wire.VLLM_BACKEND
            else "failed to get args for llama.cpp"
        )
        if runner.mode == wire.IMAGE_GENERATION:
            return f'{prefix}: unsupported backend mode "{runner.mode}"'
        if runner.backend == wire.VLLM_BACKEND and config.vllm and config.vllm.gpu_memory_utilization is not None:
            value = config.vllm.gpu_memory_utilization
            if not 0.0 <= value <= 1.0:
                return f"{prefix}: gpu-memory-utilization must be between 0.0 and 1.0, got {value:f}"
        return None

    def release(self, runner: Runner) -> None:
        runner.requests = max(0, runner.requests - 1)
        self._mark_used(runner)

    def _mark_used(self, runner: Runner) -> None:
        """A runner nothing holds any more starts its keep-alive now (and goes at once with `0`)."""
        if not runner.in_use:
            runner.last_used = self._now()
            self.evict_idle()
        self._notify()

    async def preload(self, backend: str, model_ref: str) -> None:
        """The background preload after a 202: a completion-mode load; failures are only logged (dropped)."""
        try:
            runner = await asyncio.wait_for(self.acquire(backend, model_ref, wire.COMPLETION), timeout=PRELOAD_TIMEOUT)
        except (TimeoutError, NotFound, LoadFailed, ServerError):
            return
        self.release(runner)

    # --- what the control API provokes ---------------------------------------------------------

    def _control_target(self, ref: str, backend: str | None, mode: str | None) -> tuple[StoredModel, str, str]:
        model = self._store.local_model(ref)
        chosen = model.backend_for(backend or wire.DEFAULT_BACKEND)
        if chosen not in wire.BACKENDS:
            raise NotFound("backend not found", status=404)
        chosen_mode = mode or wire.COMPLETION
        if chosen_mode not in wire.MODES:
            raise BadRequest(f"mode must be one of {', '.join(wire.MODES)}", status=400)
        return model, chosen, chosen_mode

    def set_busy(self, ref: str, busy: bool, backend: str | None = None, mode: str | None = None) -> Runner | None:
        """Mark the runner of (backend, model, mode) in use (starting it, ready, if absent) or release the mark."""
        model, backend, mode = self._control_target(ref, backend, mode)
        runner = next(
            (
                r
                for r in self.by_key.values()
                if not r.loading and r.backend == backend and r.model_id == model.id and r.mode == mode
            ),
            None,
        )
        if runner is None and busy:
            config, draft_id = self._configs.for_load(backend, model.id, mode)
            runner = Runner(backend, model.id, ref, mode, draft_id, config, loading=False)
            self._start(runner)
        if runner is None:
            return None
        runner.held = busy
        if busy:
            runner.last_used = None
            self._notify()
        else:
            self._mark_used(runner)
        return runner

    def set_loading(
        self, ref: str, loading: bool, backend: str | None = None, mode: str | None = None
    ) -> Runner | None:
        """Start a runner that stays loading (with the config stored now) until called with loading=False."""
        model, backend, mode = self._control_target(ref, backend, mode)
        config, draft_id = self._configs.for_load(backend, model.id, mode)
        existing = next(
            (
                r
                for r in self.by_key.values()
                if r.loading and r.stuck and r.backend == backend and r.model_id == model.id and r.mode == mode
            ),
            None,
        )
        if loading:
            if existing is not None:
                return existing
            key = (backend, model.id, draft_id, mode)
            if key in self.by_key:
                raise EngineError("a runner for this model, backend and mode already exists", status=409)
            runner = Runner(backend, model.id, ref, mode, draft_id, config, stuck=True)
            self._start(runner)
            return runner
        if existing is None:
            return None
        existing.loading = False
        existing.stuck = False
        existing.last_used = self._now()
        self._notify()
        return existing


def go_time(epoch: float | None) -> str:
    """A time.Time as Go's JSON encoder writes it (RFC 3339, UTC here); None is Go's zero time."""
    if epoch is None:
        return wire.GO_ZERO_TIME
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"
