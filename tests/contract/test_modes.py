"""Mode mismatch on a live engine: a model declared for chat but run for embeddings is reported with the fix."""

from __future__ import annotations

import pytest

from controller.reconcile import EngineReconciler
from controller.spec import LocalModel, validate_spec
from controller.standalone.oneshot import apply_models, plan_models
from tests.contract.conftest import Engine


def localmodel(name: str, **spec: object) -> LocalModel:
    return LocalModel(metadata={"name": name}, spec=validate_spec(spec, name))


async def test_a_runner_in_an_undeclared_mode_is_reported_in_plan_and_status(engine: Engine) -> None:
    if not engine.has("preload without inference"):
        pytest.skip("this release has no X-Preload-Only: an embedding runner is not loaded by an empty request")
    declared = localmodel("chat", model=engine.model, contextSize=2048)
    [applied], _ = await apply_models(engine.client, [declared], wait=True, timeout=30)
    assert applied.status.ready
    assert not [n for n in applied.status.notes if "no config is declared" in n]

    await engine.client.preload(engine.model, mode="embedding")  # a client embeds with it

    [applied], _ = await apply_models(engine.client, [declared], wait=True, timeout=30)
    [note] = [n for n in applied.status.notes if "no config is declared" in n]
    assert "in mode embedding" in note
    assert "set mode: embedding" in note
    observation = await EngineReconciler("local", engine.client).observe()
    [plan] = await plan_models(engine.client, [declared], observation)
    assert note in plan.notes

    embedder = localmodel("embedder", model=engine.model, mode="embedding", contextSize=1024)
    results, _ = await apply_models(engine.client, [declared, embedder], wait=True, timeout=30)
    assert all(r.status.ready for r in results)
    results, _ = await apply_models(engine.client, [declared, embedder], wait=True, timeout=30)  # the next pass
    assert not [n for r in results for n in r.status.notes if "no config is declared" in n]
