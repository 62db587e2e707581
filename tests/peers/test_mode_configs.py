"""The fact behind "mode from use", on the real model-runner: a config is looked up by (backend, model, mode),
and the embedding mode does not fall back to the completion config (reranking does). So a docker-agent
embedder configured in completion mode runs with none of its settings; configured in mode embedding, it
runs with them. Checked on the argv the real engine gives the (fake) llama-server."""

from __future__ import annotations

import asyncio

import pytest

from controller.documents import load_text
from controller.engine.client import EngineClient
from controller.standalone.oneshot import apply_models
from tests.support.peers import DMRServer

pytestmark = pytest.mark.peers


def runner_argv(server: DMRServer, marker: str) -> list[str]:
    """The argv of the newest runner started with `marker` (`--embeddings`, `--reranking`)."""
    started = [argv for argv in server.llama_argv() if marker in argv]
    assert started, f"no runner with {marker} was started: {server.llama_argv()}"
    return started[-1]


def flag_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


async def no_runner_loading(client: EngineClient, timeout: float = 30.0) -> None:
    """Wait until the engine loads nothing. An accepted configure starts a load in the background
    (docs/engine-contract.md §3.3); a preload of another mode of the same model at that moment made the real
    engine unpack the model's bundle twice at once and fail one load with `link ...: file exists` (seen once
    in CI). The engine's race, not what these tests are about."""
    deadline = asyncio.get_running_loop().time() + timeout
    while any(runner.loading for runner in await client.ps()):
        assert asyncio.get_running_loop().time() < deadline, f"a runner still loading after {timeout} s"
        await asyncio.sleep(0.1)


async def test_the_embedding_mode_ignores_the_completion_config(dmr_server: DMRServer) -> None:
    model = dmr_server.embedding_model
    async with EngineClient(dmr_server.url) as client:
        await client.configure({"model": model, "context-size": 1024, "runtime-flags": ["-ub", "512"]})
        await no_runner_loading(client)
        await client.preload(model, mode="embedding")
        argv = runner_argv(dmr_server, "--embeddings")
        assert flag_value(argv, "--ctx-size") != "1024"
        assert "-ub" not in argv

        await client.configure(
            {"model": model, "mode": "embedding", "context-size": 1024, "runtime-flags": ["-ub", "512"]}
        )
        await client.unload(models=[model])
        await no_runner_loading(client)
        await client.preload(model, mode="embedding")
        argv = runner_argv(dmr_server, "--embeddings")
        assert flag_value(argv, "--ctx-size") == "1024"
        assert flag_value(argv, "-ub") == "512"


async def test_the_reranking_mode_falls_back_to_the_completion_config(dmr_server: DMRServer) -> None:
    model = dmr_server.model
    async with EngineClient(dmr_server.url) as client:
        await client.configure({"model": model, "context-size": 1536})
        await no_runner_loading(client)
        await client.preload(model, mode="reranking")
        assert flag_value(runner_argv(dmr_server, "--reranking"), "--ctx-size") == "1536"


async def test_a_docker_agent_rag_embedder_runs_with_its_settings(dmr_server: DMRServer) -> None:
    """End to end: the docker-agent file's embedder, applied by localmodel, is what the engine runs."""
    model = dmr_server.embedding_model
    source = (
        "agents:\n  root: {model: dmr/ai/smollm2, rag: [docs]}\n"
        "rag:\n  docs:\n    docs: [./docs]\n    strategies:\n"
        "      - {type: chunked-embeddings, embedding_model: embedder, vector_dimensions: 1024}\n"
        f"models:\n  embedder:\n    provider: dmr\n    model: {model}\n"
        "    provider_opts: {context_size: 1024, runtime_flags: -ub 512}\n"
    )
    loaded = load_text(source, "agent.yaml")
    assert loaded.errors == []
    async with EngineClient(dmr_server.url) as client:
        results, _ = await apply_models(client, loaded.models, wait=True, timeout=60)
        assert all(r.status.ready for r in results), results
        await client.preload(model, mode="embedding")
        argv = runner_argv(dmr_server, "--embeddings")
        assert flag_value(argv, "--ctx-size") == "1024"
        assert flag_value(argv, "-ub") == "512"
