"""What the engine watch relies on, on the emulator and the real model-runner alike: an idle
keep-alive connection stays open between looks, a restart replaces it, and the probe's runner list
changes when another client's configure evicts a loaded runner."""

from __future__ import annotations

import asyncio

from controller.engine.watch import runner_signature


async def test_the_probe_keeps_its_connection_until_the_engine_restarts(engine) -> None:  # type: ignore[no-untyped-def]
    watch_client = engine.client.sibling()
    try:
        _, first, _ = await watch_client.ps_probe()
        await asyncio.sleep(1.5)  # idle between two looks
        _, second, _ = await watch_client.ps_probe()
        assert first is not None
        assert second is first
        await engine.restart()
        _, after, _ = await watch_client.ps_probe()
        assert after is not first
    finally:
        await watch_client.aclose()


async def test_an_overwrite_of_a_loaded_model_changes_the_probe(engine) -> None:  # type: ignore[no-untyped-def]
    await engine.client.configure({"model": engine.model, "context-size": 2048})
    await engine.client.preload(engine.model)
    before = runner_signature(await engine.client.ps())
    await engine.client.configure({"model": engine.model, "context-size": 4096})  # evicts the idle runner
    # ...and loads it again in the background: absent, loading, or loaded at another time
    assert runner_signature(await engine.client.ps()) != before
