"""`localmodel adopt` against a live engine: the files it writes plan to nothing, and existing files are kept."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main
from controller.commands.adopt import EXIT_EXISTS
from controller.documents import load_paths
from controller.reconcile import EngineReconciler
from controller.standalone.oneshot import plan_models
from tests.contract.conftest import Engine


def configs(engine: Engine) -> list[tuple[str | None, dict[str, Any]]]:
    """What someone tuned by hand (`docker model configure ...`): several models, modes and every field
    the engine's release keeps (keep_alive only where it has it)."""
    bodies: list[tuple[str | None, dict[str, Any]]] = [
        (
            None,
            {
                "model": engine.model,
                "context-size": 4096,
                "runtime-flags": ["--threads", "2", "--temp=0.7"],
                "keep_alive": "10m",
                "speculative": {"draft_model": engine.draft_model, "num_tokens": 8, "min_acceptance_rate": 0.75},
                "llamacpp": {"reasoning-budget": 1024},
            },
        ),
        (None, {"model": engine.model, "mode": "embedding", "context-size": 2048, "keep_alive": "0"}),
        (
            None,
            {"model": engine.draft_model, "mode": "reranking", "raw-runtime-flags": "--threads 2", "keep_alive": "-1"},
        ),
    ]
    if engine.vllm_model is not None:
        vllm = {"gpu-memory-utilization": 0.5, "hf-overrides": {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}}
        bodies.append(("vllm", {"model": engine.vllm_model, "context-size": 8192, "vllm": vllm}))
    if not engine.has("keepAlive"):
        for _, body in bodies:
            body.pop("keep_alive", None)
    return bodies


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def adopt(*args: str) -> int:
    return main(["adopt", *args])


async def plan_files(engine: Engine, directory: Path) -> list[tuple[str, bool, bool]]:
    loaded = load_paths([directory])
    assert loaded.errors == []
    observation = await EngineReconciler("local", engine.client).observe()
    plans = await plan_models(engine.client, loaded.models, observation)
    return [(plan.name, plan.changes, plan.blocked is not None) for plan in plans]


async def test_adopted_files_plan_to_nothing(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for backend, body in configs(engine):
        await engine.client.configure(body, backend=backend)
    stored = await engine.client.stored_configs()
    out = tmp_path / "models"

    assert await asyncio.to_thread(adopt, "--engine", engine.url, "--output", str(out)) == 0

    files = names(out)
    assert len(files) == len(stored) == len(configs(engine))
    assert {"smollm2.yaml", "smollm2-embedding.yaml"} <= set(files)
    plans = await plan_files(engine, out)
    assert plans == [(name, False, False) for name, _, _ in plans], capsys.readouterr().out
    text = (out / "smollm2.yaml").read_text()
    assert ("keepAlive: 10m\n" in text) == engine.has("keepAlive")
    assert "thinkingBudget: 1024" in text
    assert f"draftModel: {engine.draft_model}" in text


async def test_a_changed_engine_config_then_shows_as_drift(engine: Engine, tmp_path: Path) -> None:
    """The check above can fail: plan on adopted files sees a config changed after the adoption."""
    await engine.client.configure({"model": engine.model, "context-size": 4096})
    assert await asyncio.to_thread(adopt, "--engine", engine.url, "--output", str(tmp_path)) == 0
    await engine.client.configure({"model": engine.model, "context-size": 8192})
    assert await plan_files(engine, tmp_path) == [("smollm2", True, False)]


async def test_existing_files_are_never_overwritten_without_force(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await engine.client.configure({"model": engine.model, "context-size": 4096})
    await engine.client.configure({"model": engine.model, "mode": "embedding"})
    mine = tmp_path / "smollm2.yaml"
    mine.write_text("# my own file\n")
    capsys.readouterr()

    assert await asyncio.to_thread(adopt, "--engine", engine.url, "--output", str(tmp_path)) == EXIT_EXISTS
    err = capsys.readouterr().err
    assert f"{mine} already exists; not overwritten (use --force to overwrite)" in err
    assert "nothing written" in err
    assert mine.read_text() == "# my own file\n"
    assert names(tmp_path) == ["smollm2.yaml"]  # not even the other file

    assert await asyncio.to_thread(adopt, "--engine", engine.url, "--output", str(tmp_path), "--force") == 0
    assert "contextSize: 4096" in mine.read_text()
    assert names(tmp_path) == ["smollm2-embedding.yaml", "smollm2.yaml"]


async def test_an_empty_engine_writes_nothing(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(adopt, "--engine", engine.url, "--output", str(tmp_path / "out")) == 0
    assert "holds no stored config; nothing to adopt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


async def test_output_dash_prints_the_documents(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    await engine.client.configure({"model": engine.model, "context-size": 3072})
    capsys.readouterr()
    assert await asyncio.to_thread(adopt, "--engine", engine.url, "--output", "-") == 0
    out = capsys.readouterr().out
    assert "kind: LocalModel" in out
    assert "contextSize: 3072\n" in out
    assert "name: smollm2\n" in out
