"""The reconcile core (controller/reconcile.py) against an engine over real HTTP on loopback.

Each test drives `EngineReconciler` the way every front-end does (observe once, reconcile, look at
the outcome) and checks what the engine holds afterwards through the client, not through the
reconciler's own account of it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from controller.engine import capabilities as caps
from controller.engine.client import EngineClient
from controller.engine.compare import config_differences
from controller.reconcile import EngineReconciler, Outcome
from controller.refs import same_model
from controller.spec import LocalModel, parse_localmodel
from controller.status import Phase, Reason
from tests.contract.conftest import Engine


def localmodel(name: str = "m", **spec: Any) -> LocalModel:
    return parse_localmodel(
        {
            "apiVersion": "localmodel.io/v1alpha1",
            "kind": "LocalModel",
            "metadata": {"name": name, "generation": 1},
            "spec": spec,
        }
    )


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.progress: list[Any] = []

    def event(self, key: str, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


def reconciler_for(engine: Engine, recorder: Recorder | None = None, **options: Any) -> EngineReconciler:
    recorder = recorder or Recorder()
    return EngineReconciler(
        engine.kind,
        engine.client,
        on_event=recorder.event,
        on_progress=lambda key, status: recorder.progress.append(status),
        jitter=lambda: 0.0,
        **options,
    )


async def run(reconciler: EngineReconciler, model: LocalModel) -> Outcome:
    return await reconciler.reconcile(model.name, model, await reconciler.observe())


async def stored_config(engine: Engine, ref: str) -> dict[str, Any] | None:
    entries = await engine.client.stored_configs(model=ref)
    return entries[0].config if entries else None


async def test_pulls_configures_and_verifies_a_new_model(engine: Engine) -> None:
    recorder = Recorder()
    model = localmodel(model=engine.fresh_model, contextSize=4096, keepAlive="10m")
    outcome = await run(reconciler_for(engine, recorder), model)
    if not engine.has(caps.KEEP_ALIVE):
        # v1.0.10 drops keep_alive: the rest is applied and verified, then a permanent EngineUnsupported.
        assert outcome.status.stalled, outcome.status
        assert outcome.status.reason is Reason.ENGINE_UNSUPPORTED
        assert outcome.status.message.startswith("keepAlive needs model-runner >= v1.0.15; this engine is older")
        assert outcome.status.applied_config == {"context-size": 4096}
        assert outcome.requeue_after is None
        assert recorder.reasons()[:3] == ["Pulled", "Applied", "EngineUnsupported"]
        assert await stored_config(engine, engine.fresh_model) == {"context-size": 4096}
        before = engine.client.requests_sent
        again = await run(reconciler_for(engine, recorder), model)  # a new connection: detected again
        assert again.status.reason is Reason.ENGINE_UNSUPPORTED
        assert engine.client.requests_sent - before == 6  # observe (3) + /version + 2 probes; nothing sent
        return
    assert outcome.status.ready, outcome.status
    assert outcome.status.phase is Phase.READY, outcome.status
    assert outcome.status.reason is Reason.APPLIED
    assert outcome.status.backend == "llama.cpp"
    assert outcome.status.applied_config == {"context-size": 4096, "keep_alive": "10m0s"}
    assert recorder.reasons()[:2] == ["Pulled", "Applied"]
    assert recorder.progress
    assert recorder.progress[-1].phase is Phase.PULLING
    assert (
        config_differences({"context-size": 4096, "keep_alive": "10m"}, await stored_config(engine, engine.fresh_model))
        == []
    )


async def test_a_model_removed_from_the_store_is_pulled_again(engine: Engine) -> None:
    recorder = Recorder()
    reconciler = reconciler_for(engine, recorder)
    model = localmodel(model=engine.fresh_model, contextSize=4096)
    assert (await run(reconciler, model)).status.ready
    await engine.client.delete_model(engine.fresh_model, force=True)  # `docker model rm`, or an ephemeral store
    outcome = await run(reconciler, model)
    assert outcome.status.ready, outcome.status
    assert recorder.reasons().count("Pulled") == 2


async def test_an_idle_pass_costs_only_the_observation(engine: Engine) -> None:
    reconciler = reconciler_for(engine)
    model = localmodel(model=engine.model, contextSize=4096)
    await run(reconciler, model)
    if engine.has(caps.PRELOAD_ONLY):  # v1.0.10 starts no background load after a configure
        await engine.wait_loaded(engine.model)  # the background load that the configure started
    await run(reconciler, model)  # reads the loaded runner's own config once
    before = engine.client.requests_sent
    outcome = await run(reconciler, model)
    assert outcome.status.ready
    assert outcome.requeue_after is None
    assert engine.client.requests_sent - before == 3  # GET /models, /engines/_configure, /engines/ps


async def test_engine_restart_is_repaired_on_the_next_pass(engine: Engine) -> None:
    recorder = Recorder()
    reconciler = reconciler_for(engine, recorder)
    model = localmodel(model=engine.model, contextSize=4096)
    await run(reconciler, model)
    await engine.restart()
    assert await stored_config(engine, engine.model) is None
    outcome = await run(reconciler, model)
    assert outcome.status.ready
    assert outcome.status.reason is Reason.DRIFT_REPAIRED
    assert await stored_config(engine, engine.model) == {"context-size": 4096}
    (message,) = [m for _, reason, m in recorder.events if reason == "DriftRepaired"]
    assert "no longer had it" in message
    again = await run(reconciler, model)  # an idle pass: the same status, so front-ends write nothing
    assert (again.status.reason, again.status.message) == (outcome.status.reason, outcome.status.message)
    edited = await run(reconciler, localmodel(model=engine.model, contextSize=8192))
    assert edited.status.ready
    assert edited.status.reason is Reason.APPLIED
    assert recorder.reasons()[-1] == "Applied"


async def test_a_config_overwritten_by_another_client_is_reapplied(engine: Engine) -> None:
    recorder = Recorder()
    reconciler = reconciler_for(engine, recorder)
    model = localmodel(model=engine.model, contextSize=4096, runtimeFlags=["--threads", "2"])
    await run(reconciler, model)
    await engine.client.configure({"model": engine.model, "context-size": 2048})  # an Ollama-style overwrite
    outcome = await run(reconciler, model)
    assert outcome.status.reason is Reason.DRIFT_REPAIRED
    (message,) = [m for _, reason, m in recorder.events if reason == "DriftRepaired"]
    assert "context-size" in message
    assert "runtime-flags" in message
    assert await stored_config(engine, engine.model) == {"context-size": 4096, "runtime-flags": ["--threads", "2"]}


async def test_a_rejected_flag_stalls_without_resending(engine: Engine) -> None:
    recorder = Recorder()
    reconciler = reconciler_for(engine, recorder)
    if not engine.has(caps.FLAG_ALLOWLIST):  # v1.0.10 stores any flag without a slash: Ready
        assert (await run(reconciler, localmodel(model=engine.model, runtimeFlags=["--no-such-flag"]))).status.ready
        reconciler = reconciler_for(engine, recorder)
        engine.needs(caps.FLAG_ALLOWLIST)
    model = localmodel(model=engine.model, runtimeFlags=["--no-such-flag"])
    outcome = await run(reconciler, model)
    assert outcome.status.stalled
    assert outcome.status.reason is Reason.FLAG_REJECTED
    assert 'runtime flag "--no-such-flag" is not allowed' in outcome.status.message
    assert outcome.requeue_after is None
    assert recorder.events[-1][:2] == ("Warning", "FlagRejected")
    before = engine.client.requests_sent
    again = await reconciler.reconcile(model.name, model, await reconciler.observe())
    assert again.status.stalled
    assert engine.client.requests_sent - before == 3
    fixed = localmodel(model=engine.model, runtimeFlags=["--threads", "2"])
    assert (await run(reconciler, fixed)).status.ready


async def test_pull_policy_never_waits_for_the_model(engine: Engine) -> None:
    recorder = Recorder()
    reconciler = reconciler_for(engine, recorder)
    waiting = localmodel(model=engine.fresh_model, pullPolicy="Never")
    for _ in range(3):  # re-checked on every pass, reported once
        outcome = await run(reconciler, waiting)
        assert outcome.status.stalled
        assert outcome.status.reason is Reason.MODEL_NOT_PRESENT
    assert recorder.reasons() == ["ModelNotPresent"]
    assert (await run(reconciler_for(engine), localmodel(model=engine.model, pullPolicy="Never"))).status.ready


async def test_a_model_the_registry_does_not_have_stalls(engine: Engine) -> None:
    outcome = await run(reconciler_for(engine), localmodel(model="ai/no-such-model:1B"))
    assert not outcome.status.ready
    assert outcome.status.last_error
    assert outcome.status.reason is Reason.MODEL_NOT_FOUND
    # What Helm 4's --wait prints: the model, and the field to fix (it was "Model not found (404 from URL)").
    assert outcome.status.message.startswith("model ai/no-such-model:1B was not found in its registry"), outcome.status
    assert "check spec.model's name and tag" in outcome.status.message


async def test_speculative_decoding_pulls_the_draft_too(engine: Engine) -> None:
    recorder = Recorder()
    model = localmodel(model=engine.fresh_model, speculative={"draftModel": engine.draft_model, "numTokens": 8})
    outcome = await run(reconciler_for(engine, recorder), model)
    assert outcome.status.ready, outcome.status
    assert (await stored_config(engine, engine.fresh_model))["speculative"]["num_tokens"] == 8


async def test_vllm_model_goes_to_the_vllm_route_with_notes(engine: Engine) -> None:
    vllm_model = engine.needs_vllm()
    model = localmodel(
        model=vllm_model,
        thinkingBudget="low",
        vllm={"gpuMemoryUtilization": 0.5, "hfOverrides": {"rope_scaling": {"factor": 4.0}}},
    )
    outcome = await run(reconciler_for(engine), model)
    assert outcome.status.ready, outcome.status
    assert outcome.status.backend == "vllm", outcome.status
    assert any("thinking" in note for note in outcome.status.notes)
    (entry,) = await engine.client.stored_configs(model=vllm_model)
    assert entry.backend == "vllm"
    assert entry.config["vllm"]["gpu-memory-utilization"] == 0.5


async def test_an_embedding_model_is_preloaded_in_embedding_mode(engine: Engine) -> None:
    reconciler = reconciler_for(engine)
    model = localmodel(model=engine.fresh_model, mode="embedding", contextSize=2048, preload=True)
    outcome = await run(reconciler, model)
    assert outcome.status.ready, outcome.status
    assert outcome.status.loaded, outcome.status
    # The engine's own background load after a configure is a chat request: it may add a completion runner.
    runners = [r for r in await engine.client.ps() if same_model(r.model, engine.fresh_model)]
    assert "embedding" in [r.mode for r in runners]
    again = await run(reconciler, model)  # the live runner's config matches: no evict-and-preload loop
    assert again.status.ready, again.status
    assert again.status.loaded, again.status


async def test_a_backend_the_engine_overrides_stalls_with_the_fix(engine: Engine) -> None:
    vllm_model = engine.needs_vllm()  # safetensors: the engine stores its configs under vllm whatever the route
    reconciler = reconciler_for(engine)
    model = localmodel(model=vllm_model, backend="llama.cpp", contextSize=4096)
    outcome = await run(reconciler, model)
    assert outcome.status.stalled, outcome.status
    assert outcome.status.reason is Reason.BACKEND_MISMATCH, outcome.status
    assert "set backend: vllm" in outcome.status.message or "leave backend out" in outcome.status.message
    before = engine.client.requests_sent
    assert (await run(reconciler, model)).status.stalled
    assert engine.client.requests_sent - before == 3  # the observation only: nothing is sent again


async def test_preload_leaves_the_runner_loaded_with_the_config(engine: Engine) -> None:
    outcome = await run(reconciler_for(engine), localmodel(model=engine.model, contextSize=4096, preload=True))
    assert outcome.status.ready, outcome.status
    assert outcome.status.loaded, outcome.status
    (live,) = await engine.client.runner_configs(engine.model)
    assert live.config == {"context-size": 4096}


async def test_a_busy_runner_is_retried_with_backoff_then_applied(engine: Engine) -> None:
    reconciler = reconciler_for(engine)
    model = localmodel(model=engine.model, contextSize=4096)
    await run(reconciler, model)
    await engine.holds.busy(engine.model)
    changed = localmodel(model=engine.model, contextSize=8192)
    first = await run(reconciler, changed)
    second = await run(reconciler, changed)
    assert first.status.reason is Reason.RUNNER_BUSY
    assert not first.status.ready
    assert not first.status.stalled
    assert first.status.phase is Phase.RETRYING
    assert 0 < first.requeue_after < second.requeue_after
    assert await stored_config(engine, engine.model) == {"context-size": 4096}  # unchanged while busy
    await engine.holds.busy(engine.model, False)
    assert (await run(reconciler, changed)).status.ready
    assert await stored_config(engine, engine.model) == {"context-size": 8192}


@pytest.mark.emulator_only("fails a pull midway")
async def test_a_pull_that_fails_midway_is_retried(engine: Engine) -> None:
    reconciler = reconciler_for(engine)
    model = localmodel(model=engine.fresh_model)
    await engine.ctl.fail_next_pull("connection reset by peer")
    outcome = await run(reconciler, model)
    assert outcome.status.reason is Reason.PULL_FAILED
    assert outcome.requeue_after
    assert "connection reset by peer" in outcome.status.message
    assert (await run(reconciler, model)).status.ready


async def test_a_runner_loaded_with_an_old_config_is_evicted_and_reloaded(engine: Engine) -> None:
    engine.needs(caps.LOADING_STATE)
    recorder = Recorder()
    reconciler = reconciler_for(engine, recorder)
    await engine.client.configure({"model": engine.model, "context-size": 2048})
    await engine.wait_loaded(engine.model)
    await engine.client.unload(models=[engine.model])  # drop the background load of that configure
    await engine.holds.loading(engine.model)  # a load starts with the old config...
    model = localmodel(model=engine.model, contextSize=4096, preload=True)
    reconciling = asyncio.create_task(run(reconciler, model))  # ...its configure lands while that loads,
    while await stored_config(engine, engine.model) != {"context-size": 4096}:  # noqa: ASYNC110 polls the engine over HTTP
        await asyncio.sleep(0.01)
    (live,) = await engine.client.runner_configs(engine.model)
    assert live.config == {"context-size": 2048}  # the race of docs/engine-contract.md §8.5
    await engine.holds.loading(engine.model, False)
    outcome = await reconciling
    # The engine's own background loads after the two configures wait for the same runner and take it for
    # a moment once it is ready; a pass that sees it then finds it busy and retries soon, as for any request.
    for _ in range(3):
        if outcome.status.reason is not Reason.RUNNER_STALE:
            break
        assert outcome.requeue_after is not None, outcome.status
        await asyncio.sleep(outcome.requeue_after)
        outcome = await run(reconciler, model)
    assert outcome.status.ready, outcome.status
    assert outcome.status.loaded, outcome.status
    assert outcome.requeue_after is None, outcome.status
    assert "RunnerEvicted" in recorder.reasons()
    (live,) = await engine.client.runner_configs(engine.model)
    assert live.config == {"context-size": 4096}


async def test_unreachable_engine_backs_off() -> None:
    async with EngineClient("http://127.0.0.1:9", timeout=1.0) as client:
        reconciler = EngineReconciler("gone", client, jitter=lambda: 0.0)
        model = localmodel(model="ai/smollm2")
        delays = [(await run(reconciler, model)).requeue_after for _ in range(4)]
    assert delays == [0.5, 1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    ("policy", "config_kept", "model_kept"), [("Unload", False, True), ("Delete", False, False), ("Retain", True, True)]
)
async def test_deletion_policies(engine: Engine, policy: str, config_kept: bool, model_kept: bool) -> None:
    reconciler = reconciler_for(engine)
    model = localmodel(model=engine.fresh_model, contextSize=4096, deletionPolicy=policy, preload=True)
    assert (await run(reconciler, model)).status.ready
    result = await reconciler.finalize(model.name, model)
    assert result.done, result.message
    assert (await stored_config(engine, engine.fresh_model) is not None) == config_kept
    present = [m for m in await engine.client.list_models() if any(same_model(t, engine.fresh_model) for t in m.tags)]
    assert bool(present) == model_kept
    if policy != "Retain":
        assert not [r for r in await engine.client.ps() if same_model(r.model, engine.fresh_model)]


class CountingTransport(httpx.AsyncHTTPTransport):
    """Counts the requests sent, by method and path."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        return await super().handle_async_request(request)


async def test_passes_that_configure_at_once_share_their_reads_back(engine: Engine) -> None:
    """The operator runs one pass per LocalModel, concurrently: four objects created at once on one engine
    each configure, then read back the stored configs and the runners. Reads that start after every
    configure has been answered serve them all: fewer reads than passes, each pass still verified.
    (A read waits READ_GATHER_SECONDS, 10 ms, for others to join; here 0.5 s, so that a loaded machine's
    slower configures still join it.)"""
    transport = CountingTransport()
    client = EngineClient(engine.url, transport=transport)
    try:
        reconciler = reconciler_for(engine, read_gather=0.5)
        reconciler.client = client
        models = [
            localmodel(f"{i}", model=ref, mode=mode, contextSize=1024 + i)
            for i, (ref, mode) in enumerate(
                (ref, mode) for ref in (engine.model, engine.draft_model) for mode in ("completion", "embedding")
            )
        ]
        observation = await reconciler.observe()
        transport.sent.clear()
        outcomes = await asyncio.gather(*(reconciler.reconcile(m.name, m, observation) for m in models))
        assert all(o.status.ready for o in outcomes), [o.status for o in outcomes]
        for model, outcome in zip(models, outcomes, strict=True):
            assert outcome.status.applied_config == {"context-size": model.spec.context_size}
        assert transport.sent.count("POST /engines/llama.cpp/_configure") == len(models)
        reads = [r for r in transport.sent if r in ("GET /engines/_configure", "GET /engines/ps")]
        assert len(reads) < len(models), transport.sent
    finally:
        await client.aclose()


async def test_observations_that_start_together_detect_the_engine_release_once(engine: Engine) -> None:
    """Two passes of a node agent that has just started each observe the engine; the release is asked once."""
    transport = CountingTransport()
    client = EngineClient(engine.url, transport=transport)
    try:
        reconciler = reconciler_for(engine)
        reconciler.client = client
        first, second = await asyncio.gather(reconciler.observe(), reconciler.observe())
        assert first.error is None
        assert second.error is None
        assert first.capabilities == second.capabilities
        assert transport.sent.count("GET /version") == 1, transport.sent
    finally:
        await client.aclose()
