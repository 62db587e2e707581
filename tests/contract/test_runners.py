"""Runners over HTTP: preload, ps, the live-runner view (`/engines/requests`) and unload.

See docs/engine-contract.md §4.3, §6.5, §6.6 and §8.5.
"""

from __future__ import annotations

import pytest

from controller.engine import capabilities as caps
from controller.engine.compare import config_differences
from controller.engine.errors import BackendNotInstalled, LoadFailed, NotFound
from tests.contract.conftest import Engine


async def test_preload_starts_a_runner_with_the_stored_config(engine: Engine) -> None:
    body = {"model": engine.model, "context-size": 4096, "keep_alive": "10m"}
    await engine.client.configure(body)
    await engine.client.preload(engine.model)  # v1.0.10 ignores X-Preload-Only: a real (empty) chat completion
    runner = await engine.settled_runner(engine.model)  # loaded, and not left in use
    kept = engine.has(caps.KEEP_ALIVE)  # v1.0.10: neither the stored config nor ps has a keep_alive
    assert (runner.backend, runner.mode, runner.keep_alive) == ("llama.cpp", "completion", "10m0s" if kept else None)
    model = await engine.client.get_model(engine.model)
    (live,) = await engine.client.runner_configs(engine.model)
    assert live.model_id == model.id
    assert config_differences(body, live.config) == ([] if kept else ["keep_alive: want 10m, engine has unset"])


async def test_a_runner_without_a_stored_config_uses_the_packaged_context_size(engine: Engine) -> None:
    await engine.client.preload(engine.model)
    model = await engine.client.get_model(engine.model)
    (live,) = await engine.client.runner_configs(engine.model)
    # v1.0.10 reports {}: llama.cpp then falls back to the packaged size itself.
    assert live.config == ({"context-size": model.context_size} if engine.has(caps.PACKAGED_CONTEXT) else {})


async def test_a_runner_started_with_an_empty_stored_config_reports_it(engine: Engine) -> None:
    await engine.client.configure({"model": engine.model})
    await engine.client.preload(engine.model)
    assert [live.config for live in await engine.client.runner_configs(engine.model)] == [{}]


async def test_preload_of_an_unknown_model_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        await engine.client.preload("ai/no-such-model:1B")


async def test_preload_on_a_backend_that_cannot_be_installed_is_not_retryable(engine: Engine) -> None:
    with pytest.raises(BackendNotInstalled) as caught:
        await engine.client.preload(engine.model, backend="mlx")
    assert caught.value.message == "backend installation failed: MLX is only available on macOS ARM64"
    assert (caught.value.status, caught.value.retryable) == (503, False)


async def test_out_of_range_gpu_memory_is_accepted_then_fails_at_load(engine: Engine) -> None:
    vllm_model = engine.needs_vllm()
    await engine.client.configure({"model": vllm_model, "vllm": {"gpu-memory-utilization": 1.5}}, backend="vllm")
    with pytest.raises(LoadFailed) as caught:
        await engine.client.preload(vllm_model, backend="vllm")
    assert "gpu-memory-utilization must be between 0.0 and 1.0" in caught.value.message
    assert caught.value.status == 500


async def test_runner_loading_during_configure_keeps_the_old_config(engine: Engine) -> None:
    engine.needs(caps.LOADING_STATE)
    model = await engine.client.get_model(engine.model)
    assert model.context_size not in (None, 2048)
    await engine.holds.loading(engine.model)  # starts with no stored config: the packaged context size
    wanted = {"model": engine.model, "context-size": 2048}
    await engine.client.configure(wanted)  # 202: a loading runner is not looked at
    await engine.holds.loading(engine.model, False)
    stored = await engine.client.stored_configs(engine.model)
    assert [config_differences(wanted, e.config) for e in stored] == [[]]
    (live,) = await engine.client.runner_configs(engine.model)
    assert config_differences(wanted, live.config) == [f"context-size: want 2048, engine has {model.context_size}"]


async def test_unload_all_evicts_runners_and_forgets_configs(engine: Engine) -> None:
    await engine.client.configure({"model": engine.model, "context-size": 4096})
    await engine.client.preload(engine.model)
    assert await engine.client.unload(all=True) == 1
    assert await engine.client.ps() == []
    assert await engine.client.stored_configs() == []
    assert await engine.client.runner_configs() == []


async def test_unload_models_on_a_backend_forgets_only_their_configs(engine: Engine) -> None:
    await engine.client.configure({"model": engine.model, "context-size": 4096})
    await engine.client.configure({"model": engine.draft_model, "context-size": 2048})
    await engine.client.preload(engine.model)
    assert await engine.client.unload(models=[engine.model], backend="llama.cpp") == 1
    assert await engine.client.stored_configs(engine.model) == []
    assert [e.config for e in await engine.client.stored_configs(engine.draft_model)] == [{"context-size": 2048}]


async def test_unload_models_without_a_backend_keeps_the_configs(engine: Engine) -> None:
    await engine.client.configure({"model": engine.model, "context-size": 4096})
    await engine.client.preload(engine.model)
    assert await engine.client.unload(models=[engine.model]) == 1
    assert await engine.client.ps() == []
    assert [e.config for e in await engine.client.stored_configs(engine.model)] == [{"context-size": 4096}]


async def test_unload_leaves_busy_runners(engine: Engine) -> None:
    await engine.client.preload(engine.model)
    await engine.holds.busy(engine.model)
    assert await engine.client.unload(all=True) == 0
    (runner,) = await engine.client.ps()
    assert runner.in_use
    assert runner.last_used is None
