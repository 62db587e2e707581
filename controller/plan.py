"""What to do next for one LocalModel on one engine (pure: spec and observation in, plan out).

`plan_model` is called again after every step that changes what the engine holds (a pull gives
the model its ID and format, which decide the backend and the config key), so each call only has
to answer "given what the engine reports now, what is the next thing to do?". The executor in
reconcile.py performs the plan's actions and calls it again; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from controller import wire
from controller.desired import ConfigureRequest, RenderError, render_configure
from controller.engine import capabilities as caps
from controller.engine import compare
from controller.engine.capabilities import Capabilities
from controller.engine.compare import config_differences
from controller.engine.errors import EngineError
from controller.engine.types import LiveRunnerConfig, ModelInfo, RunnerInfo, StoredConfig
from controller.refs import canonical_ref
from controller.spec import LocalModelSpec
from controller.status import Reason


@dataclass(frozen=True)
class Observation:
    """One engine, as one observe round saw it (GET /models, /engines/_configure, /engines/ps)."""

    engine: str
    models: tuple[ModelInfo, ...] = ()
    configs: tuple[StoredConfig, ...] = ()
    runners: tuple[RunnerInfo, ...] = ()
    error: EngineError | None = None  # set when the engine could not be observed
    capabilities: Capabilities | None = None  # what the engine's release keeps (None: not detected, assume all)

    def with_model(self, info: ModelInfo) -> Observation:
        others = tuple(m for m in self.models if m.id != info.id)
        return Observation(self.engine, others + (info,), self.configs, self.runners, self.error, self.capabilities)

    def find_model(self, ref: str) -> ModelInfo | None:
        """The stored model a reference names (by tag, `ai/x` = `docker.io/ai/x:latest`, or by ID); the first of
        `models` wins. An index, not a scan: a drift pass plans every model against one observation."""
        return self._models_by_ref.get(canonical_ref(ref))

    def find_config(self, model_id: str, backend: str, mode: str) -> StoredConfig | None:
        """The stored config of a pulled model (by its ID) in O(1), as `compare.find_stored_config` finds it."""
        return self._configs_by_key.get((backend, model_id, mode))

    @cached_property
    def _configs_by_key(self) -> dict[tuple[str, str, str], StoredConfig]:
        index: dict[tuple[str, str, str], StoredConfig] = {}
        for entry in self.configs:
            if entry.model_id:
                index.setdefault((entry.backend, entry.model_id, entry.mode), entry)
        return index

    @cached_property
    def _models_by_ref(self) -> dict[str, ModelInfo]:
        index: dict[str, ModelInfo] = {}
        for info in self.models:  # the first model in order wins
            for key in (info.id.lower(), *(canonical_ref(tag) for tag in info.tags)):
                index.setdefault(key, info)
        return index


# Actions, in the order the executor performs them.
@dataclass(frozen=True)
class Pull:
    ref: str
    why: str
    spec_field: str = field(default="spec.model", compare=False)  # the field that names `ref`, for the errors


@dataclass(frozen=True)
class Configure:
    request: ConfigureRequest
    why: str  # "missing" (nothing stored: first apply or engine restart) or "drift"
    differences: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckLiveRunner:
    """Read the loaded runner's own config (GET /engines/requests?model=)."""

    ref: str


@dataclass(frozen=True)
class Evict:
    """Unload the idle runner that still runs an old config (stored configs are kept)."""

    ref: str
    differences: tuple[str, ...]


@dataclass(frozen=True)
class Preload:
    ref: str
    backend: str | None
    mode: str = wire.COMPLETION


Action = Pull | Configure | CheckLiveRunner | Evict | Preload


@dataclass(frozen=True)
class Blocked:
    """Nothing more can be done in this reconcile. `retryable` blocks clear by themselves (a busy
    runner becomes idle); the others need a change to the spec or to the engine's store."""

    reason: Reason
    message: str
    retryable: bool = False


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    blocked: Blocked | None = None
    model: ModelInfo | None = None
    backend: str | None = None
    request: ConfigureRequest | None = None
    stored: StoredConfig | None = None
    runner: RunnerInfo | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def up_to_date(self) -> bool:
        return not self.actions and self.blocked is None


def effective_mode(spec: LocalModelSpec) -> str:
    """The mode the engine files the config under (docs/engine-contract.md §3.3 step 5)."""
    return compare.effective_mode(render_configure(spec).body)


def find_runner(runners: Iterable[RunnerInfo], model: ModelInfo, backend: str, mode: str) -> RunnerInfo | None:
    """`ps` names runners by the reference the client sent, so match it against every tag and the ID."""
    names = {canonical_ref(tag) for tag in model.tags} | {model.id.lower()}
    for runner in runners:
        if runner.backend == backend and runner.mode == mode and canonical_ref(runner.model) in names:
            return runner
    return None


def plan_model(
    spec: LocalModelSpec,
    observation: Observation,
    *,
    pulled: frozenset[str] = frozenset(),
    configured_now: bool = False,
    live_config: dict[str, Any] | None = None,
    live_checked: bool = False,
) -> Plan:
    """The next actions for `spec` on the observed engine.

    `pulled` holds the references already pulled for this spec (pullPolicy Always pulls once per
    spec change, not on every drift pass). `configured_now` says a configure was sent in this
    reconcile; `live_config`/`live_checked` carry the loaded runner's own config once read.
    """
    pulls: list[Action] = []
    for ref, role in _wanted_refs(spec):
        present = observation.find_model(ref) is not None
        if spec.pull_policy == "Never" and not present:
            return Plan(
                blocked=Blocked(
                    Reason.MODEL_NOT_PRESENT,
                    f"{role} {ref} is not in the engine's store and pullPolicy is Never: "
                    f"pull it (docker model pull {ref}) or set pullPolicy: IfNotPresent",
                )
            )
        if ref in pulled:
            if not present:
                return Plan(
                    blocked=Blocked(
                        Reason.MODEL_NOT_FOUND,
                        f"{role} {ref} was pulled but the engine does not list it; check the reference",
                    )
                )
            continue
        if not present:
            pulls.append(Pull(ref, f"{role} not in the engine's store", _SPEC_FIELDS[role]))
        elif spec.pull_policy == "Always":
            pulls.append(Pull(ref, "pullPolicy is Always", _SPEC_FIELDS[role]))
    if pulls:
        return Plan(actions=tuple(pulls))

    model = observation.find_model(spec.model)
    assert model is not None  # every wanted ref is present once no pull is left
    backend = spec.backend or wire.backend_for_format(model.format)
    try:
        request = render_configure(spec, backend)
    except RenderError as exc:
        return Plan(blocked=Blocked(Reason.BACKEND_MISMATCH, str(exc)), model=model, backend=backend)
    fitted, unsupported = fit_to_engine(spec, request, observation.capabilities)
    if fitted is None:
        return Plan(blocked=unsupported, model=model, backend=backend)
    request = fitted
    mode = effective_mode(spec)
    stored = observation.find_config(model.id, backend, mode)
    runner = find_runner(observation.runners, model, backend, mode)
    # What every plan from here on reports, whatever it decides to do.
    notes = (*request.notes, *undeclared_mode_notes(spec.model, mode, model, backend, observation))
    base = Plan(model=model, backend=backend, request=request, stored=stored, runner=runner, notes=notes)

    if stored is None:
        return replace(base, actions=(Configure(request, "missing"),))
    differences = tuple(config_differences(request.body, stored.config, backend=backend))
    if differences:
        return replace(base, actions=(Configure(request, "drift", differences),))

    # The stored config is right. A loaded runner may still run an older one (docs/engine-contract.md §8.5, §8.6).
    if runner is not None and not runner.loading:
        if not live_checked:
            return replace(base, actions=(CheckLiveRunner(spec.model),))
        if live_config is not None:
            stale = tuple(config_differences(request.body, live_config, backend=backend))
            if stale:
                if runner.in_use:
                    return replace(
                        base,
                        blocked=Blocked(
                            Reason.RUNNER_STALE,
                            "the loaded runner still runs an older config and is busy; it is evicted "
                            "as soon as it is idle: " + "; ".join(stale),
                            retryable=True,
                        ),
                    )
                actions: list[Action] = [Evict(spec.model, stale)]
                if spec.preload:
                    actions.append(Preload(spec.model, request.backend, mode))
                return replace(base, actions=tuple(actions))
    if wants_preload(spec, runner, configured_now=configured_now):
        return replace(base, actions=(Preload(spec.model, request.backend, mode),))
    # Everything the engine can keep is in place; what it cannot is a permanent condition, not a retry.
    return base if unsupported is None else replace(base, blocked=unsupported)


def wants_preload(spec: LocalModelSpec, runner: RunnerInfo | None, *, configured_now: bool) -> bool:
    """Whether to preload now that the stored config is right. A loading runner (the engine's background
    load after a configure) is waited for by the preload request, which also reports a load failure that
    the background load only logs; without a configure in this reconcile only keepAlive -1 reloads."""
    return (runner is None or runner.loading) and spec.preload and (configured_now or _keep_resident(spec))


def preload_after_configure(spec: LocalModelSpec, plan: Plan) -> Preload | None:
    """The preload the executor runs once `plan`'s Configure is accepted, for `plan` to show it beforehand.

    An accepted configure leaves no idle runner of the key (the engine evicts it and starts loading the new
    config in the background, docs/engine-contract.md §3.3, §8.7); a loading runner stays loading. A busy
    runner refuses the configure (409, §8.8), so nothing follows it in this pass. Without a pulled model
    (a Pull comes first) the runner is absent."""
    runner = plan.runner
    if runner is not None and runner.in_use and not runner.loading:
        return None
    after = None if runner is None else replace(runner, loading=True)
    if not wants_preload(spec, after, configured_now=True):
        return None
    backend = plan.request.backend if plan.request is not None else None
    return Preload(spec.model, backend, effective_mode(spec))


def live_runner_config(
    entries: Sequence[LiveRunnerConfig], model: ModelInfo, backend: str, runners: Iterable[RunnerInfo]
) -> dict[str, Any] | None:
    """The config the loaded runner of `model` was started with, from `GET /engines/requests?model=`
    (docs/engine-contract.md §4.3); None when that cannot be told: no entry or several for the model, or
    runners of several modes loaded (the entries do not say their mode, so one may be another mode's)."""
    mine = [entry for entry in entries if entry.model_id == model.id]
    loaded_modes = [mode for mode in wire.MODES if find_runner(runners, model, backend, mode) is not None]
    if len(mine) != 1 or len(loaded_modes) > 1:
        return None
    return mine[0].config


def live_runner_ok(request: ConfigureRequest, live_config: dict[str, Any] | None, backend: str | None) -> bool:
    """Whether the loaded runner runs `request`'s config, as far as can be told (unknown counts as right)."""
    return live_config is None or not config_differences(request.body, live_config, backend=backend)


def backend_overridden(
    spec: LocalModelSpec, model: ModelInfo, backend: str, configs: Iterable[StoredConfig], mode: str
) -> str | None:
    """After a configure whose config does not read back under `backend`: the message when the engine
    stored it under another backend, which it re-selects from the model's format (docs/engine-contract.md
    §3.3 step 6). Sending it again would store it there again: a spec change is needed, not a retry."""
    chosen = sorted({c.backend for c in configs if c.model_id == model.id and c.mode == mode and c.backend != backend})
    if not chosen:
        return None
    fix = (
        f"set backend: {chosen[0]}"
        if spec.backend is None or chosen[0] != wire.backend_for_format(model.format)
        else "leave backend out"
    )
    return (
        f"the engine stored the config of {spec.model} for backend {chosen[0]}, not {backend}: it picks the "
        f"backend from the model's format ({model.format or 'unknown'}); {fix}"
    )


def fit_to_engine(
    spec: LocalModelSpec, request: ConfigureRequest, capabilities: Capabilities | None
) -> tuple[ConfigureRequest | None, Blocked | None]:
    """What to send to an engine of these capabilities, and what to report about the rest (pure).

    A field the engine's release cannot keep is left out of the request (the engine would drop it
    silently, or refuse the whole body), so every other field is still applied and verified; the
    returned Blocked (EngineUnsupported, not retryable) names the field, the engine's release and the
    first release that has it. A request of None means nothing can be sent at all (a mode the engine
    refuses to decode). Without capabilities (not detected) the request is sent as it is."""
    if capabilities is None:
        return request, None
    if spec.mode == wire.IMAGE_GENERATION and not capabilities.has(caps.IMAGE_GENERATION):
        return None, Blocked(Reason.ENGINE_UNSUPPORTED, capabilities.unsupported(caps.IMAGE_GENERATION))
    if wire.KEEP_ALIVE in request.body and not capabilities.has(caps.KEEP_ALIVE):
        body = {key: value for key, value in request.body.items() if key != wire.KEEP_ALIVE}
        note = f"keepAlive not sent: model-runner {capabilities.release} does not keep it"
        fitted = replace(request, body=body, notes=(*request.notes, note))
        return fitted, Blocked(Reason.ENGINE_UNSUPPORTED, capabilities.unsupported(caps.KEEP_ALIVE))
    return request, None


# Modes whose runner uses the completion config when none is stored for the mode itself (loader.load);
# the embedding mode does not fall back.
_FALLS_BACK_TO_COMPLETION = (wire.RERANKING, wire.IMAGE_GENERATION)
_USED_FOR = {wire.COMPLETION: "chat", wire.EMBEDDING: "embeddings", wire.RERANKING: "reranking"}


def undeclared_mode_notes(
    ref: str, mode: str, model: ModelInfo, backend: str, observation: Observation
) -> tuple[str, ...]:
    """Notes for runners of the model in another mode than `mode` that have no config of their own:
    the engine runs them with its defaults, so the declared settings are ignored for that use (the
    config key is (backend, model, mode); only reranking and image generation fall back to the
    completion config). A config stored for that mode (another LocalModel's) silences the note."""
    names = {canonical_ref(tag) for tag in model.tags} | {model.id.lower()}
    notes: list[str] = []
    for runner in observation.runners:
        other = runner.mode
        if runner.backend != backend or other == mode or canonical_ref(runner.model) not in names:
            continue
        if mode == wire.COMPLETION and other in _FALLS_BACK_TO_COMPLETION:
            continue
        if observation.find_config(model.id, backend, other) is not None:
            continue
        note = (
            f"the engine runs {ref} in mode {other}, for which no config is declared: that runner uses the "
            f"engine's defaults, not these settings (declared for mode {mode}); if the model is used for "
            f"{_USED_FOR.get(other, other)}, set mode: {other} (or add a LocalModel with mode: {other})"
        )
        if note not in notes:
            notes.append(note)
    return tuple(notes)


def _keep_resident(spec: LocalModelSpec) -> bool:
    """preload with keepAlive -1 means "keep it loaded": reload after an unload or restart."""
    return spec.keep_alive is not None and spec.keep_alive.strip() == "-1"


_SPEC_FIELDS = {"model": "spec.model", "draft model": "spec.speculative.draftModel"}  # by _wanted_refs' role


def _wanted_refs(spec: LocalModelSpec) -> list[tuple[str, str]]:
    refs = [(spec.model, "model")]
    if spec.speculative is not None and spec.speculative.draft_model:
        refs.append((spec.speculative.draft_model, "draft model"))
    return refs


def mode_key(spec: LocalModelSpec) -> tuple[str, str]:
    """What two LocalModels must not share on one engine: the engine keeps one config per key."""
    return canonical_ref(spec.model), effective_mode(spec)


def find_conflicts(specs: Sequence[tuple[str, LocalModelSpec]]) -> dict[str, str]:
    """Names whose (model, mode) an earlier name (in the given order) already claims, with a message.

    The engine stores one config per (backend, model, mode) and replaces it wholesale, so two
    LocalModels for the same model and mode would overwrite each other on every pass.
    """
    owners: dict[tuple[str, str], str] = {}
    conflicts: dict[str, str] = {}
    for name, spec in specs:
        key = mode_key(spec)
        if key in owners:
            conflicts[name] = (
                f"{owners[key]} already declares model {spec.model} in mode {key[1]}; "
                "the engine keeps one config per model and mode, so the two would "
                "overwrite each other: merge them or set a different mode"
            )
        else:
            owners[key] = name
    return conflicts
