"""docker-agent files as docker-agent reads them: client keys are notes, unknown keys warnings, modes from use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.cli import main
from controller.documents import LoadResult, load_file, load_text

FIXTURES = Path(__file__).parent / "fixtures" / "docker-agent"


def specs(result: LoadResult) -> dict[str, dict[str, Any]]:
    return {m.name: m.spec.model_dump(by_alias=True, exclude_defaults=True) for m in result.models}


def test_rag_embedder_and_reranker_get_their_modes() -> None:
    result = load_file(FIXTURES / "rag-dmr.yaml")
    assert result.errors == []
    assert result.warnings == []
    assert specs(result) == {
        "dmr-embedder": {"model": "ai/embeddinggemma", "mode": "embedding", "runtimeFlags": ["-ub", "1024"]},
        "dmr-rerank": {"model": "hf.co/ggml-org/qwen3-reranker-0.6b-q8_0-gguf", "mode": "reranking"},
        "qwen3-14b": {"model": "ai/qwen3:14B"},
    }


def test_a_model_used_for_chat_and_embeddings_gets_both_configs() -> None:
    result = load_file(FIXTURES / "chat-and-embeddings.yaml")
    assert result.errors == []
    assert result.warnings == []
    assert specs(result) == {
        "gemma": {"model": "ai/gemma3:4B", "contextSize": 16384, "keepAlive": "30m"},
        "gemma-embedding": {"model": "ai/gemma3:4B", "mode": "embedding", "contextSize": 16384, "keepAlive": "30m"},
        "qwen3-14b": {"model": "ai/qwen3:14B"},
        "smollm2": {"model": "ai/smollm2"},  # a fallback model and a semantic strategy's chat model: one config
        "embeddinggemma": {"model": "ai/embeddinggemma", "mode": "embedding"},
        "qwen3-reranker-0.6b-q8-0-gguf": {"model": "hf.co/ggml-org/Qwen3-Reranker-0.6B-Q8_0-GGUF", "mode": "reranking"},
    }
    sources = {m.name: result.source_of(m) for m in result.models}
    assert sources["embeddinggemma"] is not None
    assert sources["embeddinggemma"].line == 21  # where the file uses it


def test_every_provider_opt_docker_agent_knows_is_read_and_nothing_is_refused() -> None:
    result = load_file(FIXTURES / "every-provider-opt.yaml")
    assert result.errors == []
    assert result.warnings == []
    assert specs(result)["local"] == {
        "model": "ai/qwen3-vllm",
        "mode": "completion",
        "contextSize": 32768,
        "runtimeFlags": ["--max-num-seqs", "8"],
        "keepAlive": "1h",
        "thinkingBudget": "medium",
        "vllm": {
            "gpuMemoryUtilization": 0.85,
            "hfOverrides": {
                "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
            },
        },
        "speculative": {"draftModel": "ai/qwen3:0.6B-F16", "numTokens": 8, "acceptanceRate": 0.7},
    }
    assert specs(result)["raw"] == {
        "model": "ai/smollm2",
        "rawRuntimeFlags": "--threads 4 --temp 0.7",
        "keepAlive": "-1",
    }
    noted = " | ".join(result.notes)
    for key in ("supports_images", "supports_pdf", "unload_api", "extra_body", "top_k", "min_p", "seed", "api_type"):
        assert f"provider_opts.{key}: {key} is a docker-agent client setting" in noted
        assert "not an engine setting" in noted
    assert "max_tokens is a per-request limit" in noted
    assert "description, temperature, top_p, frequency_penalty, presence_penalty, parallel_tool_calls" in noted


def test_extra_body_is_a_note_and_the_file_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's case: docker-agent merges extra_body into every chat request; the file was refused."""
    path = tmp_path / "agent.yaml"
    path.write_text(
        "models:\n  qwen:\n    provider: dmr\n    model: ai/qwen3\n    provider_opts:\n"
        "      context_size: 8192\n      extra_body: {chat_template_kwargs: {enable_thinking: false}}\n"
    )
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "extra_body is a docker-agent client setting (merged by docker-agent into every request body)" in err
    assert "1 LocalModel valid" in err


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        ("provider_opts: {context_sise: 4096}", "models.m.provider_opts.context_sise", "(did you mean context_size?)"),
        ("provider_opts: {keepalive: 5m}", "models.m.provider_opts.keepalive", "(did you mean keep_alive?)"),
        (
            "provider_opts: {supports_image: true}",
            "models.m.provider_opts.supports_image",
            "did you mean supports_images?",
        ),
        ("provider_opts: {temperature: 0.7}", "models.m.provider_opts.temperature", "engine settings: context_size"),
        ("max_token: 5", "models.m.max_token", "(did you mean max_tokens?)"),
        ("thinking_budegt: high", "models.m.thinking_budegt", "(did you mean thinking_budget?)"),
    ],
)
def test_a_key_nobody_reads_is_a_warning_with_a_hint(entry: str, path: str, message: str) -> None:
    result = load_text(f"models:\n  m:\n    provider: dmr\n    model: ai/smollm2\n    {entry}\n", "agent.yaml")
    assert result.errors == []
    assert [m.name for m in result.models] == ["m"]  # the file is not refused
    [warning] = result.warnings
    assert warning.startswith(f"agent.yaml:5: {path}: ")
    assert message in warning


def test_validate_strict_fails_on_an_unread_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "models:\n  m:\n    provider: dmr\n    model: ai/smollm2\n    provider_opts: {context_sise: 4096}\n"
    )
    assert main(["validate", str(path)]) == 0
    assert "warning: " in capsys.readouterr().err
    assert main(["validate", "--strict", str(path)]) == 1
    out = capsys.readouterr().out
    assert "context_sise" in out
    assert "did you mean context_size?" in out


def test_invalid_engine_settings_stay_errors() -> None:
    result = load_text(
        "models:\n  m:\n    provider: dmr\n    model: ai/smollm2\n    provider_opts: {context_size: abc}\n", "a.yaml"
    )
    assert result.models == []
    assert [(e.path, e.line) for e in result.errors] == [("models.m.provider_opts.context_size", 5)]


def test_an_explicit_mode_wins_over_the_use() -> None:
    source = (
        "models:\n  e: {provider: dmr, model: ai/embeddinggemma, provider_opts: {mode: completion}}\n"
        "rag:\n  docs:\n    strategies: [{type: chunked-embeddings, embedding_model: e}]\n"
    )
    result = load_text(source, "agent.yaml")
    assert specs(result) == {"e": {"model": "ai/embeddinggemma", "mode": "completion"}}
    assert any("only mode completion is configured" in note for note in result.notes)


def test_an_unused_dmr_entry_is_configured_for_chat_with_a_note() -> None:
    source = "models:\n  spare: {provider: dmr, model: ai/smollm2}\nagents:\n  root: {model: dmr/ai/qwen3}\n"
    result = load_text(source, "agent.yaml")
    assert specs(result) == {"spare": {"model": "ai/smollm2"}, "qwen3": {"model": "ai/qwen3"}}
    assert any("not used by any agent or RAG source" in note for note in result.notes)


def test_an_inline_ref_to_a_declared_model_in_another_mode_is_a_second_config() -> None:
    source = (
        "models:\n  chat: {provider: dmr, model: ai/qwen3, provider_opts: {context_size: 8192}}\n"
        "agents:\n  root: {model: chat}\n"
        "rag:\n  docs:\n    strategies: [{type: chunked-embeddings, embedding_model: dmr/ai/qwen3}]\n"
    )
    assert specs(load_text(source)) == {
        "chat": {"model": "ai/qwen3", "contextSize": 8192},
        "qwen3-embedding": {"model": "ai/qwen3", "mode": "embedding"},
    }


def test_auto_embedding_model_is_not_a_model() -> None:
    source = "rag:\n  docs:\n    strategies: [{type: chunked-embeddings, embedding_model: auto}]\n"
    result = load_text(source)
    assert (result.models, result.errors) == ([], [])


def test_the_daemon_reports_warnings_with_the_file(tmp_path: Path) -> None:
    from controller.standalone.files import ModelFiles

    (tmp_path / "agent.yaml").write_text(
        "models:\n  m:\n    provider: dmr\n    model: ai/smollm2\n    provider_opts: {context_sise: 4096}\n"
    )
    files = ModelFiles(tmp_path, grace=0.5)
    files.refresh(0.0)
    assert list(files.desired) == ["m"]
    [entry] = files.report(0.0)
    notes = entry["notes"]
    assert isinstance(notes, list)
    assert any(n.startswith("warning: ") and "did you mean context_size?" in n for n in notes)
