"""Model store over HTTP: pull streams (success, cached, failures before and during the stream), inspect, delete."""

from __future__ import annotations

import pytest

from controller.engine.errors import BadRequest, DeleteConflict, NotFound, PullFailed
from controller.engine.types import PullProgress
from controller.refs import same_model
from tests.contract.conftest import Engine


async def test_pull_streams_progress_then_success(engine: Engine) -> None:
    seen: list[PullProgress] = []
    result = await engine.client.pull(engine.fresh_model, on_progress=seen.append)
    assert (result.message, result.cached) == ("Model pulled successfully", False)
    progress = [line for line in seen if line.type == "progress"]
    assert progress
    assert all(line.total and line.layer for line in progress)  # v1.0.10 spells the layer's keys ID, Current
    assert seen[-1].type == "success"
    pulled = await engine.client.get_model(engine.fresh_model)
    assert pulled.id.startswith("sha256:")
    assert any(same_model(tag, engine.fresh_model) for tag in pulled.tags)


async def test_pull_of_a_stored_model_is_cached(engine: Engine) -> None:
    result = await engine.client.pull(engine.model)
    assert result.cached
    assert result.message.startswith("Using cached model")


async def test_pull_of_an_unknown_model_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound) as caught:
        await engine.client.pull("ai/no-such-model:1B")
    assert caught.value.status == 404
    assert not caught.value.retryable


async def test_pull_of_an_invalid_reference_is_a_bad_request(engine: Engine) -> None:
    with pytest.raises(BadRequest, match="Invalid model reference"):
        await engine.client.pull("Not A Reference!!")


@pytest.mark.emulator_only("makes the registry fail in the middle of a download")
async def test_pull_failing_mid_stream_raises_the_engines_message(engine: Engine) -> None:
    await engine.ctl.fail_next_pull("failed to download layer: unexpected EOF")
    seen: list[PullProgress] = []
    with pytest.raises(PullFailed) as caught:
        await engine.client.pull(engine.fresh_model, on_progress=seen.append)
    assert "failed to download layer: unexpected EOF" in caught.value.message
    assert caught.value.retryable
    assert [line.type for line in seen][-1] == "error"
    assert "progress" in {line.type for line in seen}
    with pytest.raises(NotFound):
        await engine.client.get_model(engine.fresh_model)


async def test_list_and_inspect(engine: Engine) -> None:
    models = await engine.client.list_models()
    model = await engine.client.get_model(engine.model)
    assert model in models
    assert model.format == "gguf"
    assert any(same_model(tag, engine.model) for tag in model.tags)
    by_id = await engine.client.get_model(model.id)
    assert by_id == model


async def test_inspect_unknown_model_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        await engine.client.get_model("ai/no-such-model:1B")


async def test_delete_model(engine: Engine) -> None:
    await engine.client.delete_model(engine.draft_model)
    with pytest.raises(NotFound):
        await engine.client.get_model(engine.draft_model)
    with pytest.raises(NotFound):
        await engine.client.delete_model(engine.draft_model)


async def test_delete_of_a_model_with_several_tags_needs_force(engine: Engine) -> None:
    if engine.second_tag is None:
        pytest.skip(f"the {engine.kind} engine's registry has no second tag of {engine.model}")
    await engine.client.pull(engine.second_tag)
    model = await engine.client.get_model(engine.model)
    assert len(model.tags) == 2
    with pytest.raises(DeleteConflict, match="delete with force") as caught:
        await engine.client.delete_model(model.id)
    assert caught.value.status == 409
    assert not caught.value.retryable
    await engine.client.delete_model(model.id, force=True)
    with pytest.raises(NotFound):
        await engine.client.get_model(engine.second_tag)
