"""Rendering the `_configure` request: exact wire keys, routes, and notes for options left out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.desired import ConfigureRequest, RenderError, effective_backend, render_all, render_configure
from controller.documents import load_file
from controller.spec import LocalModel, LocalModelSpec, validate_spec

GOLDEN = Path(__file__).parent / "golden"


def spec(**fields: Any) -> LocalModelSpec:
    return validate_spec({"model": "ai/qwen3:14B", **fields}, "m")


@pytest.mark.parametrize("case", sorted(p.stem for p in GOLDEN.glob("*.yaml")))
def test_golden_yaml_renders_to_wire_json(case: str) -> None:
    loaded = load_file(GOLDEN / f"{case}.yaml")
    assert loaded.errors == []
    expected = json.loads((GOLDEN / f"{case}.json").read_text())
    assert render_all(loaded.models) == expected


def test_minimal_spec_sends_only_the_model() -> None:
    assert render_configure(spec()) == ConfigureRequest("/engines/_configure", None, {"model": "ai/qwen3:14B"}, ())


@pytest.mark.parametrize(
    ("fields", "key", "value"),
    [
        ({"mode": "embedding"}, "mode", "embedding"),
        ({"contextSize": 4096}, "context-size", 4096),
        ({"contextSize": -1}, "context-size", -1),
        ({"runtimeFlags": ["--threads", "4"]}, "runtime-flags", ["--threads", "4"]),
        ({"runtimeFlags": "--threads 4"}, "runtime-flags", ["--threads", "4"]),
        ({"rawRuntimeFlags": "--threads 4"}, "raw-runtime-flags", "--threads 4"),
        ({"keepAlive": "2h30m"}, "keep_alive", "2h30m"),
        ({"keepAlive": "0"}, "keep_alive", "0"),
        ({"thinkingBudget": "medium"}, "llamacpp", {"reasoning-budget": 8192}),
        ({"thinkingBudget": "none"}, "llamacpp", {"reasoning-budget": 0}),
        ({"thinkingBudget": 300}, "llamacpp", {"reasoning-budget": 300}),
        ({"speculative": {"draftModel": "ai/qwen3:0.6B-F16"}}, "speculative", {"draft_model": "ai/qwen3:0.6B-F16"}),
        ({"speculative": {"numTokens": 4}}, "speculative", {"num_tokens": 4}),
        ({"speculative": {"acceptanceRate": 0.5}}, "speculative", {"min_acceptance_rate": 0.5}),
    ],
)
def test_each_option_maps_to_its_wire_key(fields: dict[str, Any], key: str, value: object) -> None:
    body = render_configure(spec(**fields)).body
    assert body == {"model": "ai/qwen3:14B", key: value}


@pytest.mark.parametrize(
    "fields",
    [
        {"runtimeFlags": []},
        {"runtimeFlags": ""},
        {"rawRuntimeFlags": ""},
        {"speculative": {}},
        {"vllm": {}},
        {"preload": True, "pullPolicy": "Always", "deletionPolicy": "Retain", "nodeSelector": {"gpu": "yes"}},
    ],
)
def test_empty_and_controller_only_values_are_never_sent(fields: dict[str, Any]) -> None:
    assert render_configure(spec(**fields)).body == {"model": "ai/qwen3:14B"}


def test_vllm_options_infer_the_vllm_backend() -> None:
    request = render_configure(spec(vllm={"gpuMemoryUtilization": 0.8}))
    assert (request.path, request.backend) == ("/engines/vllm/_configure", "vllm")
    assert request.body["vllm"] == {"gpu-memory-utilization": 0.8}
    assert request.notes == ("backend inferred from vllm options",)


@pytest.mark.parametrize("learned", ["llama.cpp", "mlx", "sglang", "diffusers"])
def test_vllm_options_for_a_learned_other_backend_are_left_out_with_a_note(learned: str) -> None:
    request = render_configure(spec(vllm={"hfOverrides": {"a": 1}}), learned)
    assert "vllm" not in request.body
    assert request.backend == learned
    assert request.notes == (f"vllm options (gpuMemoryUtilization, hfOverrides) do not apply to {learned}; not sent",)


def test_spec_backend_wins_over_the_learned_one() -> None:
    request = render_configure(spec(backend="llama.cpp"), "vllm")
    assert (request.backend, request.path) == ("llama.cpp", "/engines/llama.cpp/_configure")


def test_learned_backend_picks_the_route() -> None:
    assert render_configure(spec(), "vllm").path == "/engines/vllm/_configure"


def test_thinking_budget_on_vllm_is_a_per_request_setting() -> None:
    request = render_configure(spec(thinkingBudget="high"), "vllm")
    assert "llamacpp" not in request.body
    assert request.notes == (
        "vLLM takes the thinking budget per request (thinking_token_budget), not in _configure; not sent",
    )


@pytest.mark.parametrize("backend", ["mlx", "sglang", "diffusers"])
def test_thinking_budget_ignored_by_other_backends(backend: str) -> None:
    request = render_configure(spec(thinkingBudget=1024), backend)
    assert "llamacpp" not in request.body
    assert request.notes == (f"thinkingBudget is ignored by {backend}; not sent",)


@pytest.mark.parametrize("backend", ["mlx", "sglang", "diffusers"])
@pytest.mark.parametrize(
    ("field", "value", "path"),
    [("runtimeFlags", ["--threads", "4"], "spec.runtimeFlags"), ("rawRuntimeFlags", "-t 4", "spec.rawRuntimeFlags")],
)
def test_flags_for_a_learned_flagless_backend_cannot_render(backend: str, field: str, value: object, path: str) -> None:
    with pytest.raises(RenderError) as info:
        render_configure(spec(**{field: value}), backend)
    assert info.value.path == path
    assert backend in info.value.message


def test_speculative_and_mode_are_sent_to_every_backend() -> None:
    body = render_configure(spec(mode="completion", speculative={"draftModel": "ai/qwen3:0.6B-F16"}), "vllm").body
    assert body == {"model": "ai/qwen3:14B", "mode": "completion", "speculative": {"draft_model": "ai/qwen3:0.6B-F16"}}


def test_effective_backend_order() -> None:
    assert effective_backend(spec()) == (None, ())
    assert effective_backend(spec(), "llama.cpp") == ("llama.cpp", ())
    assert effective_backend(spec(backend="sglang"), "vllm") == ("sglang", ())
    assert effective_backend(spec(vllm={"gpuMemoryUtilization": 1}), "llama.cpp") == ("llama.cpp", ())


def test_body_is_a_copy_of_the_spec_lists() -> None:
    source = spec(runtimeFlags=["--threads", "4"])
    render_configure(source).body["runtime-flags"].append("--oops")
    assert source.runtime_flags == ["--threads", "4"]


def test_render_all_names_the_model_in_errors() -> None:
    model = LocalModel(metadata={"name": "chat"}, spec=spec(runtimeFlags=["-t", "4"]))  # type: ignore[arg-type]
    with pytest.raises(RenderError) as info:
        render_all([model], "mlx")
    assert info.value.object == "chat"
    assert str(info.value).startswith("chat: spec.runtimeFlags: ")
