"""The status side of mode from use: the engine runs a model in a mode no config was declared for."""

from __future__ import annotations

import pytest

from controller.engine.types import ModelInfo, RunnerInfo, StoredConfig
from controller.plan import Observation, plan_model
from controller.spec import validate_spec

GEMMA = ModelInfo("sha256:eee", ("docker.io/ai/embeddinggemma:latest",), "gguf", 2048)


def runner(mode: str, backend: str = "llama.cpp", model: str = "ai/embeddinggemma") -> RunnerInfo:
    return RunnerInfo(backend, model, mode, in_use=False, loading=False, keep_alive=None, last_used=None)


def stored(mode: str, config: dict[str, object]) -> StoredConfig:
    return StoredConfig("llama.cpp", GEMMA.tags[0], GEMMA.id, mode, config)


def notes(declared_mode: str | None, runners: list[RunnerInfo], extra: list[StoredConfig] = ()) -> list[str]:
    fields: dict[str, object] = {"model": "ai/embeddinggemma", "contextSize": 1024}
    if declared_mode:
        fields["mode"] = declared_mode
    spec = validate_spec(fields, "gemma")
    mode = declared_mode or "completion"
    configs = (stored(mode, {"context-size": 1024}), *extra)
    plan = plan_model(spec, Observation("e", (GEMMA,), configs, tuple(runners)), live_checked=True)
    return [n for n in plan.notes if "no config is declared" in n]


def test_an_embedding_runner_without_its_own_config_is_reported_with_the_fix() -> None:
    [note] = notes(None, [runner("embedding")])
    assert "the engine runs ai/embeddinggemma in mode embedding, for which no config is declared" in note
    assert "set mode: embedding" in note


def test_a_completion_runner_of_an_embedding_declaration_is_reported() -> None:
    [note] = notes("embedding", [runner("completion")])
    assert "set mode: completion" in note
    assert "used for chat" in note


@pytest.mark.parametrize("mode", ["reranking", "image-generation"])
def test_modes_that_fall_back_to_the_completion_config_are_fine(mode: str) -> None:
    assert notes(None, [runner(mode)]) == []


def test_a_config_declared_for_the_other_mode_silences_the_note() -> None:
    assert notes(None, [runner("embedding")], [stored("embedding", {"context-size": 512})]) == []


def test_runners_of_the_declared_mode_other_models_or_backends_are_not_reported() -> None:
    assert notes(None, [runner("completion"), runner("embedding", model="ai/other"), runner("embedding", "vllm")]) == []
