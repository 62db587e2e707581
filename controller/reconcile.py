"""The one reconcile entry point every front-end calls: observe an engine, then bring each
LocalModel on it to the desired state, step by step, and say how it went.

The daemon, the CLI and the Kubernetes operator all use `EngineReconciler`:

    observation = await reconciler.observe()            # 3 requests, shared by all models
    outcome = await reconciler.reconcile(key, model, observation)
    ... publish outcome.status; come back after outcome.requeue_after (or the drift interval)

Each call is level-triggered: it compares the spec with what the engine reports now and acts on
the difference, whatever event caused the call. The only memory kept between calls is what makes
it cheap and polite (failure counts for backoff, a permanent error not to resend, pulls already
done for this spec); a new process re-derives everything else from the engine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

from controller.engine.capabilities import Capabilities, detect
from controller.engine.client import EngineClient
from controller.engine.compare import config_differences, find_stored_config
from controller.engine.errors import BackendOverridden, EngineError, ModelNotInRegistry, NotFound, VerifyFailed
from controller.engine.types import ModelInfo, PullProgress, RunnerInfo, StoredConfig
from controller.plan import (
    CheckLiveRunner,
    Configure,
    Evict,
    Observation,
    Plan,
    Preload,
    Pull,
    backend_overridden,
    effective_mode,
    live_runner_config,
    live_runner_ok,
    plan_model,
)
from controller.policy import Decision, blocked_policy, error_policy, rechecked_each_pass, unobserved_policy
from controller.shared_read import SharedRead
from controller.spec import LocalModel, LocalModelSpec
from controller.status import EngineStatus, Phase, PullProgressInfo, Reason
from controller.wire import backend_for_format

log = logging.getLogger("localmodel.reconcile")

# A reconcile re-plans after every step; a plan that has not settled after this many steps is a bug
# in the plan (or an engine that keeps changing under us), not something to loop on.
MAX_STEPS = 8
# After a configure the engine loads the model in the background; look at the runner again soon.
LOADING_RECHECK_SECONDS = 5.0
# A shared read waits this long for the passes that configure at about the same time to join it.
READ_GATHER_SECONDS = 0.01

EventSink = Callable[[str, str, str, str], None]  # (key, "Normal" | "Warning", reason, message)
ProgressSink = Callable[[str, EngineStatus], None]


@dataclass
class _Memory:
    """What one model's reconciles remember about it on one engine. All of it may be lost."""

    fingerprint: str
    failures: int = 0
    pulled: set[str] = field(default_factory=set)
    stalled: EngineStatus | None = None  # a permanent error for this exact spec
    live_ok: bool = False  # the loaded runner was checked to run the desired config
    verified: bool = False  # this process saw the engine hold this spec's config at least once
    ready_reason: Reason = Reason.APPLIED  # DriftRepaired once this spec's config had to be re-applied
    last_applied_time: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    status: EngineStatus
    requeue_after: float | None  # None: come back on the next drift pass or spec change


@dataclass(frozen=True)
class FinalizeOutcome:
    done: bool
    message: str
    error: EngineError | None = None


def spec_fingerprint(spec: LocalModelSpec) -> str:
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def utcnow() -> datetime:
    return datetime.now(UTC)


class EngineReconciler:
    """Reconciles LocalModels against one engine. Safe to call concurrently for different keys."""

    def __init__(
        self,
        name: str,
        client: EngineClient,
        *,
        clock: Callable[[], datetime] = utcnow,
        jitter: Callable[[], float] = random.random,
        on_event: EventSink | None = None,
        on_progress: ProgressSink | None = None,
        preload_timeout: float = 300.0,
        read_gather: float = READ_GATHER_SECONDS,
    ) -> None:
        self.name = name
        self.client = client
        self._clock = clock
        self._jitter = jitter
        self._on_event = on_event or (lambda *_: None)
        self._on_progress = on_progress or (lambda *_: None)
        self._preload_timeout = preload_timeout
        self._memory: dict[str, _Memory] = {}
        # What the engine's release keeps (controller/engine/capabilities.py): detected on the first
        # observation, again after the engine was unreachable (it may come back as another release).
        self.capabilities: Capabilities | None = None
        # The stored configs and the runners, read by every observation and after every configure: shared by
        # the callers that need them at about the same time (each gets a read started after it asked).
        self._configs = SharedRead(lambda: self.client.stored_configs(), gather=read_gather)
        self._runners = SharedRead(lambda: self.client.ps(), gather=read_gather)
        self._release = SharedRead(lambda: detect(self.client))  # observations that start together ask once

    # ---- observe -------------------------------------------------------------------------------

    async def observe(self) -> Observation:
        """One round of reads shared by every model on this engine. Never raises."""
        now = time.monotonic()
        # Every read is awaited, even when one fails: none is left running past the observation.
        answers = await asyncio.gather(
            self.client.list_models(), self._configs.get(now), self._runners.get(now), return_exceptions=True
        )
        try:
            failed = next((answer for answer in answers if isinstance(answer, BaseException)), None)
            if failed is not None:
                raise failed
            models, configs, runners = cast(tuple[list[ModelInfo], list[StoredConfig], list[RunnerInfo]], answers)
            if self.capabilities is None:
                self.capabilities = await self._release.get(now)
        except EngineError as exc:
            self.capabilities = None
            return Observation(self.name, error=exc)
        return Observation(self.name, tuple(models), tuple(configs), tuple(runners), capabilities=self.capabilities)

    # ---- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: str, model: LocalModel, observation: Observation) -> Outcome:
        spec = model.spec
        generation = model.metadata.generation
        memory = self._remember(key, spec)
        if memory.stalled is not None and not rechecked_each_pass(memory.stalled.reason):
            return Outcome(replace(memory.stalled, observed_generation=generation), None)
        if observation.error is not None:  # said as the daemon and `apply` say it (policy.unreachable_status)
            return self._failed(key, memory, observation.error, generation, None, policy=unobserved_policy)

        # A model pulled on an earlier pass and gone since (`docker model rm`, an engine with an ephemeral
        # store) is pulled again; only a pull of this pass that the engine does not list is an error.
        memory.pulled = {ref for ref in memory.pulled if observation.find_model(ref) is not None}
        configured: Configure | None = None
        live_config: dict[str, Any] | None = None
        live_checked = memory.live_ok
        plan = Plan()
        try:
            for _ in range(MAX_STEPS):
                plan = plan_model(
                    spec,
                    observation,
                    pulled=frozenset(memory.pulled),
                    configured_now=configured is not None,
                    live_config=live_config,
                    live_checked=live_checked,
                )
                if plan.runner is None:  # nothing loaded: nothing to check until a runner appears
                    memory.live_ok = live_checked = False
                if plan.blocked is not None or not plan.actions:
                    break
                for action in plan.actions:
                    if isinstance(action, Pull):
                        observation = await self._pull(key, action, observation, generation)
                        memory.pulled.add(action.ref)
                    elif isinstance(action, Configure):
                        repair = memory.verified  # this very spec was in place before: drift, not an edit
                        observation = await self._configure(key, spec, action, observation, plan, repair)
                        memory.ready_reason = Reason.DRIFT_REPAIRED if repair else Reason.APPLIED
                        configured = action
                        memory.live_ok = live_checked = False
                        live_config = None
                    elif isinstance(action, CheckLiveRunner):
                        assert plan.request is not None  # a plan with a CheckLiveRunner action has a request
                        live_config = await self._live_config(plan, observation)
                        live_checked = True
                        memory.live_ok = live_runner_ok(plan.request, live_config, plan.backend)
                    elif isinstance(action, Evict):
                        observation = await self._evict(key, action, observation, plan)
                        live_checked, live_config = False, None
                    elif isinstance(action, Preload):
                        observation = await self._preload(key, action, observation, plan, spec)
            else:
                raise EngineError(f"plan did not settle after {MAX_STEPS} steps; last plan: {plan.actions}")
        except EngineError as exc:
            return self._failed(key, memory, exc, generation, plan)

        if plan.blocked is not None:
            decision = blocked_policy(plan.blocked, attempt=memory.failures + 1, jitter=self._jitter())
            status = self._status(
                plan, generation, decision.phase, decision.reason, decision.message, memory, stalled=decision.stalled
            )
            if decision.retry_after is not None:
                memory.failures += 1
                return Outcome(status, decision.retry_after)
            if memory.stalled is None or memory.stalled.message != status.message:  # once, not every pass
                self._on_event(key, "Warning", plan.blocked.reason.value, plan.blocked.message)
            memory.stalled = status
            return Outcome(status, None)

        memory.failures = 0
        memory.stalled = None
        if configured is not None:
            memory.last_applied_time = self._clock()
        memory.verified = True
        # The reason and message stay the same from one idle pass to the next, so that a front-end
        # whose status did not change writes nothing.
        status = self._status(
            plan, generation, Phase.READY, memory.ready_reason, _ready_message(plan), memory, ready=True
        )
        requeue = None
        if plan.runner is not None and plan.runner.loading:
            requeue = LOADING_RECHECK_SECONDS  # check the runner's own config once it has loaded
        return Outcome(status, requeue)

    def forget(self, key: str) -> None:
        self._memory.pop(key, None)

    # ---- finalize ------------------------------------------------------------------------------

    async def finalize(self, key: str, model: LocalModel, observation: Observation | None = None) -> FinalizeOutcome:
        """Apply `deletionPolicy` for a LocalModel that is gone: Unload (evict and drop its stored
        config), Delete (also remove the model from the store) or Retain (nothing)."""
        spec = model.spec
        self.forget(key)
        if spec.deletion_policy == "Retain":
            return FinalizeOutcome(True, "deletionPolicy Retain: left the engine as it is")
        try:
            if observation is None or observation.error is not None:
                observation = await self.observe()
                if observation.error is not None:
                    raise observation.error
            info = observation.find_model(spec.model)
            if info is None:
                return FinalizeOutcome(True, f"{spec.model} is not in the engine's store; nothing to unload")
            backend = spec.backend or backend_for_format(info.format)
            # models + backend deletes the stored configs for that backend and model and evicts
            # every mode (docs/engine-contract.md §6.6).
            await self.client.unload(models=[spec.model], backend=backend)
            message = f"unloaded {spec.model} and dropped its stored config on {backend}"
            self._on_event(key, "Normal", "Unloaded", message)
            if spec.deletion_policy == "Delete":
                try:
                    await self.client.delete_model(spec.model)
                    message += "; deleted the model from the engine's store"
                    self._on_event(key, "Normal", "Deleted", f"deleted {spec.model} from the engine's store")
                except NotFound:
                    message += "; the model was already gone from the store"
                except EngineError as exc:
                    if exc.status != 409:
                        raise
                    warning = (
                        f"{spec.model} has other tags, so the engine refused to delete it without "
                        f"force; left in the store (remove it with: docker model rm --force {spec.model})"
                    )
                    self._on_event(key, "Warning", "DeleteRefused", warning)
                    message += "; " + warning
            return FinalizeOutcome(True, message)
        except EngineError as exc:
            self._on_event(key, "Warning", exc.reason.value, f"deletionPolicy {spec.deletion_policy} failed: {exc}")
            return FinalizeOutcome(False, str(exc), exc)

    # ---- steps ---------------------------------------------------------------------------------

    async def _pull(self, key: str, action: Pull, observation: Observation, generation: int | None) -> Observation:
        log.info("pulling %s on %s (%s)", action.ref, self.name, action.why)
        layers: dict[str, tuple[int, int]] = {}

        def progress(line: PullProgress) -> None:
            if line.layer:
                layers[line.layer] = (line.current or 0, layers.get(line.layer, (0, 0))[1] or 0)
            total = line.total or None
            done = sum(current for current, _ in layers.values())
            self._on_progress(
                key,
                EngineStatus(
                    engine=self.name,
                    phase=Phase.PULLING,
                    reason=Reason.PULLING,
                    message=f"pulling {action.ref}: {line.message}".strip(),
                    pull=PullProgressInfo(done, total),
                    observed_generation=generation,
                ),
            )

        try:
            result = await self.client.pull(action.ref, on_progress=progress)
        except ModelNotInRegistry as exc:
            exc.field = action.spec_field  # the message names the field to fix: the model or the draft model
            raise
        info = await self.client.get_model(action.ref)
        self._on_event(key, "Normal", "Pulled", f"{action.ref}: {result.message}")
        return observation.with_model(info)

    async def _configure(
        self, key: str, spec: LocalModelSpec, action: Configure, observation: Observation, plan: Plan, repair: bool
    ) -> Observation:
        request = action.request
        await self.client.configure(request.body, backend=request.backend)
        # Read back what the engine stored, and the runners (a configure evicts an idle runner and
        # starts a background load; a runner that was loading keeps its old config): reads started after
        # the engine answered, shared with the passes that configured meanwhile.
        answered = time.monotonic()
        configs, runners = await asyncio.gather(self._configs.get(answered), self._runners.get(answered))
        assert plan.model is not None
        assert plan.backend is not None
        mode = effective_mode(spec)
        stored = find_stored_config(configs, spec.model, plan.model.id, plan.backend, mode)
        if stored is None:
            overridden = backend_overridden(spec, plan.model, plan.backend, configs, mode)
            if overridden is not None:
                raise BackendOverridden(overridden)
            raise VerifyFailed(f"the engine accepted the config for {spec.model} but does not report it back")
        differences = config_differences(request.body, stored.config, backend=plan.backend)
        if differences:
            raise VerifyFailed("the engine did not keep: " + "; ".join(differences))
        if repair:
            what = (
                "; ".join(action.differences)
                if action.why == "drift"
                else ("the engine no longer had it (restarted, or unloaded everything)")
            )
            self._on_event(
                key,
                "Normal",
                Reason.DRIFT_REPAIRED.value,
                f"re-applied the config of {spec.model} on {self.name}: {what}",
            )
        else:
            self._on_event(
                key, "Normal", Reason.APPLIED.value, f"applied and verified the config of {spec.model} on {self.name}"
            )
        kept = tuple(
            c
            for c in observation.configs
            if c is not stored
            and not (c.backend == stored.backend and c.model_id == stored.model_id and c.mode == stored.mode)
        )
        return replace(observation, configs=kept + (stored,), runners=tuple(runners))

    async def _live_config(self, plan: Plan, observation: Observation) -> dict[str, Any] | None:
        """The config the loaded runner was started with; None when the engine does not say, or when runners
        of several modes of this model are loaded (`/engines/requests` does not tell which is which)."""
        assert plan.model is not None
        assert plan.request is not None
        entries = await self.client.runner_configs(model=plan.request.body["model"])
        return live_runner_config(entries, plan.model, plan.backend or "", observation.runners)

    async def _evict(self, key: str, action: Evict, observation: Observation, plan: Plan) -> Observation:
        # `models` without `backend` evicts every mode and keeps the stored configs (docs/engine-contract.md §6.6).
        await self.client.unload(models=[action.ref])
        self._on_event(
            key,
            "Normal",
            "RunnerEvicted",
            f"evicted the idle runner of {action.ref}, which ran an older config: " + "; ".join(action.differences),
        )
        runners = tuple(r for r in observation.runners if r is not plan.runner)
        return replace(observation, runners=runners)

    async def _preload(
        self, key: str, action: Preload, observation: Observation, plan: Plan, spec: LocalModelSpec
    ) -> Observation:
        await self.client.preload(action.ref, backend=action.backend, mode=action.mode, timeout=self._preload_timeout)
        self._on_event(key, "Normal", "Preloaded", f"loaded {action.ref} so the first request is warm")
        loaded = RunnerInfo(
            backend=plan.backend or "",
            model=action.ref,
            mode=action.mode,
            in_use=False,
            loading=False,
            keep_alive=None,
            last_used=None,
        )
        others = tuple(r for r in observation.runners if r is not plan.runner)  # it was loading, or absent
        return replace(observation, runners=others + (loaded,))

    # ---- status --------------------------------------------------------------------------------

    def _remember(self, key: str, spec: LocalModelSpec) -> _Memory:
        fingerprint = spec_fingerprint(spec)
        memory = self._memory.get(key)
        if memory is None or memory.fingerprint != fingerprint:
            memory = _Memory(fingerprint=fingerprint)
            self._memory[key] = memory
        return memory

    def _failed(
        self,
        key: str,
        memory: _Memory,
        exc: EngineError,
        generation: int | None,
        plan: Plan | None,
        *,
        policy: Callable[..., Decision] = error_policy,
    ) -> Outcome:
        decision = policy(exc, attempt=memory.failures + 1, jitter=self._jitter())
        reason, message = decision.reason, decision.message
        if decision.retry_after is not None:
            memory.failures += 1
            delay = decision.retry_after
            status = self._status(
                plan,
                generation,
                Phase.RETRYING,
                reason,
                f"{message} (retrying in {delay:.0f}s)",
                memory,
                last_error=message,
            )
            # Front-ends log and publish events; a retry between two events is only worth a debug line.
            if memory.failures == 1 or memory.failures % 10 == 0:
                self._on_event(key, "Warning", reason.value, f"{message} (attempt {memory.failures})")
            else:
                log.debug("%s on %s: %s (attempt %d, retry in %.1fs)", key, self.name, message, memory.failures, delay)
            return Outcome(status, delay)
        status = self._status(
            plan, generation, Phase.STALLED, reason, message, memory, stalled=True, last_error=message
        )
        memory.stalled = status
        self._on_event(key, "Warning", reason.value, f"{message} (stalled until the spec changes)")
        return Outcome(status, None)

    def _status(
        self,
        plan: Plan | None,
        generation: int | None,
        phase: Phase,
        reason: Reason,
        message: str,
        memory: _Memory,
        *,
        ready: bool = False,
        stalled: bool = False,
        last_error: str | None = None,
    ) -> EngineStatus:
        plan = plan or Plan()
        return EngineStatus(
            engine=self.name,
            phase=phase,
            reason=reason,
            message=message,
            ready=ready,
            stalled=stalled,
            backend=plan.backend,
            model_id=plan.model.id if plan.model else None,
            applied_config=dict(plan.stored.config) if plan.stored else None,
            loaded=plan.runner is not None and not plan.runner.loading,
            last_error=last_error,
            last_applied_time=memory.last_applied_time,
            notes=plan.notes,
            observed_generation=generation,
        )


def _ready_message(plan: Plan) -> str:
    loaded = ", loaded" if plan.runner is not None and not plan.runner.loading else ""
    model = plan.request.body["model"] if plan.request else "model"
    return f"{model} on {plan.backend}: config verified{loaded}"
