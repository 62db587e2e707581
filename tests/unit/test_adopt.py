"""adopt: stored configs back into LocalModels, checked as a round trip through the engine's read-back form.

spec -> render_configure -> the engine's decoding and read-back rendering (the emulator's Go-faithful
decoder, docs/engine-contract.md §4.2) -> adopt -> the same spec, and a plan with nothing to do.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import wire
from controller.adopt import Adopted, Refused, adopt_configs, compact_keep_alive, display_ref, name_for
from controller.desired import render_configure
from controller.durations import parse_keep_alive
from controller.emulator.config import decode_configure
from controller.emulator.flags import split_raw_flags
from controller.engine.compare import effective_mode
from controller.engine.types import ModelInfo, StoredConfig
from controller.plan import Observation, plan_model
from controller.spec import LocalModelSpec, validate_spec

GGUF = ModelInfo("sha256:" + "a" * 64, ("docker.io/ai/qwen3:14B",), "gguf", 40960)
SAFETENSORS = ModelInfo("sha256:" + "b" * 64, ("docker.io/ai/qwen3-vllm:latest",), "safetensors", 32768)
DRAFT = ModelInfo("sha256:" + "e" * 64, ("docker.io/ai/qwen3:0.6B-F16",), "gguf", None)
INFO = {"ai/qwen3:14B": GGUF, "ai/qwen3-vllm:latest": SAFETENSORS}


def readback(spec: LocalModelSpec, info: ModelInfo) -> StoredConfig:
    """What GET /engines/_configure lists after `spec` was applied to the engine holding `info`."""
    backend = spec.backend or wire.backend_for_format(info.format)
    body = render_configure(spec, backend).body
    decoded = decode_configure(json.dumps(body).encode())
    config = decoded.config.to_json()
    if not config.get(wire.RUNTIME_FLAGS) and decoded.raw_runtime_flags:
        config[wire.RUNTIME_FLAGS] = split_raw_flags(decoded.raw_runtime_flags)
    return StoredConfig(backend, info.tags[0], info.id, effective_mode(body), config)


def adopt_one(entry: StoredConfig, info: ModelInfo) -> Adopted:
    [adopted] = adopt_configs([entry], [info])
    assert isinstance(adopted, Adopted), adopted
    return adopted


ROUND_TRIPS: list[dict[str, Any]] = [
    {"model": "ai/qwen3:14B"},
    {"model": "ai/qwen3:14B", "contextSize": 16384, "keepAlive": "10m"},
    {"model": "ai/qwen3:14B", "contextSize": -1, "keepAlive": "-1", "runtimeFlags": ["--threads", "4", "--temp=0.7"]},
    {"model": "ai/qwen3:14B", "keepAlive": "0", "thinkingBudget": -1},
    {"model": "ai/qwen3:14B", "keepAlive": "2h30m", "thinkingBudget": 0},
    {"model": "ai/qwen3:14B", "keepAlive": "1m30.5s"},
    {"model": "ai/qwen3:14B", "mode": "embedding", "runtimeFlags": ["-ub", "1024"]},
    {"model": "ai/qwen3:14B", "runtimeFlags": ["--embeddings"]},  # the engine infers embedding
    {"model": "ai/qwen3:14B", "mode": "completion", "runtimeFlags": ["--embeddings"]},
    {"model": "ai/qwen3:14B", "mode": "reranking"},
    {
        "model": "ai/qwen3:14B",
        "speculative": {"draftModel": "ai/qwen3:0.6B-F16", "numTokens": 16, "acceptanceRate": 0.8},
    },
    {"model": "ai/qwen3:14B", "backend": "vllm", "contextSize": 4096},  # a GGUF model on vLLM: explicit
    {
        "model": "ai/qwen3-vllm:latest",
        "contextSize": 8192,
        "runtimeFlags": ["--max-num-seqs", "8"],
        "vllm": {"gpuMemoryUtilization": 0.5, "hfOverrides": {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}},
    },
    {"model": "ai/qwen3-vllm:latest", "vllm": {"gpuMemoryUtilization": 1.0}},
]


@pytest.mark.parametrize("fields", ROUND_TRIPS, ids=lambda f: json.dumps(f, sort_keys=True)[:60])
def test_spec_render_readback_adopt_is_the_same_spec(fields: dict[str, Any]) -> None:
    spec = validate_spec(fields, "m")
    info = INFO[fields["model"]]
    adopted = adopt_one(readback(spec, info), info)
    assert validate_spec(adopted.document["spec"], "m") == spec
    assert adopted.notes == ()


@pytest.mark.parametrize("fields", ROUND_TRIPS, ids=lambda f: json.dumps(f, sort_keys=True)[:60])
def test_plan_on_an_adopted_spec_has_nothing_to_do(fields: dict[str, Any]) -> None:
    spec = validate_spec(fields, "m")
    info = INFO[fields["model"]]
    entry = readback(spec, info)
    adopted = validate_spec(adopt_one(entry, info).document["spec"], "m")
    plan = plan_model(adopted, Observation("e", models=(GGUF, SAFETENSORS, DRAFT), configs=(entry,)))
    assert plan.up_to_date, plan


@pytest.mark.parametrize(
    ("fields", "adopted"),
    [
        # Semantically the same; the adopted file writes what the engine holds, compactly.
        ({"keepAlive": "600s"}, {"keepAlive": "10m"}),
        ({"keepAlive": "3600s"}, {"keepAlive": "1h"}),  # -5m is refused by the spec (write -1)
        ({"keepAlive": "0s"}, {"keepAlive": "0"}),
        ({"thinkingBudget": "high"}, {"thinkingBudget": 16384}),
        ({"thinkingBudget": "adaptive/low"}, {"thinkingBudget": -1}),
        ({"rawRuntimeFlags": "--threads 4 --temp '0.7'"}, {"runtimeFlags": ["--threads", "4", "--temp", "0.7"]}),
        ({"model": "docker.io/ai/qwen3:14B"}, {}),
    ],
)
def test_normalised_fields_come_back_in_the_engine_form(fields: dict[str, Any], adopted: dict[str, Any]) -> None:
    spec = validate_spec({"model": "ai/qwen3:14B", **fields}, "m")
    got = adopt_one(readback(spec, GGUF), GGUF).document["spec"]
    assert got == {"model": "ai/qwen3:14B", **adopted}
    observation = Observation("e", models=(GGUF,), configs=(readback(spec, GGUF),))
    assert plan_model(validate_spec(got, "m"), observation).up_to_date


@settings(max_examples=200, deadline=None)
@given(
    context=st.one_of(st.none(), st.integers(-1, wire.INT32_MAX).filter(lambda n: n != 0)),
    seconds=st.one_of(st.none(), st.integers(0, 10**6)),  # negative: refused (write -1)
    flags=st.lists(st.sampled_from(["--threads", "4", "--temp=0.7", "-ub", "1024", "--embeddings", "--mlock"])),
    budget=st.one_of(st.none(), st.integers(-1, 40000)),
    mode=st.one_of(st.none(), st.sampled_from(wire.MODES[:3])),
)
def test_round_trip_property(
    context: int | None, seconds: int | None, flags: list[str], budget: int | None, mode: str | None
) -> None:
    fields: dict[str, Any] = {"model": "ai/qwen3:14B"}
    for key, value in (("contextSize", context), ("thinkingBudget", budget), ("mode", mode)):
        if value is not None:
            fields[key] = value
    if seconds is not None:
        fields["keepAlive"] = f"{seconds}s"
    if flags:
        fields["runtimeFlags"] = flags
    spec = validate_spec(fields, "m")
    entry = readback(spec, GGUF)
    got = validate_spec(adopt_one(entry, GGUF).document["spec"], "m")
    assert render_configure(got, "llama.cpp").body.keys() - {"mode"} <= render_configure(spec, "llama.cpp").body.keys()
    assert plan_model(got, Observation("e", models=(GGUF,), configs=(entry,))).up_to_date


@pytest.mark.parametrize(
    ("text", "compact"),
    [
        ("10m0s", "10m"),
        ("1h0m0s", "1h"),
        ("1h30m0s", "1h30m"),
        ("1h0m5s", "1h5s"),
        ("0s", "0"),
        ("-1", "-1"),
        ("500ms", "500ms"),
        ("1m30.5s", "1m30.5s"),
        ("abc", "abc"),
    ],
)
def test_compact_keep_alive(text: str, compact: str) -> None:
    assert compact_keep_alive(text) == compact
    if text != "abc":
        assert parse_keep_alive(compact) == parse_keep_alive(text)


def test_names_are_from_the_model_mode_and_unique() -> None:
    def entry(model: str, mode: str = "completion", backend: str = "llama.cpp") -> StoredConfig:
        return StoredConfig(backend, model, "sha256:" + str(abs(hash(model)))[:8], mode, {})

    adopted = adopt_configs(
        [
            entry("docker.io/ai/embeddinggemma:latest", "embedding"),
            entry("docker.io/ai/embeddinggemma:latest"),
            entry("docker.io/ai/qwen3:14B"),
            entry("docker.io/ai/qwen3:14B", backend="vllm"),
            entry("docker.io/other/qwen3:14B"),
            entry("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"),
        ]
    )
    names = [a.name for a in adopted if isinstance(a, Adopted)]
    assert names == [
        "embeddinggemma",
        "embeddinggemma-embedding",
        "qwen3-14b-llama.cpp",
        "qwen3-14b-vllm",
        "qwen3-14b",
        "llama-3.2-1b-instruct-gguf-q4-k-m",
    ]
    assert len(set(names)) == len(names)
    assert name_for("sha256:" + "c" * 64, "completion") == "model-cccccccccccc"


def test_blocks_the_backend_never_reads_are_left_out_with_a_note() -> None:
    config = {wire.VLLM: {wire.GPU_MEMORY_UTILIZATION: 0.5}, wire.CONTEXT_SIZE: 4096, "future-field": 1}
    adopted = adopt_one(StoredConfig("llama.cpp", "docker.io/ai/qwen3:14B", GGUF.id, "completion", config), GGUF)
    assert adopted.document["spec"] == {"model": "ai/qwen3:14B", "contextSize": 4096}
    assert any("vllm options are stored but llama.cpp does not read them" in n for n in adopted.notes)
    assert any("future-field" in n for n in adopted.notes)


def test_a_config_stored_before_the_pull_is_adopted_with_a_note() -> None:
    adopted = adopt_one(StoredConfig("llama.cpp", "", "ai/qwen3:14B", "completion", {wire.CONTEXT_SIZE: 8192}), GGUF)
    assert adopted.document["spec"] == {"model": "ai/qwen3:14B", "contextSize": 8192}
    assert any("stored before the model was pulled" in n for n in adopted.notes)


def test_an_untagged_model_is_named_by_its_id() -> None:
    info = ModelInfo("sha256:" + "d" * 64, (), "gguf", None)
    adopted = adopt_one(StoredConfig("llama.cpp", "", info.id, "completion", {}), info)
    assert adopted.document["spec"] == {"model": info.id}
    assert adopted.name == "model-dddddddddddd"


def test_a_config_no_localmodel_can_hold_is_refused_with_the_reason() -> None:
    # The engine itself never stores flags for MLX; another client's config can still be anything.
    [refused] = adopt_configs([StoredConfig("mlx", "ai/x", "ai/x", "completion", {wire.RUNTIME_FLAGS: ["-t", "4"]})])
    assert isinstance(refused, Refused)
    assert "rejects every runtime flag" in refused.reason


def test_display_ref() -> None:
    assert display_ref("docker.io/ai/smollm2:latest") == "ai/smollm2:latest"
    assert display_ref("hf.co/x/y:Q4") == "hf.co/x/y:Q4"
    assert display_ref("docker.io/smollm2") == "docker.io/smollm2"
