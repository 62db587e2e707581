"""plan_model: spec + observation in, next actions out (pure, table-driven)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.backoff import BACKOFF_CAP_SECONDS, backoff_delay
from controller.engine.types import ModelInfo, RunnerInfo, StoredConfig
from controller.plan import (
    CheckLiveRunner,
    Configure,
    Evict,
    Observation,
    Preload,
    Pull,
    effective_mode,
    find_conflicts,
    plan_model,
)
from controller.spec import validate_spec
from controller.status import Reason

SMOLLM = ModelInfo(
    id="sha256:aaa",
    tags=("docker.io/ai/smollm2:latest", "docker.io/ai/smollm2:360M-Q4_K_M"),
    format="gguf",
    context_size=8192,
)
DRAFT = ModelInfo(id="sha256:ddd", tags=("docker.io/ai/smollm2:135M-Q4_0",), format="gguf", context_size=8192)
VLLM_MODEL = ModelInfo(
    id="sha256:vvv", tags=("docker.io/ai/smollm2-vllm:latest",), format="safetensors", context_size=8192
)


def spec(**fields):
    return validate_spec({"model": "ai/smollm2", **fields}, "test")


def stored(config, model=SMOLLM, backend="llama.cpp", mode="completion"):
    return StoredConfig(backend=backend, model=model.tags[0], model_id=model.id, mode=mode, config=config)


def runner(model="ai/smollm2", backend="llama.cpp", mode="completion", in_use=False, loading=False):
    return RunnerInfo(
        backend=backend, model=model, mode=mode, in_use=in_use, loading=loading, keep_alive=None, last_used=None
    )


def obs(models=(SMOLLM,), configs=(), runners=()):
    return Observation("e", tuple(models), tuple(configs), tuple(runners))


def test_find_model_matches_every_spelling_of_a_tag():
    observation = Observation("e", (SMOLLM,))
    for ref in (
        "ai/smollm2",
        "smollm2",
        "ai/smollm2:latest",
        "docker.io/ai/smollm2:latest",
        "AI/SmolLM2:360M-Q4_K_M",
        "sha256:aaa",
    ):
        assert observation.find_model(ref) is SMOLLM, ref
    assert observation.find_model("ai/smollm2:135M-Q4_0") is None


def test_find_model_takes_the_first_model_that_carries_a_tag():
    other = replace(SMOLLM, id="sha256:bbb")
    assert Observation("e", (SMOLLM, other)).find_model("ai/smollm2") is SMOLLM
    assert Observation("e", (other, SMOLLM)).find_model("ai/smollm2") is other


@pytest.mark.parametrize(
    ("fields", "models", "expected"),
    [
        ({}, (), [Pull("ai/smollm2", "model not in the engine's store")]),
        ({"pullPolicy": "Always"}, (SMOLLM,), [Pull("ai/smollm2", "pullPolicy is Always")]),
        (
            {"speculative": {"draftModel": "ai/smollm2:135M-Q4_0"}},
            (SMOLLM,),
            [Pull("ai/smollm2:135M-Q4_0", "draft model not in the engine's store")],
        ),
        (
            {"speculative": {"draftModel": "ai/smollm2:135M-Q4_0"}},
            (),
            [
                Pull("ai/smollm2", "model not in the engine's store"),
                Pull("ai/smollm2:135M-Q4_0", "draft model not in the engine's store"),
            ],
        ),
    ],
)
def test_pulls_come_first(fields, models, expected):
    plan = plan_model(spec(**fields), obs(models=models))
    assert list(plan.actions) == expected
    assert plan.request is None  # nothing is configured before the pull: it would never be used


def test_always_pulls_once_per_spec():
    plan = plan_model(spec(pullPolicy="Always"), obs(), pulled=frozenset({"ai/smollm2"}))
    assert [type(a) for a in plan.actions] == [Configure]


def test_pull_policy_never_blocks_with_the_fix():
    plan = plan_model(spec(pullPolicy="Never"), obs(models=()))
    assert plan.blocked is not None
    assert plan.blocked.reason is Reason.MODEL_NOT_PRESENT
    assert "docker model pull ai/smollm2" in plan.blocked.message
    assert not plan.blocked.retryable


def test_pulled_but_still_absent_is_not_found():
    plan = plan_model(spec(), obs(models=()), pulled=frozenset({"ai/smollm2"}))
    assert plan.blocked is not None
    assert plan.blocked.reason is Reason.MODEL_NOT_FOUND


def test_missing_config_is_configured_on_the_backend_of_the_format():
    plan = plan_model(spec(contextSize=4096), obs())
    (action,) = plan.actions
    assert isinstance(action, Configure)
    assert action.why == "missing"
    assert action.request.path == "/engines/llama.cpp/_configure"
    assert action.request.body == {"model": "ai/smollm2", "context-size": 4096}


def test_safetensors_model_is_configured_on_vllm():
    s = validate_spec({"model": "ai/smollm2-vllm", "vllm": {"gpuMemoryUtilization": 0.5}}, "v")
    plan = plan_model(s, obs(models=(VLLM_MODEL,)))
    (action,) = plan.actions
    assert action.request.path == "/engines/vllm/_configure"
    assert action.request.body["vllm"] == {"gpu-memory-utilization": 0.5}


def test_matching_config_needs_nothing():
    plan = plan_model(
        spec(contextSize=4096, keepAlive="10m"), obs(configs=[stored({"context-size": 4096, "keep_alive": "10m0s"})])
    )
    assert plan.up_to_date
    assert plan.stored is not None


def test_config_of_another_mode_or_backend_does_not_count():
    for entry in (stored({"context-size": 4096}, mode="embedding"), stored({"context-size": 4096}, backend="vllm")):
        (action,) = plan_model(spec(contextSize=4096), obs(configs=[entry])).actions
        assert isinstance(action, Configure)
        assert action.why == "missing"


def test_drift_lists_the_differences():
    plan = plan_model(spec(contextSize=4096), obs(configs=[stored({"context-size": 2048})]))
    (action,) = plan.actions
    assert isinstance(action, Configure)
    assert action.why == "drift"
    assert any("context-size" in d for d in action.differences)


def test_loaded_runner_is_checked_once_then_trusted():
    o = obs(configs=[stored({"context-size": 4096})], runners=[runner()])
    assert plan_model(spec(contextSize=4096), o).actions == (CheckLiveRunner("ai/smollm2"),)
    ok = plan_model(spec(contextSize=4096), o, live_checked=True, live_config={"context-size": 4096})
    assert ok.up_to_date


def test_stale_idle_runner_is_evicted_and_reloaded_when_preload():
    o = obs(configs=[stored({"context-size": 4096})], runners=[runner()])
    plan = plan_model(spec(contextSize=4096, preload=True), o, live_checked=True, live_config={"context-size": 8192})
    assert [type(a) for a in plan.actions] == [Evict, Preload]


def test_stale_busy_runner_is_a_retryable_block():
    o = obs(configs=[stored({"context-size": 4096})], runners=[runner(in_use=True)])
    plan = plan_model(spec(contextSize=4096), o, live_checked=True, live_config={"context-size": 8192})
    assert plan.blocked is not None
    assert plan.blocked.retryable
    assert plan.blocked.reason is Reason.RUNNER_STALE


def test_loading_runner_is_not_checked_yet():
    o = obs(configs=[stored({"context-size": 4096})], runners=[runner(loading=True)])
    assert plan_model(spec(contextSize=4096), o).up_to_date


def test_preload_after_configure_only_unless_keep_alive_forever():
    o = obs(configs=[stored({})])
    assert plan_model(spec(preload=True), o).up_to_date
    assert plan_model(spec(preload=True), o, configured_now=True).actions == (Preload("ai/smollm2", "llama.cpp"),)
    o = obs(configs=[stored({"keep_alive": "-1"})])
    assert plan_model(spec(preload=True, keepAlive="-1"), o).actions == (Preload("ai/smollm2", "llama.cpp"),)


def test_preload_after_configure_waits_for_a_runner_that_is_still_loading():
    o = obs(configs=[stored({})], runners=[runner(loading=True)])
    assert plan_model(spec(preload=True), o, configured_now=True).actions == (Preload("ai/smollm2", "llama.cpp"),)


def test_flags_for_a_flagless_backend_stall():
    s = validate_spec({"model": "ai/smollm2-vllm", "runtimeFlags": ["--threads", "4"]}, "x")
    mlx_model = ModelInfo(id="sha256:vvv", tags=("docker.io/ai/smollm2-vllm:latest",), format="dduf", context_size=None)
    plan = plan_model(s, obs(models=(mlx_model,)))
    assert plan.blocked is not None
    assert plan.blocked.reason is Reason.BACKEND_MISMATCH


def test_effective_mode_follows_the_engine():
    assert effective_mode(spec()) == "completion"
    assert effective_mode(spec(runtimeFlags=["--embeddings"])) == "embedding"
    assert effective_mode(spec(rawRuntimeFlags="--embeddings")) == "embedding"
    assert effective_mode(spec(runtimeFlags=["--embeddings", "-t", "2"])) == "embedding"
    assert effective_mode(spec(runtimeFlags=["-t", "2"])) == "completion"
    assert effective_mode(spec(mode="reranking")) == "reranking"


def test_conflicts_name_the_first_owner():
    specs = [("a", spec()), ("b", spec(model="docker.io/ai/smollm2:latest")), ("c", spec(mode="embedding"))]
    conflicts = find_conflicts(specs)
    assert set(conflicts) == {"b"}
    assert conflicts["b"].startswith("a already declares")


@pytest.mark.parametrize("attempt", range(1, 15))
def test_backoff_is_capped_exponential_with_jitter(attempt):
    low, high = backoff_delay(attempt, 0.0), backoff_delay(attempt, 0.999999)
    step = min(BACKOFF_CAP_SECONDS, 2 ** (attempt - 1))
    assert low == pytest.approx(step / 2)
    assert high == pytest.approx(step, rel=1e-5)
