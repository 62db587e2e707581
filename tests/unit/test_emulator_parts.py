"""The emulator's parts on their own, without HTTP: the model store, the config table, the loader, and the
direction of their imports (controller/emulator/__init__.py lists the layout). Time is an injected clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from controller import wire
from controller.durations import SECOND
from controller.emulator.config import BackendConfig
from controller.emulator.configs import DEFAULT_KEEP_ALIVE_NS, ConfigStore
from controller.emulator.runners import RunnerPool
from controller.emulator.store import ModelStore, PullFailure
from controller.engine import capabilities as caps
from controller.engine.errors import NotFound, RunnerBusy

PACKAGE = Path(__file__).resolve().parents[2] / "controller" / "emulator"
# Each module may import only those before it.
LAYOUT = ("catalog", "config", "flags", "store", "configs", "runners", "state", "render", "control", "app", "server")
# The engine's state, below the HTTP layer.
WITHOUT_HTTP = ("catalog", "config", "flags", "store", "configs", "runners", "state")


def emulator_imports(module: str) -> tuple[set[str], set[str]]:
    """(the emulator modules `module` imports, the top-level packages it imports)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    siblings: set[str] = set()
    packages: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            packages.add(node.module.split(".")[0])
            if node.module == "controller.emulator":
                siblings.update(alias.name for alias in node.names)
            elif node.module.startswith("controller.emulator."):
                siblings.add(node.module.removeprefix("controller.emulator."))
        elif isinstance(node, ast.Import):
            packages.update(alias.name.split(".")[0] for alias in node.names)
    return siblings, packages


def test_every_emulator_module_is_in_the_layout() -> None:
    assert sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__") == sorted(LAYOUT)


@pytest.mark.parametrize("module", LAYOUT)
def test_a_part_imports_only_the_parts_before_it(module: str) -> None:
    siblings, _ = emulator_imports(module)
    later = siblings - set(LAYOUT[: LAYOUT.index(module)])
    assert not later, f"{module}.py imports {sorted(later)}, which come after it in the layout"


@pytest.mark.parametrize("module", WITHOUT_HTTP)
def test_the_engine_state_does_not_know_http(module: str) -> None:
    assert "aiohttp" not in emulator_imports(module)[1]


# --- the store ---------------------------------------------------------------------------------


def test_the_store_finds_a_model_by_tag_short_id_full_id_and_digest() -> None:
    store = ModelStore()
    store.preload(["ai/smollm2"])
    model = store.local_model("ai/smollm2")
    hexid = model.id.removeprefix("sha256:")
    for ref in ("smollm2", "docker.io/ai/smollm2:latest", hexid[:12], hexid, model.id, f"ai/smollm2@{model.id}"):
        assert store.resolve_id(ref) == model.id, ref


def test_deleting_the_last_tag_deletes_the_model_and_forgets_its_short_id() -> None:
    store = ModelStore()
    store.preload(["ai/smollm2"])
    model_id = store.resolve_id("ai/smollm2")
    assert store.delete_model("ai/smollm2", force=False) == [
        {"Untagged": "docker.io/ai/smollm2:latest"},
        {"Deleted": model_id},
    ]
    assert store.lookup(model_id.removeprefix("sha256:")[:12]) is None
    with pytest.raises(NotFound):
        store.local_model("ai/smollm2")


def test_an_armed_pull_failure_applies_to_one_pull() -> None:
    store = ModelStore()
    assert store.take_pull_failure() is None
    store.pull_failure = PullFailure(10, "boom")
    assert store.take_pull_failure() == PullFailure(10, "boom")
    assert store.take_pull_failure() is None


# --- the config table --------------------------------------------------------------------------


def test_a_configure_of_a_safetensors_model_is_validated_for_vllm() -> None:
    store = ModelStore()
    store.preload(["ai/smollm2-vllm"])
    configs = ConfigStore(store, caps.features_of("v1.2.9"))
    request = configs.validate(None, b'{"model": "ai/smollm2-vllm", "context-size": 4096}')
    assert (request.backend, request.model_id, request.mode) == (
        wire.VLLM_BACKEND,
        store.resolve_id("ai/smollm2-vllm"),
        wire.COMPLETION,
    )
    assert configs.entries() == []  # validating stores nothing


def test_a_runner_without_a_stored_keep_alive_keeps_five_minutes() -> None:
    configs = ConfigStore(ModelStore(), caps.features_of("v1.2.9"))
    assert configs.keep_alive_ns("sha256:x", wire.LLAMA_CPP, wire.COMPLETION) == DEFAULT_KEEP_ALIVE_NS == 300 * SECOND


# --- the loader --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def loader(clock: Clock) -> tuple[ModelStore, ConfigStore, RunnerPool]:
    store = ModelStore()
    store.preload(["ai/smollm2"])
    features = caps.features_of("v1.2.9")
    configs = ConfigStore(store, features)
    return store, configs, RunnerPool(store, configs, features, clock, load_seconds=0)


def test_an_idle_runner_goes_when_its_keep_alive_runs_out_on_the_given_clock() -> None:
    clock = Clock()
    _, _, runners = loader(clock)
    runners.set_busy("ai/smollm2", True)
    runners.set_busy("ai/smollm2", False)
    clock.now += 299
    assert runners.evict_idle() == 0
    clock.now += 1
    assert runners.evict_idle() == 1
    assert runners.running() == []


def test_a_new_config_for_a_busy_runner_is_refused_and_not_stored() -> None:
    store, configs, runners = loader(Clock())
    model_id = store.resolve_id("ai/smollm2")
    runners.set_busy("ai/smollm2", True)
    with pytest.raises(RunnerBusy):
        runners.set_config(wire.LLAMA_CPP, model_id, wire.COMPLETION, BackendConfig(context_size=4096))
    assert configs.get(model_id, wire.LLAMA_CPP, wire.COMPLETION) is None


def test_a_new_config_evicts_the_idle_runner_and_is_stored() -> None:
    store, configs, runners = loader(Clock())
    model_id = store.resolve_id("ai/smollm2")
    runners.set_busy("ai/smollm2", True)
    runners.set_busy("ai/smollm2", False)
    runners.set_config(wire.LLAMA_CPP, model_id, wire.COMPLETION, BackendConfig(context_size=4096))
    assert runners.by_key == {}
    assert configs.get(model_id, wire.LLAMA_CPP, wire.COMPLETION) == BackendConfig(context_size=4096)
