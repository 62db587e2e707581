"""The emulated engine's state machine: model store, stored configs, runners, requests view, clock.

It follows docker/model-runner v1.2.9 (the pinned peer; docs/engine-contract.md says what was checked on it): the
configure path of `Scheduler.ConfigureRunner`/`loader.setRunnerConfig`, the runner bookkeeping of
`loader.load`/`release`/`evict`/`Unload`, and the store lookups of the distribution client.
Engine failures are raised as the shared `controller.engine.errors` types with the HTTP status and
the engine's exact text, so the HTTP layer only renders them.

Time is `clock() + offset`: `advance(seconds)` moves the emulator's clock (and evicts idle runners)
so tests never sleep for a keep-alive. Runner loads take `load_seconds` of real time.

Everything here runs on one event loop; nothing is locked.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from controller import wire
from controller.durations import SECOND
from controller.emulator.catalog import CREATED, Artifact, Catalog
from controller.emulator.config import (
    KEEP_ALIVE_FOREVER,
    BackendConfig,
    DecodeError,
    decode_configure,
    render_keep_alive,
)
from controller.emulator.flags import (
    FlagError,
    split_raw_flags,
    validate_flag_paths,
    validate_hf_overrides,
    validate_runtime_flags,
)
from controller.engine import capabilities as caps
from controller.engine.errors import (
    BadRequest,
    EngineError,
    EngineRejected,
    LoadFailed,
    NotFound,
    RunnerBusy,
    ServerError,
)
from controller.refs import canonical_ref

# `localmodel emulator --engine-version`: the model-runner release each short name emulates.
EMULATED_RELEASES = {"1.2": "v1.2.9", "1.0": "v1.0.10"}
DEFAULT_ENGINE_VERSION = "1.2"
RUNNER_SLOTS = 8  # min(NumCPU, 8) on the engine; fixed here so behaviour does not depend on the machine
DEFAULT_KEEP_ALIVE_NS = 5 * 60 * SECOND
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
BACKEND_DISK_USAGE = 52_428_800

_HEX_ID = re.compile(r"^(?:sha256:)?([0-9a-f]{12}|[0-9a-f]{64})$")
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(rf"^(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?$")

ConfigKey = tuple[str, str]  # (backend, mode) within one model ID
RunnerKey = tuple[str, str, str, str]  # (backend, model ID, draft model ID, mode)


@dataclass
class StoredModel:
    """A model in the local store: one artifact under one or more tags."""

    id: str
    tags: list[str]
    artifact: Artifact

    def to_json(self) -> dict[str, Any]:
        """One entry of GET /models (Model: tags omitempty)."""
        out: dict[str, Any] = {wire.MODEL_ID: self.id}
        if self.tags:
            out[wire.MODEL_TAGS] = list(self.tags)
        out[wire.MODEL_CREATED] = CREATED
        out[wire.MODEL_CONFIG] = self.artifact.config_json()
        return out


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


@dataclass
class RequestsEntry:
    """GET /engines/requests for one model ID: the live runner's start config and the recorded requests."""

    config: BackendConfig
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PullFailure:
    after_bytes: int | None
    message: str


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
        self.catalog = catalog or Catalog()
        self.load_seconds = load_seconds
        self.pull_seconds = pull_seconds
        self.allowed_origins = _origins(allowed_origins)
        self._clock = clock
        self._offset = 0.0
        self.models: dict[str, StoredModel] = {}  # by ID, in pull order
        self._tags: dict[str, str] = {}  # canonical_ref(tag) -> ID (as DMR compares tags)
        self._short_ids: dict[str, str] = {}  # first 12 hex digits -> ID
        self.configs: dict[str, dict[ConfigKey, BackendConfig]] = {}  # model ID (or raw ref) -> configs
        self.runners: dict[RunnerKey, Runner] = {}
        self.requests: dict[str, RequestsEntry] = {}
        self.boot_id = uuid.uuid4().hex
        self.counters: dict[str, int] = {}
        self.pending_conflicts = 0
        self.latency = 0.0
        self.pull_failure: PullFailure | None = None
        self.pull_slots = asyncio.Semaphore(2)
        self._changed: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        for ref in preload_models:
            found = self.catalog.lookup(ref)
            if found is None:
                raise ValueError(
                    f"cannot preload {ref!r}: not in the catalog (known: {', '.join(self.catalog.refs())})"
                )
            self.add_model(*found)

    # --- clock -------------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock() + self._offset

    def has(self, feature: str) -> bool:
        """Whether the emulated release has `feature` (a name of controller.engine.capabilities.FEATURES)."""
        return feature in self.features

    def advance(self, seconds: float) -> int:
        """Move the clock forward and evict runners whose keep-alive ran out. Returns how many went."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._offset += seconds
        return self.evict_idle()

    # --- model store -------------------------------------------------------------------------

    def add_model(self, artifact: Artifact, tag: str) -> tuple[StoredModel, bool]:
        """Store an artifact under a tag. Returns the model and whether it was already stored."""
        model = self.models.get(artifact.digest)
        cached = model is not None
        if model is None:
            model = StoredModel(artifact.digest, [], artifact)
            self.models[model.id] = model
            self._short_ids[model.id.removeprefix("sha256:")[:12]] = model.id
        previous = self._tags.get(canonical_ref(tag))
        if previous is not None and previous != model.id:
            self._untag(self.models[previous], tag)
        if previous != model.id:
            model.tags.append(tag)
            self._tags[canonical_ref(tag)] = model.id
        return model, cached

    def lookup(self, ref: str) -> StoredModel | None:
        """The distribution client's GetModel: an ID (full, `sha256:`-prefixed or 12-digit), `name@digest`, or a tag."""
        ref = ref.strip()
        if not ref:
            return None
        lowered = ref.lower()
        match = _HEX_ID.match(lowered)
        if match:
            hexid = match.group(1)
            found = (
                self.models.get("sha256:" + hexid)
                if len(hexid) == 64
                else self.models.get(self._short_ids.get(hexid, ""))
            )
            if found is not None:
                return found
        if "@sha256:" in lowered:
            return self.models.get(lowered.split("@", 1)[1])
        model_id = self._tags.get(canonical_ref(ref))
        return self.models.get(model_id) if model_id else None

    def resolve_id(self, ref: str) -> str:
        """ResolveID: the store ID when the model is local, otherwise the reference as sent."""
        model = self.lookup(ref)
        return model.id if model else ref

    def find_by_short_name(self, name: str) -> StoredModel | None:
        """GET /models/{name} fallback: `smollm2` matches a tag whose last path element is `smollm2`."""
        for model in self.models.values():
            for tag in model.tags:
                repo = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag
                if repo.rsplit("/", 1)[-1] == name:
                    return model
        return None

    def delete_model(self, ref: str, force: bool) -> list[dict[str, str]]:
        """DeleteModel: untag a tag (deleting the model with its last tag); an ID with several tags needs force.
        Runners are not unloaded (as in the engine)."""
        model = self.lookup(ref)
        if model is None:
            raise NotFound("error while deleting model: model not found", status=404)
        is_tag = not _HEX_ID.match(ref.strip().lower()) and "@" not in ref
        actions: list[dict[str, str]] = []
        if is_tag:
            tag = next(t for t in model.tags if canonical_ref(t) == canonical_ref(ref))
            self._untag(model, tag)
            actions.append({"Untagged": tag})
            if model.tags:
                return actions
        elif len(model.tags) > 1 and not force:
            raise EngineError(
                f'error while deleting model: unable to delete "{ref}" (must be forced) due to multiple tag '
                "references: resource conflict",
                status=409,
            )
        for tag in list(model.tags):
            self._untag(model, tag)
            actions.append({"Untagged": tag})
        del self.models[model.id]
        self._short_ids.pop(model.id.removeprefix("sha256:")[:12], None)
        actions.append({"Deleted": model.id})
        return actions

    def _untag(self, model: StoredModel, tag: str) -> None:
        model.tags.remove(tag)
        self._tags.pop(canonical_ref(tag), None)

    def disk_usage(self) -> dict[str, int]:
        return {
            "models_disk_usage": sum(m.artifact.size_bytes for m in self.models.values()),
            "default_backend_disk_usage": BACKEND_DISK_USAGE,
        }

    def pull_target(self, ref: str) -> tuple[Artifact, str]:
        """What a pull of `ref` fetches, or the error the engine answers before streaming."""
        if not valid_reference(ref):
            raise BadRequest("Invalid model reference", status=400)
        found = self.catalog.lookup(ref)
        if found is None:
            raise NotFound("Model not found", status=404)
        return found

    # --- configure ---------------------------------------------------------------------------

    def configure(self, path_backend: str | None, body: bytes) -> tuple[str, str]:
        """POST /engines[/{backend}]/_configure. Returns (backend used, model as sent) for the preload."""
        backend = path_backend or wire.DEFAULT_BACKEND
        if backend not in wire.BACKENDS:
            raise NotFound("backend not found", status=404)
        try:
            request = decode_configure(
                body, keep_alive=self.has(caps.KEEP_ALIVE), image_generation=self.has(caps.IMAGE_GENERATION)
            )
        except DecodeError:
            raise BadRequest("invalid request", status=400) from None
        config = request.config
        flags = config.runtime_flags if config.runtime_flags else None
        try:
            if flags is None and request.raw_runtime_flags:
                flags = tuple(split_raw_flags(request.raw_runtime_flags))
            if self.has(caps.FLAG_ALLOWLIST):
                validate_runtime_flags(backend, flags or ())
            else:
                validate_flag_paths(flags or ())
            if config.vllm is not None and config.vllm.hf_overrides is not None:
                validate_hf_overrides(config.vllm.hf_overrides)
        except FlagError as exc:
            raise EngineRejected(str(exc), status=500) from None
        config = replace(config, runtime_flags=flags)
        mode = request.mode or (wire.EMBEDDING if flags and "--embeddings" in flags else wire.COMPLETION)
        model = self.lookup(request.model)
        if model is not None:
            backend = _backend_for_format(model.artifact.format, backend)
        model_id = model.id if model else request.model
        self._set_config(backend, model_id, mode, config)
        return backend, request.model

    def _set_config(self, backend: str, model_id: str, mode: str, config: BackendConfig) -> None:
        """setRunnerConfig: equal config -> no-op; an idle runner is evicted; a busy one -> 409."""
        if self.pending_conflicts > 0:
            self.pending_conflicts -= 1
            raise RunnerBusy("runner already active", status=409)
        stored = self.configs.get(model_id, {})
        if stored.get((backend, mode)) == config:
            return
        draft_id = self.resolve_id(config.draft_model) if config.draft_model else ""
        key = (backend, model_id, draft_id, mode)
        if self._ready(key) is not None:
            self._evict_matching(backend, model_id, mode)
        if self._ready(key) is not None:
            raise RunnerBusy("runner already active", status=409)
        self.configs.setdefault(model_id, {})[(backend, mode)] = config

    def config_entries(self, model: str | None = None) -> list[dict[str, Any]]:
        """GET /engines/_configure[?model=]: entries whose model ID is in the store (others are omitted).

        A config stored before the pull sits under the raw reference: it is omitted until the model is
        pulled, then listed with ModelID = that raw reference (GetLocal finds the model by it), and
        `?model=` never finds it because the filter compares with the resolved `sha256:` ID. This is
        what getAllRunnerConfigs does, and it reconciles docs/engine-contract.md §3.4 with §4.1
        ("entries whose model is no longer in the store are left out")."""
        if model:
            model_id = self.resolve_id(model)
            groups = [(model_id, self.configs.get(model_id, {}))]
        else:
            groups = list(self.configs.items())
        entries = []
        for model_id, configs in groups:
            stored = self.lookup(model_id) if configs else None
            if stored is None:
                continue
            for (backend, mode), config in configs.items():
                entries.append(
                    {
                        wire.ENTRY_BACKEND: backend,
                        wire.ENTRY_MODEL: stored.tags[0] if stored.tags else "",
                        wire.ENTRY_MODEL_ID: model_id,
                        wire.ENTRY_MODE: mode,
                        wire.ENTRY_CONFIG: config.to_json(),
                    }
                )
        random.shuffle(entries)  # Go map order: two listings need not agree (docs/engine-contract.md §4.1)
        return entries

    def _config_for_load(self, backend: str, model_id: str, mode: str) -> tuple[BackendConfig, str]:
        """The config a new runner starts with, and its draft model ID (loader.load)."""
        stored = self.configs.get(model_id, {})
        config = stored.get((backend, mode))
        if config is None and mode in (wire.RERANKING, wire.IMAGE_GENERATION):
            config = stored.get((backend, wire.COMPLETION))
        if config is None:
            model = self.lookup(model_id)
            packaged = model.artifact.context_size if model else None
            return BackendConfig(context_size=packaged if self.has(caps.PACKAGED_CONTEXT) else None), ""
        return config, self.resolve_id(config.draft_model) if config.draft_model else ""

    # --- runners -----------------------------------------------------------------------------

    def running(self) -> list[dict[str, Any]]:
        """GET /engines/ps: registered runners, then loading ones (BackendStatus, omitempty)."""
        entries = []
        for runner in self.runners.values():
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
            config = self.configs.get(runner.model_id, {}).get((runner.backend, runner.mode))
            if config is not None and config.keep_alive_ns is not None:
                entry[wire.PS_KEEP_ALIVE] = render_keep_alive(config.keep_alive_ns)
            entries.append(entry)
        for runner in self.runners.values():
            if runner.loading and self.has(caps.LOADING_STATE):  # older releases list a runner once ready
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
            model_id = self.resolve_id(model)
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

    def _ready(self, key: RunnerKey) -> Runner | None:
        runner = self.runners.get(key)
        return runner if runner is not None and not runner.loading else None

    def _ready_count(self) -> int:
        return sum(1 for r in self.runners.values() if not r.loading)

    def _terminate(self, runner: Runner) -> None:
        if self.runners.get(runner.key) is runner:
            del self.runners[runner.key]
        self.requests.pop(runner.model_id, None)  # RemoveModel: the config view goes with the runner
        self._notify()

    def _start(self, runner: Runner) -> None:
        self.runners[runner.key] = runner
        entry = self.requests.setdefault(runner.model_id, RequestsEntry(runner.config))
        entry.config = runner.config  # SetConfigForModel at runner start
        self._notify()

    def _evict_matching(self, backend: str, model_id: str, mode: str) -> None:
        """evictRunner: idle runners of (backend or any when empty, model ID, mode), whatever their draft."""
        for runner in list(self.runners.values()):
            if (
                not runner.loading
                and not runner.in_use
                and (not backend or runner.backend == backend)
                and runner.model_id == model_id
                and runner.mode == mode
            ):
                self._terminate(runner)

    def _keep_alive_ns(self, runner: Runner) -> int:
        config = self.configs.get(runner.model_id, {}).get((runner.backend, runner.mode))
        if config is not None and config.keep_alive_ns is not None:
            return config.keep_alive_ns
        return DEFAULT_KEEP_ALIVE_NS

    def evict_idle(self) -> int:
        """Idle eviction: unused runners whose keep-alive has run out (`-1` never, `0` at once)."""
        now = self.now()
        evicted = 0
        for runner in list(self.runners.values()):
            if runner.loading or runner.in_use or runner.last_used is None:
                continue
            keep_alive = self._keep_alive_ns(runner)
            if keep_alive == KEEP_ALIVE_FOREVER:
                continue
            if (now - runner.last_used) * SECOND >= keep_alive:
                self._terminate(runner)
                evicted += 1
        return evicted

    def _evict_unused(self) -> int:
        """evict(false): every unused runner, keep-alive ignored."""
        idle = [r for r in self.runners.values() if not r.loading and not r.in_use]
        for runner in idle:
            self._terminate(runner)
        return len(idle)

    def unload(self, all_: bool, backend: str, models: list[str]) -> int:
        """POST /engines/unload: idle runners only. `all` also drops every stored config; `models` with a
        backend drops that backend's configs of those models."""
        before = self._ready_count()
        if all_:
            self.configs.clear()
            self._evict_unused()
        else:
            for ref in models:
                model_id = self.resolve_id(ref)
                stored = self.configs.get(model_id)
                if stored:
                    for key in [k for k in stored if k[0] == backend]:
                        del stored[key]
                    if not stored:
                        del self.configs[model_id]
                for mode in wire.MODES:
                    self._evict_matching(backend, model_id, mode)
        return before - self._ready_count()

    def restart(self) -> None:
        """What an engine restart loses: stored configs, runners, recorded requests. Models stay on disk."""
        self.configs.clear()
        self.runners.clear()
        self.requests.clear()
        self.boot_id = uuid.uuid4().hex
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_change(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()

    def local_model(self, ref: str) -> StoredModel:
        model = self.lookup(ref)
        if model is None:
            raise NotFound(f"error while getting model: get model '\"{ref}\"': model not found", status=404)
        return model

    async def acquire(self, path_backend: str | None, model_ref: str, mode: str) -> Runner:
        """Find or start the runner for an inference request (handleOpenAIInference + loader.load).
        The caller must `release` it."""
        backend = path_backend or wire.DEFAULT_BACKEND
        if backend not in wire.BACKENDS:
            raise NotFound("backend not found", status=404)
        model = self.local_model(model_ref)
        backend = _backend_for_format(model.artifact.format, backend)
        if backend not in INSTALLED_BACKENDS:
            raise ServerError(f"backend installation failed: {INSTALL_FAILURES[backend]}", status=503)
        config, draft_id = self._config_for_load(backend, model.id, mode)
        key = (backend, model.id, draft_id, mode)
        while True:
            runner = self.runners.get(key)
            if runner is not None and runner.loading:
                await self._wait_change()
                continue
            if runner is not None:
                runner.requests += 1
                runner.last_used = None
                return runner
            if len(self.runners) >= RUNNER_SLOTS and not self._evict_unused():
                await self._wait_change()
                continue
            return await self._load(Runner(backend, model.id, model_ref, mode, draft_id, config))

    async def _load(self, runner: Runner) -> Runner:
        self._start(runner)
        await asyncio.sleep(self.load_seconds)
        if self.runners.get(runner.key) is not runner:
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
        if config.draft_model and self.lookup(config.draft_model) is None:
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
        if not runner.in_use:
            runner.last_used = self.now()
            self.evict_idle()
        self._notify()

    def record(self, runner: Runner, record: dict[str, Any]) -> None:
        entry = self.requests.get(runner.model_id)
        if entry is not None:
            entry.records.append(record)

    def spawn(self, coro: Any) -> None:
        """Run a background coroutine (the post-configure preload), keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait until background work (post-configure preloads) has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def preload(self, backend: str, model_ref: str) -> None:
        """The background preload after a 202: a completion-mode load; failures are only logged (dropped)."""
        try:
            runner = await asyncio.wait_for(self.acquire(backend, model_ref, wire.COMPLETION), timeout=60)
        except (TimeoutError, NotFound, LoadFailed, ServerError):
            return
        self.release(runner)

    # --- control API helpers -----------------------------------------------------------------

    def _control_target(self, ref: str, backend: str | None, mode: str | None) -> tuple[StoredModel, str, str]:
        model = self.local_model(ref)
        chosen = _backend_for_format(model.artifact.format, backend or wire.DEFAULT_BACKEND)
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
                for r in self.runners.values()
                if not r.loading and r.backend == backend and r.model_id == model.id and r.mode == mode
            ),
            None,
        )
        if runner is None and busy:
            config, draft_id = self._config_for_load(backend, model.id, mode)
            runner = Runner(backend, model.id, ref, mode, draft_id, config, loading=False)
            self._start(runner)
        if runner is None:
            return None
        runner.held = busy
        if busy:
            runner.last_used = None
        elif not runner.in_use:
            runner.last_used = self.now()
            self.evict_idle()
        self._notify()
        return runner

    def set_loading(
        self, ref: str, loading: bool, backend: str | None = None, mode: str | None = None
    ) -> Runner | None:
        """Start a runner that stays loading (with the config stored now) until called with loading=False."""
        model, backend, mode = self._control_target(ref, backend, mode)
        config, draft_id = self._config_for_load(backend, model.id, mode)
        existing = next(
            (
                r
                for r in self.runners.values()
                if r.loading and r.stuck and r.backend == backend and r.model_id == model.id and r.mode == mode
            ),
            None,
        )
        if loading:
            if existing is not None:
                return existing
            key = (backend, model.id, draft_id, mode)
            if key in self.runners:
                raise EngineError("a runner for this model, backend and mode already exists", status=409)
            runner = Runner(backend, model.id, ref, mode, draft_id, config, stuck=True)
            self._start(runner)
            return runner
        if existing is None:
            return None
        existing.loading = False
        existing.stuck = False
        existing.last_used = self.now()
        self._notify()
        return existing

    def count(self, route: str) -> None:
        self.counters[route] = self.counters.get(route, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """GET /_emulator/state: everything, including configs the engine itself would not list."""
        return {
            "boot_id": self.boot_id,
            "now": self.now(),
            "models": [m.to_json() for m in self.models.values()],
            "configs": [
                {"backend": backend, "model_id": model_id, "mode": mode, "config": config.to_json()}
                for model_id, configs in self.configs.items()
                for (backend, mode), config in configs.items()
            ],
            "runners": [
                {
                    "backend": r.backend,
                    "model_id": r.model_id,
                    "model_ref": r.model_ref,
                    "mode": r.mode,
                    "draft_id": r.draft_id,
                    "loading": r.loading,
                    "in_use": r.in_use,
                    "requests": r.requests,
                    "held": r.held,
                    "last_used": r.last_used,
                    "config": r.config.to_json(),
                }
                for r in self.runners.values()
            ],
            "counters": dict(self.counters),
            "pending_conflicts": self.pending_conflicts,
            "latency": self.latency,
            "pull_failure_armed": self.pull_failure is not None,
        }


def go_time(epoch: float | None) -> str:
    """A time.Time as Go's JSON encoder writes it (RFC 3339, UTC here); None is Go's zero time."""
    if epoch is None:
        return wire.GO_ZERO_TIME
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def valid_reference(ref: str) -> bool:
    """Whether a pull reference parses as an OCI reference after DMR's normalisation (ai/ and :latest added,
    name lowercased); `hf.co/...` and `huggingface.co/...` follow the same grammar."""
    ref = ref.strip()
    if not ref:
        return False
    name, tag = ref, ""
    if "@" not in ref:
        slash, colon = ref.rfind("/"), ref.rfind(":")
        if colon > slash:
            name, tag = ref[:colon], ref[colon:]
    if "/" not in name:
        name = "ai/" + name
    return bool(_REFERENCE.match(name.lower() + tag))


def _backend_for_format(fmt: str, backend: str) -> str:
    """selectBackendForModel on Linux: safetensors -> vLLM, DDUF/diffusers -> diffusers, else unchanged."""
    if fmt == wire.FORMAT_SAFETENSORS:
        return wire.VLLM_BACKEND
    if fmt in (wire.FORMAT_DDUF, wire.FORMAT_DIFFUSERS):
        return wire.DIFFUSERS
    return backend


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
