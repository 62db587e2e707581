"""`_configure` over HTTP: read-back and its normalisation, the backends, and every error class.

See docs/engine-contract.md §3 and §4.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.engine import capabilities as caps
from controller.engine.compare import config_differences, effective_mode, find_stored_config
from controller.engine.errors import BadRequest, EngineRejected, NotFound, RunnerBusy
from controller.engine.types import StoredConfig
from controller.refs import same_model
from tests.contract.conftest import Engine


async def stored(engine: Engine, model: str) -> StoredConfig:
    """The one stored entry of a model (the test configured exactly one)."""
    entries = await engine.client.stored_configs(model)
    assert len(entries) == 1, entries
    return entries[0]


async def test_every_llama_cpp_field_reads_back_normalised(engine: Engine) -> None:
    body = {
        "model": engine.model,
        "context-size": 8192,
        "runtime-flags": ["--threads", "4", "--temp=0.7"],
        "speculative": {"draft_model": engine.draft_model, "num_tokens": 16, "min_acceptance_rate": 0.8},
        "keep_alive": "10m",
        "llamacpp": {"reasoning-budget": -1},
    }
    await engine.client.configure(body)
    entry = await stored(engine, engine.model)
    model = await engine.client.get_model(engine.model)
    assert (entry.backend, entry.mode, entry.model_id) == ("llama.cpp", "completion", model.id)
    assert same_model(entry.model, engine.model)
    expected = {
        "context-size": 8192,
        "runtime-flags": ["--threads", "4", "--temp=0.7"],
        "speculative": {"draft_model": engine.draft_model, "num_tokens": 16, "min_acceptance_rate": 0.8},
        "keep_alive": "10m0s",
        "llamacpp": {"reasoning-budget": -1},
    }
    if not engine.has(caps.KEEP_ALIVE):  # v1.0.10: dropped silently, everything else kept
        del expected["keep_alive"]
    assert entry.config == expected
    dropped = [] if engine.has(caps.KEEP_ALIVE) else ["keep_alive: want 10m, engine has unset"]
    assert config_differences(body, entry.config, backend="llama.cpp") == dropped
    everything = await engine.client.stored_configs()
    assert find_stored_config(everything, engine.model, model.id, "llama.cpp", effective_mode(body)) == entry


@pytest.mark.parametrize(
    ("sent", "reported"),
    [("10m", "10m0s"), ("1h", "1h0m0s"), ("90s", "1m30s"), ("0", "0s"), ("-1", "-1"), ("-5m", "-1")],
)
async def test_keep_alive_is_re_rendered_as_a_go_duration(engine: Engine, sent: str, reported: str) -> None:
    body = {"model": engine.model, "keep_alive": sent}
    await engine.client.configure(body)  # 202 on every release
    entry = await stored(engine, engine.model)
    if not engine.has(caps.KEEP_ALIVE):  # v1.0.10: the field is unknown, stored without it
        assert entry.config == {}
        assert config_differences(body, entry.config) == [f"keep_alive: want {sent}, engine has unset"]
        return
    assert entry.config == {"keep_alive": reported}
    assert config_differences(body, entry.config) == []


async def test_raw_flags_come_back_parsed_and_zero_speculative_fields_omitted(engine: Engine) -> None:
    body = {
        "model": engine.model,
        "raw-runtime-flags": "--threads 4 --chat-template-kwargs '{\"enable_thinking\": false}'",
        "speculative": {"draft_model": engine.draft_model, "num_tokens": 0, "min_acceptance_rate": 0},
    }
    await engine.client.configure(body)
    entry = await stored(engine, engine.model)
    assert entry.config == {
        "runtime-flags": ["--threads", "4", "--chat-template-kwargs", '{"enable_thinking": false}'],
        "speculative": {"draft_model": engine.draft_model},
    }
    assert config_differences(body, entry.config) == []


async def test_configure_replaces_the_whole_config(engine: Engine) -> None:
    await engine.client.configure({"model": engine.model, "context-size": 8192, "runtime-flags": ["--jinja"]})
    body = {"model": engine.model, "keep_alive": "5m"}
    await engine.client.configure(body)
    entry = await stored(engine, engine.model)
    kept = engine.has(caps.KEEP_ALIVE)  # v1.0.10 replaces the config too, with one that has no keep_alive
    assert entry.config == ({"keep_alive": "5m0s"} if kept else {})
    assert config_differences({"model": engine.model, "context-size": 8192}, entry.config) == [
        "context-size: want 8192, engine has unset",
        *(["keep_alive: want unset, engine has 5m0s"] if kept else []),
    ]


async def test_modes_are_stored_apart(engine: Engine) -> None:
    completion = {"model": engine.model, "context-size": 4096}
    embedding = {"model": engine.model, "context-size": 512, "runtime-flags": ["--embeddings"]}
    await engine.client.configure(completion)
    await engine.client.configure(embedding)
    entries = await engine.client.stored_configs(engine.model)
    assert sorted((e.mode, e.config["context-size"]) for e in entries) == [("completion", 4096), ("embedding", 512)]
    model = await engine.client.get_model(engine.model)
    found = find_stored_config(entries, engine.model, model.id, "llama.cpp", effective_mode(embedding))
    assert found is not None
    assert config_differences(embedding, found.config) == []


async def test_vllm_model_with_hf_overrides_and_vllm_flags(engine: Engine) -> None:
    vllm_model = engine.needs_vllm()
    body = {
        "model": vllm_model,
        "context-size": 4096,
        "runtime-flags": ["--max-num-seqs", "8"],
        "vllm": {"gpu-memory-utilization": 0.5, "hf-overrides": {"rope_scaling": {"rope_type": "yarn", "factor": 4}}},
    }
    await engine.client.configure(body, backend="vllm")
    entry = await stored(engine, vllm_model)
    assert (entry.backend, entry.mode) == ("vllm", "completion")
    assert config_differences(body, entry.config, backend="vllm") == []


async def test_safetensors_model_on_the_default_route_is_stored_under_vllm(engine: Engine) -> None:
    vllm_model = engine.needs_vllm()
    await engine.client.configure({"model": vllm_model, "context-size": 4096})
    assert (await stored(engine, vllm_model)).backend == "vllm"


async def test_vllm_flags_on_the_default_route_are_checked_against_llama_cpp(engine: Engine) -> None:
    vllm_model = engine.needs_vllm()
    engine.needs(caps.FLAG_ALLOWLIST)
    with pytest.raises(EngineRejected, match='runtime flag "--max-num-seqs" is not allowed for backend "llama.cpp"'):
        await engine.client.configure({"model": vllm_model, "runtime-flags": ["--max-num-seqs", "8"]})


REJECTED: list[tuple[str, dict[str, Any], str]] = [
    ("flag not allowed", {"runtime-flags": ["--foo"]}, 'runtime flag "--foo" is not allowed'),
    ("path in a flag", {"runtime-flags": ["--chat-template-kwargs", '{"a": "b/c"}']}, "paths are not allowed"),
    ("negative value as its own element", {"runtime-flags": ["--seed", "-1"]}, 'runtime flag "-1" is not allowed'),
    ("unparsable raw flags", {"raw-runtime-flags": "--temp 'x"}, "invalid runtime flags"),
    ("bad hf-overrides key", {"vllm": {"hf-overrides": {"bad-key": 1}}}, 'invalid hf_overrides key "bad-key"'),
]


@pytest.mark.parametrize(("fields", "text"), [(f, t) for _, f, t in REJECTED], ids=[n for n, _, _ in REJECTED])
async def test_validation_errors_are_500_with_the_engines_text(
    engine: Engine, fields: dict[str, Any], text: str
) -> None:
    await engine.client.configure({"model": engine.model, "context-size": 4096})
    if "is not allowed" in text and not engine.has(caps.FLAG_ALLOWLIST):
        # v1.0.10 has no allowlist: it refuses only a flag containing a slash or backslash, and stores
        # these as sent.
        await engine.client.configure({"model": engine.model, **fields})
        assert (await stored(engine, engine.model)).config == fields
        return
    with pytest.raises(EngineRejected) as caught:
        await engine.client.configure({"model": engine.model, **fields})
    assert text in caught.value.message
    assert not caught.value.message.endswith("\n")
    assert (caught.value.status, caught.value.retryable) == (500, False)
    assert (await stored(engine, engine.model)).config == {"context-size": 4096}


@pytest.mark.parametrize(
    "flags",
    [["--host", "0.0.0.0"], ["--port", "8080"], ["--threads=--verbose"]],
    ids=["host", "port", "value carrying a flag"],
)
async def test_flags_outside_the_allowlist_are_refused_where_there_is_one(engine: Engine, flags: list[str]) -> None:
    """v1.2.9 refuses what its allowlist lacks and values that carry a flag; v1.0.10 (no allowlist)
    stores them, and llama-server is then started with them. localmodel sends what the spec says and
    reports the engine's answer: FlagRejected on v1.2.9, Ready on v1.0.10."""
    body = {"model": engine.model, "runtime-flags": flags}
    if engine.has(caps.FLAG_ALLOWLIST):
        with pytest.raises(EngineRejected, match="not allowed|cannot start with"):
            await engine.client.configure(body)
        assert await engine.client.stored_configs(engine.model) == []
    else:
        await engine.client.configure(body)
        assert (await stored(engine, engine.model)).config == {"runtime-flags": flags}


BAD_JSON: list[tuple[str, dict[str, Any]]] = [
    ("keep_alive not a duration", {"keep_alive": "abc"}),
    ("keep_alive empty", {"keep_alive": ""}),
    ("keep_alive a number", {"keep_alive": 300}),
    ("unknown mode", {"mode": "chat"}),
    ("context-size overflows int32", {"context-size": 2**31}),
    ("context-size a string", {"context-size": "8192"}),
]


@pytest.mark.parametrize("fields", [f for _, f in BAD_JSON], ids=[n for n, _ in BAD_JSON])
async def test_undecodable_bodies_are_400_invalid_request(engine: Engine, fields: dict[str, Any]) -> None:
    if "keep_alive" in fields and not engine.has(caps.KEEP_ALIVE):
        # v1.0.10 does not know keep_alive: any value is ignored, and the rest stored (202).
        await engine.client.configure({"model": engine.model, **fields})
        assert [e.config for e in await engine.client.stored_configs(engine.model)] == [{}]
        return
    with pytest.raises(BadRequest) as caught:
        await engine.client.configure({"model": engine.model, **fields})
    assert (caught.value.message, caught.value.status) == ("invalid request", 400)
    assert await engine.client.stored_configs(engine.model) == []


async def test_unknown_backend_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound, match="backend not found"):
        await engine.client.configure({"model": engine.model}, backend="tensorrt")


async def test_busy_runner_answers_409_and_keeps_the_stored_config(engine: Engine) -> None:
    await engine.client.configure({"model": engine.model, "context-size": 4096})
    await engine.holds.busy(engine.model)
    with pytest.raises(RunnerBusy) as caught:
        await engine.client.configure({"model": engine.model, "context-size": 8192})
    assert (caught.value.message, caught.value.status, caught.value.retryable) == ("runner already active", 409, True)
    assert (await stored(engine, engine.model)).config == {"context-size": 4096}
    await engine.client.configure({"model": engine.model, "context-size": 4096})  # unchanged: a no-op, even when busy
    await engine.holds.busy(engine.model, False)
    await engine.client.configure({"model": engine.model, "context-size": 8192})  # idle runner: evicted, then stored
    assert (await stored(engine, engine.model)).config == {"context-size": 8192}


@pytest.mark.emulator_only("makes the next configure answer 409")
async def test_conflicts_are_retryable(engine: Engine) -> None:
    await engine.ctl.conflicts(1)
    body = {"model": engine.model, "context-size": 8192}
    with pytest.raises(RunnerBusy):
        await engine.client.configure(body)
    await engine.client.configure(body)
    assert (await stored(engine, engine.model)).config == {"context-size": 8192}


async def test_configure_before_pull_is_never_found_for_the_model(engine: Engine) -> None:
    body = {"model": engine.fresh_model, "context-size": 2048}
    await engine.client.configure(body)
    assert await engine.client.stored_configs(engine.fresh_model) == []
    await engine.client.pull(engine.fresh_model)
    pulled = await engine.client.get_model(engine.fresh_model)
    assert await engine.client.stored_configs(engine.fresh_model) == []
    everything = await engine.client.stored_configs()
    assert [e.model_id for e in everything] == [engine.fresh_model]  # keyed by the raw reference
    assert find_stored_config(everything, engine.fresh_model, pulled.id, "llama.cpp", "completion") is None


async def test_restart_forgets_every_stored_config(engine: Engine) -> None:
    await engine.client.configure({"model": engine.model, "context-size": 8192})
    await engine.restart()
    assert await engine.client.stored_configs() == []
    assert await engine.client.get_model(engine.model)  # models survive a restart


async def test_the_listing_order_is_not_defined_so_the_watch_digest_ignores_it(engine) -> None:  # type: ignore[no-untyped-def]
    """GET /engines/_configure lists entries in Go map order (random); the watch digests a canonical
    form, so the same configs in any order are no change, and an overwrite is one."""
    from controller.engine.watch import listing_digest

    refs = [engine.model, engine.draft_model]
    for ref in refs:
        await engine.client.configure({"model": ref, "context-size": 2048})
    bodies = {await engine.client.stored_configs_body() for _ in range(20)}
    assert len({listing_digest(body) for body in bodies}) == 1
    await engine.client.configure({"model": refs[0], "context-size": 4096})
    assert listing_digest(await engine.client.stored_configs_body()) not in {listing_digest(b) for b in bodies}
