"""The one-shot commands' logic: apply (reconcile until done), plan (what would change), engine inventory.

The same reconcile core as the daemon; only the loop around it differs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from controller import wire
from controller.backoff import backoff_delay
from controller.desired import RenderError, render_configure
from controller.engine.client import EngineClient
from controller.engine.types import RunnerInfo
from controller.fleet import conflict_status
from controller.plan import (
    CheckLiveRunner,
    Configure,
    Evict,
    Observation,
    Plan,
    Preload,
    Pull,
    find_conflicts,
    live_runner_config,
    plan_model,
    preload_after_configure,
)
from controller.policy import unreachable_status
from controller.reconcile import EngineReconciler
from controller.refs import canonical_ref
from controller.spec import LocalModel
from controller.status import EngineStatus, Phase, Reason

CONCURRENCY = 16

EventSink = Callable[[str, str, str, str], None]
ProgressSink = Callable[[str, EngineStatus], None]


# ---- apply -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    name: str
    status: EngineStatus


async def apply_models(
    client: EngineClient,
    models: Sequence[LocalModel],
    *,
    wait: bool,
    timeout: float,
    on_event: EventSink | None = None,
    on_progress: ProgressSink | None = None,
    clock: Callable[[], float] = time.monotonic,
    engine_name: str = "local",
) -> tuple[list[Applied], bool]:
    """Reconcile `models` once, or with `wait` until each is Ready or Stalled (respecting each one's
    requeue time) or `timeout` seconds pass. Returns the last status of each, in input order, and
    whether the timeout cut it short. With `wait` the timeout is a hard deadline: work still in
    flight then (a long pull, a slow load) is cancelled, and its status so far is reported."""
    last: dict[str, EngineStatus] = {}  # the newest status of each model: progress or outcome

    def progress(name: str, status: EngineStatus) -> None:
        last[name] = status
        if on_progress is not None:
            on_progress(name, status)

    reconciler = EngineReconciler(engine_name, client, on_event=on_event, on_progress=progress)
    conflicts = find_conflicts([(m.name, m.spec) for m in models])
    final: dict[str, EngineStatus] = {name: conflict_status(engine_name, msg) for name, msg in conflicts.items()}
    start = clock()
    due = {m.name: start for m in models if m.name not in conflicts}
    by_name = {m.name: m for m in models}
    slots = asyncio.Semaphore(CONCURRENCY)
    engine_failures = 0
    started: set[str] = set()  # models whose first reconcile began (a pull or a load may still be running)

    async def one(name: str, observation: Observation) -> None:
        async with slots:
            started.add(name)
            outcome = await reconciler.reconcile(name, by_name[name], observation)
        last[name] = outcome.status
        if outcome.status.ready or outcome.status.stalled:
            final[name] = outcome.status
            due.pop(name)
        else:
            due[name] = clock() + (outcome.requeue_after if outcome.requeue_after is not None else 1.0)

    async def passes() -> None:
        """One pass, or with `wait` passes until every model is Ready or Stalled."""
        nonlocal engine_failures
        while due:
            now = clock()
            ready_now = [name for name, at in due.items() if at <= now]
            if ready_now:
                observation = await reconciler.observe()
                if observation.error is not None:
                    for name in ready_now:
                        last[name] = unreachable_status(engine_name, observation.error)
                    if not wait:
                        break
                    engine_failures += 1
                    delay = backoff_delay(engine_failures, 0.5)
                    for name in ready_now:
                        due[name] = now + delay
                else:
                    engine_failures = 0
                    await asyncio.gather(*(one(name, observation) for name in ready_now))
            if not wait or not due:
                break
            await asyncio.sleep(max(0.0, min(due.values()) - clock()))

    timed_out = False
    if wait:
        try:
            # One deadline for everything, a pass included: a pull or a load can take far longer than --timeout.
            async with asyncio.timeout(max(0.0, start + timeout - clock())):
                await passes()
        except TimeoutError:
            timed_out = True
    else:
        await passes()
    results = [
        Applied(m.name, final.get(m.name) or last.get(m.name) or _not_started(engine_name, timeout, m.name in started))
        for m in models
    ]
    return results, timed_out


def _not_started(engine: str, timeout: float, started: bool) -> EngineStatus:
    if started:  # its first pass was cut short: a pull that had not reported progress yet, a configure, a load
        return EngineStatus(
            engine,
            Phase.PENDING,
            Reason.PENDING,
            f"timed out after {timeout:g}s during its first reconcile (a pull, configure or load still in progress)",
        )
    return EngineStatus(
        engine, Phase.PENDING, Reason.PENDING, f"timed out after {timeout:g}s before its first reconcile"
    )


# ---- plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One line of a plan: what would be done, and optional detail lines."""

    text: str
    detail: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelPlan:
    name: str
    model: str
    steps: tuple[Step, ...]
    blocked: str | None = None  # "Reason: message" when nothing can be done
    notes: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return bool(self.steps)


async def plan_models(client: EngineClient, models: Sequence[LocalModel], observation: Observation) -> list[ModelPlan]:
    """What `apply` would do to each model, from one observation, without changing anything.
    Reads a loaded runner's own config (GET /engines/requests) where the plan needs it."""
    conflicts = find_conflicts([(m.name, m.spec) for m in models])
    plans = []
    for model in models:
        if model.name in conflicts:
            plans.append(
                ModelPlan(model.name, model.spec.model, (), f"{Reason.CONFLICT.value}: {conflicts[model.name]}")
            )
        else:
            plans.append(await _plan_one(client, model, observation))
    return plans


async def _plan_one(client: EngineClient, model: LocalModel, observation: Observation) -> ModelPlan:
    """The plan `apply` follows, with the same rules (controller/plan.py): the loaded runner's own config
    read as the reconciler reads it, and what follows a pull or a configure."""
    spec = model.spec
    plan = plan_model(spec, observation)
    if plan.actions and isinstance(plan.actions[0], CheckLiveRunner):
        assert plan.model is not None
        assert plan.request is not None
        entries = await client.runner_configs(model=plan.request.body["model"])
        live = live_runner_config(entries, plan.model, plan.backend or "", observation.runners)
        plan = plan_model(spec, observation, live_config=live, live_checked=True)
    steps: list[Step] = []
    for action in plan.actions:
        steps += _describe(action, plan)
    if any(isinstance(a, Pull) for a in plan.actions):
        steps += _after_pull(model)
    elif any(isinstance(a, Configure) for a in plan.actions):
        preload = preload_after_configure(spec, plan)
        if preload is not None:
            steps.append(Step(f"preload {preload.ref} (preload: true)"))
    blocked = f"{plan.blocked.reason.value}: {plan.blocked.message}" if plan.blocked else None
    return ModelPlan(model.name, spec.model, tuple(steps), blocked, plan.notes)


def _describe(action: object, plan: Plan) -> list[Step]:
    if isinstance(action, Pull):
        return [Step(f"pull {action.ref} ({action.why})")]
    if isinstance(action, Configure):
        request = action.request
        where = f"POST {request.path} (backend {plan.backend})"
        if action.why == "drift":
            return [Step(f"configure {where}: the engine holds a different config", action.differences)]
        return [Step(f"configure {where}: nothing stored for this model and mode", (_body(request.body),))]
    if isinstance(action, Evict):
        return [Step(f"evict the idle runner of {action.ref}, which runs an older config", action.differences)]
    if isinstance(action, Preload):
        return [Step(f"preload {action.ref} (preload: true, not loaded)")]
    return [Step(str(action))]


def _after_pull(model: LocalModel) -> list[Step]:
    """After a pull the model's format decides the backend; show the request for the likely one."""
    try:
        request = render_configure(model.spec)
    except RenderError as exc:
        return [Step(f"then configure: impossible: {exc}")]
    steps = [
        Step(
            f"then configure POST {request.path} (the backend follows the model's format once pulled)",
            (_body(request.body),),
        )
    ]
    if preload_after_configure(model.spec, Plan()) is not None:  # nothing loaded before the pull
        steps.append(Step(f"then preload {model.spec.model} (preload: true)"))
    return steps


def _body(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=False)


# ---- engine inventory --------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineRow:
    """One line of `localmodel status --engine`: a stored config, a loaded runner, or a pulled model."""

    model: str
    backend: str
    mode: str
    context: str
    keep_alive: str
    loaded: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {
            "model": self.model,
            "backend": self.backend,
            "mode": self.mode,
            "context": self.context,
            "keepAlive": self.keep_alive,
            "loaded": self.loaded,
            "message": self.message,
        }


async def engine_inventory(client: EngineClient) -> list[EngineRow]:
    """What the engine holds: every stored config (and whether it is loaded), runners without a stored
    config, and pulled models with neither (they run with the engine's defaults). Raises EngineError."""
    models, configs, runners = await asyncio.gather(client.list_models(), client.stored_configs(), client.ps())
    by_id = {m.id: m for m in models}
    rows: list[EngineRow] = []
    covered_models: set[str] = set()
    matched_runners: set[int] = set()
    for entry in sorted(configs, key=lambda c: (c.model or c.model_id, c.backend, c.mode)):
        info = by_id.get(entry.model_id)
        names = set(info.tags) if info else {entry.model}
        runner_index = next(
            (
                i
                for i, r in enumerate(runners)
                if r.backend == entry.backend and r.mode == entry.mode and _runner_names(r.model, names)
            ),
            None,
        )
        if runner_index is not None:
            matched_runners.add(runner_index)
        covered_models.add(entry.model_id)
        context = entry.config.get(wire.CONTEXT_SIZE)
        packaged = info.context_size if info else None
        rows.append(
            EngineRow(
                model=entry.model or entry.model_id,
                backend=entry.backend,
                mode=entry.mode,
                context=str(context) if context else (f"{packaged} (packaged)" if packaged else "-"),
                keep_alive=str(entry.config.get(wire.KEEP_ALIVE) or "5m (default)"),
                loaded=_loaded(runners[runner_index]) if runner_index is not None else "no",
                message="configured" + _flags(entry.config),
            )
        )
    for index, runner in enumerate(runners):
        if index in matched_runners:
            continue
        rows.append(
            EngineRow(
                runner.model,
                runner.backend,
                runner.mode,
                "-",
                runner.keep_alive or "-",
                _loaded(runner),
                "loaded with no stored config (engine defaults)",
            )
        )
    for info in models:
        if info.id in covered_models:
            continue
        name = info.tags[0] if info.tags else info.id
        if any(_runner_names(r.model, set(info.tags)) for r in runners):
            continue
        rows.append(
            EngineRow(
                name,
                wire.backend_for_format(info.format),
                "-",
                f"{info.context_size} (packaged)" if info.context_size else "-",
                "-",
                "no",
                "pulled, not configured (engine defaults)",
            )
        )
    return rows


def _runner_names(runner_model: str, names: set[str]) -> bool:
    wanted = {canonical_ref(n) for n in names}
    return canonical_ref(runner_model) in wanted


def _loaded(runner: RunnerInfo) -> str:
    if runner.loading:
        return "loading"
    return "in use" if runner.in_use else "yes"


def _flags(config: dict[str, Any]) -> str:
    flags = config.get(wire.RUNTIME_FLAGS)
    return f"; flags {' '.join(flags)}" if flags else ""
