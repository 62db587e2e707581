"""`localmodel plan` and `localmodel apply` agree: for each engine state of the table, what the plan
reports (`oneshot.plan_models`) is what the reconciler then does (`EngineReconciler.reconcile`).

Both run against the same in-memory engine (`FakeEngine`, no I/O), which behaves as the engine contract
says for what matters here: a configure evicts the idle runner of its key and starts a load that stays
loading (a slow model; docs/engine-contract.md §8.7), a busy runner answers 409 (§8.8), a loading runner
keeps the config it started with (§8.5), `GET /engines/requests` lists one entry per live runner and does
not say its mode (§4.3), a model's format decides the backend (§3.3 step 6).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller import wire
from controller.engine.errors import RunnerBusy
from controller.engine.types import LiveRunnerConfig, ModelInfo, PullResult, RunnerInfo, StoredConfig
from controller.plan import Observation
from controller.reconcile import EngineReconciler
from controller.refs import canonical_ref
from controller.spec import LocalModel, parse_localmodel
from controller.standalone.oneshot import plan_models

SMOLLM = ModelInfo(id="sha256:aaa", tags=("docker.io/ai/smollm2:latest",), format="gguf", context_size=8192)
OLD = {wire.CONTEXT_SIZE: 4096}
NEW = {wire.CONTEXT_SIZE: 8192}


@dataclass
class Loaded:
    mode: str
    config: dict[str, Any]
    in_use: bool = False
    loading: bool = False
    backend: str = "llama.cpp"


@dataclass
class FakeEngine:
    """What the engine holds, and the client calls that change it (recorded in `calls`)."""

    models: list[ModelInfo] = field(default_factory=list)
    configs: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (backend, id, mode)
    runners: list[Loaded] = field(default_factory=list)
    catalog: tuple[ModelInfo, ...] = (SMOLLM,)
    override_backend: str | None = None  # the backend the engine picks whatever was asked
    calls: list[str] = field(default_factory=list)

    # ---- what an observe round reads
    def observation(self) -> Observation:
        configs = tuple(
            StoredConfig(backend, self._tag(model_id), model_id, mode, dict(config))
            for (backend, model_id, mode), config in self.configs.items()
        )
        runners = tuple(
            RunnerInfo(r.backend, "ai/smollm2", r.mode, r.in_use, r.loading, None, None) for r in self.runners
        )
        return Observation("fake", tuple(self.models), configs, runners)

    def _tag(self, model_id: str) -> str:
        return next((m.tags[0] for m in self.models if m.id == model_id), model_id)

    def _model(self, ref: str) -> ModelInfo | None:
        wanted = canonical_ref(ref)
        return next((m for m in self.models if wanted in {canonical_ref(t) for t in m.tags}), None)

    # ---- the EngineClient methods the reconciler and the planner call
    async def list_models(self) -> list[ModelInfo]:
        return list(self.models)

    async def get_model(self, ref: str) -> ModelInfo:
        found = self._model(ref)
        assert found is not None, ref
        return found

    async def pull(self, ref: str, on_progress: Any = None) -> PullResult:
        self.calls.append("pull")
        wanted = canonical_ref(ref)
        self.models += [m for m in self.catalog if wanted in {canonical_ref(t) for t in m.tags}]
        return PullResult("Model pulled successfully", cached=False)

    async def stored_configs(self, model: str | None = None) -> list[StoredConfig]:
        return [c for c in self.observation().configs if c.model_id.startswith("sha256:")]

    async def ps(self) -> list[RunnerInfo]:
        return list(self.observation().runners)

    async def runner_configs(self, model: str | None = None) -> list[LiveRunnerConfig]:
        found = self._model(model or "")
        return [LiveRunnerConfig(found.id, dict(r.config)) for r in self.runners if found and not r.loading]

    async def configure(self, body: dict[str, Any], *, backend: str | None = None) -> None:
        self.calls.append("configure")
        mode = body.get(wire.MODE, wire.COMPLETION)
        model = self._model(body["model"])
        chosen = self.override_backend or backend or "llama.cpp"
        runner = next((r for r in self.runners if r.mode == mode and r.backend == chosen and not r.loading), None)
        if runner is not None and runner.in_use:
            raise RunnerBusy("runner already active", status=409)
        config = {k: v for k, v in body.items() if k not in ("model", wire.MODE)}
        self.configs[(chosen, model.id if model else body["model"], mode)] = config
        if runner is not None:  # evicted, and loaded again in the background (slowly)
            self.runners.remove(runner)
            self.runners.append(Loaded(mode, config, loading=True, backend=chosen))

    async def unload(self, *, models: list[str] | None = None, backend: str | None = None, all: bool = False) -> int:
        self.calls.append("evict")
        gone = len(self.runners)
        self.runners = []
        return gone

    async def preload(
        self, ref: str, *, backend: str | None = None, mode: str = wire.COMPLETION, timeout: float
    ) -> None:
        self.calls.append("preload")
        model = self._model(ref)
        assert model is not None
        chosen = backend or "llama.cpp"
        self.runners = [r for r in self.runners if not (r.mode == mode and r.backend == chosen)]
        self.runners.append(Loaded(mode, dict(self.configs.get((chosen, model.id, mode), {})), backend=chosen))


def localmodel(**spec: Any) -> LocalModel:
    return parse_localmodel(
        {"apiVersion": "localmodel.io/v1alpha1", "kind": "LocalModel", "metadata": {"name": "m"}, "spec": spec}
    )


SMOL = {"model": "ai/smollm2", "contextSize": 8192}
STORED_NEW = {("llama.cpp", SMOLLM.id, wire.COMPLETION): NEW}

CASES: dict[str, tuple[dict[str, Any], FakeEngine]] = {
    "not pulled": (SMOL, FakeEngine()),
    "not pulled, preload": ({**SMOL, "preload": True}, FakeEngine()),
    "config stored under the raw ref before the pull": (
        SMOL,
        FakeEngine(configs={("llama.cpp", "ai/smollm2", wire.COMPLETION): OLD}),
    ),
    "pulled, nothing stored, no runner": (SMOL, FakeEngine(models=[SMOLLM])),
    "pulled, nothing stored, no runner, preload": ({**SMOL, "preload": True}, FakeEngine(models=[SMOLLM])),
    "stored config drifted, no runner": (
        SMOL,
        FakeEngine(models=[SMOLLM], configs={("llama.cpp", SMOLLM.id, wire.COMPLETION): OLD}),
    ),
    "runner matching": (
        SMOL,
        FakeEngine(models=[SMOLLM], configs=dict(STORED_NEW), runners=[Loaded(wire.COMPLETION, NEW)]),
    ),
    "runner with another config, idle": (
        SMOL,
        FakeEngine(models=[SMOLLM], configs=dict(STORED_NEW), runners=[Loaded(wire.COMPLETION, OLD)]),
    ),
    "runner with another config, idle, preload": (
        {**SMOL, "preload": True},
        FakeEngine(models=[SMOLLM], configs=dict(STORED_NEW), runners=[Loaded(wire.COMPLETION, OLD)]),
    ),
    "runner with another config, busy": (
        SMOL,
        FakeEngine(models=[SMOLLM], configs=dict(STORED_NEW), runners=[Loaded(wire.COMPLETION, OLD, in_use=True)]),
    ),
    "runner loading": (
        SMOL,
        FakeEngine(models=[SMOLLM], configs=dict(STORED_NEW), runners=[Loaded(wire.COMPLETION, OLD, loading=True)]),
    ),
    "runner loading, preload": (
        {**SMOL, "preload": True, "keepAlive": "-1"},
        FakeEngine(models=[SMOLLM], configs=dict(STORED_NEW), runners=[Loaded(wire.COMPLETION, OLD, loading=True)]),
    ),
    "no runner, preload, keepAlive -1": (
        {**SMOL, "preload": True, "keepAlive": "-1"},
        FakeEngine(models=[SMOLLM], configs={("llama.cpp", SMOLLM.id, wire.COMPLETION): {**NEW, "keep_alive": -1}}),
    ),
    # /engines/requests does not say which runner is which mode: the completion runner's entry may be
    # the stale one or the embedding runner's; apply leaves both alone, so plan must not promise an eviction.
    "runners of two modes loaded": (
        SMOL,
        FakeEngine(
            models=[SMOLLM],
            configs=dict(STORED_NEW),
            runners=[Loaded(wire.COMPLETION, OLD), Loaded(wire.EMBEDDING, {})],
        ),
    ),
    "runners of two modes loaded, the completion one current": (
        SMOL,
        FakeEngine(
            models=[SMOLLM],
            configs=dict(STORED_NEW),
            runners=[Loaded(wire.COMPLETION, NEW), Loaded(wire.EMBEDDING, OLD)],
        ),
    ),
    "backend overridden by the engine": (
        {**SMOL, "backend": "vllm"},
        FakeEngine(models=[SMOLLM], override_backend="llama.cpp"),
    ),
    "stored config drifted, runner idle, preload": (
        {**SMOL, "preload": True},
        FakeEngine(
            models=[SMOLLM],
            configs={("llama.cpp", SMOLLM.id, wire.COMPLETION): OLD},
            runners=[Loaded(wire.COMPLETION, OLD)],
        ),
    ),
    "stored config drifted, runner busy, preload": (
        {**SMOL, "preload": True},
        FakeEngine(
            models=[SMOLLM],
            configs={("llama.cpp", SMOLLM.id, wire.COMPLETION): OLD},
            runners=[Loaded(wire.COMPLETION, OLD, in_use=True)],
        ),
    ),
    "stored config drifted, runner busy": (
        SMOL,
        FakeEngine(
            models=[SMOLLM],
            configs={("llama.cpp", SMOLLM.id, wire.COMPLETION): OLD},
            runners=[Loaded(wire.COMPLETION, OLD, in_use=True)],
        ),
    ),
}


def planned(engine: FakeEngine, model: LocalModel) -> tuple[list[str], str | None]:
    """What `localmodel plan` prints, as the kinds of its steps and the reason it is blocked with."""
    [result] = asyncio.run(plan_models(engine, [model], engine.observation()))  # type: ignore[arg-type]  # FakeEngine: the client methods used
    kinds = [step.text.removeprefix("then ").split()[0] for step in result.steps]
    return kinds, result.blocked.split(":")[0] if result.blocked else None


def applied(engine: FakeEngine, model: LocalModel) -> tuple[list[str], str]:
    """What one pass of `localmodel apply` does: the engine calls that change something, and the reason."""
    reconciler = EngineReconciler("fake", engine)  # type: ignore[arg-type]  # FakeEngine: the client methods used
    outcome = asyncio.run(reconciler.reconcile("m", model, engine.observation()))
    return engine.calls, outcome.status.reason.value


@pytest.mark.parametrize("case", CASES)
def test_plan_reports_what_apply_does(case: str) -> None:
    spec, engine = CASES[case]
    model = localmodel(**spec)
    plan_kinds, plan_blocked = planned(engine, model)
    assert engine.calls == []  # plan changes nothing
    apply_calls, apply_reason = applied(engine, model)
    assert plan_kinds == apply_calls
    if plan_blocked is not None:
        assert plan_blocked == apply_reason
