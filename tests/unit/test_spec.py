"""LocalModel schema and validation rules (docs/engine-contract.md §9)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.spec import (
    API_VERSION,
    THINKING_EFFORTS,
    LocalModel,
    LocalModelSpec,
    SpecError,
    SpecInvalid,
    VllmOptions,
    did_you_mean,
    dns_name,
    format_path,
    parse_localmodel,
    thinking_budget_tokens,
    validate_spec,
)


def spec_errors(**fields: Any) -> list[SpecError]:
    with pytest.raises(SpecInvalid) as info:
        validate_spec({"model": "ai/smollm2", **fields}, "m")
    return info.value.errors


def one_error(**fields: Any) -> SpecError:
    errors = spec_errors(**fields)
    assert len(errors) == 1, errors
    return errors[0]


def valid(**fields: Any) -> LocalModelSpec:
    return validate_spec({"model": "ai/smollm2", **fields}, "m")


def document(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "LocalModel",
        "metadata": {"name": "chat"},
        "spec": {"model": "ai/qwen3:14B"},
    }
    doc.update(overrides)
    return doc


# --- model ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fragment"),
    [("", "must not be empty"), ("   ", "must not be empty"), ("ai/qwen3 14B", "whitespace"), (7, "must be a string")],
)
def test_model_reference_rules(model: object, fragment: str) -> None:
    error = one_error(model=model)
    assert error.path == "spec.model"
    assert fragment in error.message


def test_model_is_required() -> None:
    with pytest.raises(SpecInvalid) as info:
        validate_spec({"contextSize": 4096}, "m")
    assert [(e.path, e.message) for e in info.value.errors] == [("spec.model", "required field is missing: add model")]


# --- contextSize ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 4096, 131072, -1, 2_147_483_647])
def test_context_size_accepts_integers_and_unlimited(size: int) -> None:
    assert valid(contextSize=size).context_size == size


@pytest.mark.parametrize(
    ("size", "fragment"),
    [
        (0, "omit contextSize to use the model's packaged default"),
        (-2, "-1 for unlimited"),
        (-4096, "-1 for unlimited"),
        (2_147_483_648, "at most 2147483647"),
        (10**12, "at most 2147483647"),
        (True, "got the boolean true"),
        (False, "got the boolean false"),
        (8192.0, "without a decimal point: write 8192"),
        (8192.5, "must be an integer"),
        ("8192", "write 8192 without quotes"),
        ("big", "must be an integer"),
        ([8192], "must be an integer"),
    ],
)
def test_context_size_rejections(size: object, fragment: str) -> None:
    error = one_error(contextSize=size)
    assert error.path == "spec.contextSize"
    assert fragment in error.message


# --- runtime flags ---------------------------------------------------------------------------


def test_runtime_flags_as_list() -> None:
    assert valid(runtimeFlags=["--threads", "4", "--temp=0.7"]).runtime_flags == ["--threads", "4", "--temp=0.7"]


def test_runtime_flags_as_string_are_split_on_whitespace() -> None:
    assert valid(runtimeFlags="--threads 4\t--batch-size  512\n").runtime_flags == [
        "--threads",
        "4",
        "--batch-size",
        "512",
    ]


def test_runtime_flag_that_is_not_a_string_names_its_index() -> None:
    error = one_error(runtimeFlags=["--threads", 4])
    assert error.path == "spec.runtimeFlags[1]"
    assert 'quote it: "4"' in error.message


def test_empty_runtime_flag_is_rejected() -> None:
    assert one_error(runtimeFlags=["--threads", ""]).path == "spec.runtimeFlags[1]"


def test_runtime_flags_must_be_list_or_string() -> None:
    assert "must be a list of strings" in one_error(runtimeFlags={"threads": 4}).message


def test_both_flag_forms_are_rejected_naming_both() -> None:
    error = one_error(runtimeFlags=["--threads", "4"], rawRuntimeFlags="--threads 8")
    assert error.path == "spec.rawRuntimeFlags"
    assert "runtimeFlags" in error.message
    assert "rawRuntimeFlags" in error.message


@pytest.mark.parametrize("backend", ["mlx", "sglang", "diffusers"])
@pytest.mark.parametrize(("field", "value"), [("runtimeFlags", ["--threads", "4"]), ("rawRuntimeFlags", "--threads 4")])
def test_flags_rejected_for_backends_without_allowlist(backend: str, field: str, value: object) -> None:
    error = one_error(backend=backend, **{field: value})
    assert error.path == f"spec.{field}"
    assert backend in error.message
    assert "rejects every runtime flag" in error.message


@pytest.mark.parametrize("backend", ["llama.cpp", "vllm"])
def test_flags_accepted_for_backends_with_allowlist(backend: str) -> None:
    assert valid(backend=backend, runtimeFlags=["--seed=1"]).runtime_flags == ["--seed=1"]


# --- keepAlive -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["30s", "5m", "1h", "2h30m", "1.5h", "0", "-1", "0s", "500ms"])
def test_keep_alive_valid_forms_are_kept_as_written(value: str) -> None:
    assert valid(keepAlive=value).keep_alive == value


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (300, "write 300s or 5m"),
        ("300", "write 300s or 5m"),
        (45, "write 45s"),
        ("45", "write 45s"),
        (0, 'quote it ("0")'),
        (-1, 'quote it ("-1")'),
        (1.5, "bare number"),
        ("", "must not be empty"),
        ("5 minutes", "not a duration"),
        ("forever", "not a duration"),
        ("5x", "not a duration"),
        (True, "must be a duration"),
        (["5m"], "must be a duration"),
    ],
)
def test_keep_alive_rejections(value: object, fragment: str) -> None:
    error = one_error(keepAlive=value)
    assert error.path == "spec.keepAlive"
    assert fragment in error.message


# --- thinkingBudget --------------------------------------------------------------------------


@pytest.mark.parametrize(("effort", "tokens"), sorted(THINKING_EFFORTS.items()))
def test_every_effort_resolves(effort: str, tokens: int) -> None:
    assert valid(thinkingBudget=effort).reasoning_budget == tokens


def test_effort_table_matches_dmr_api() -> None:
    assert dict(THINKING_EFFORTS) == {
        "none": 0,
        "minimal": 1024,
        "low": 2048,
        "medium": 8192,
        "high": 16384,
        "xhigh": 32768,
        "max": 32768,
        "adaptive": -1,
    }


@pytest.mark.parametrize(("effort", "tokens"), [("HIGH", 16384), ("Medium", 8192), ("XHigh", 32768), ("Adaptive", -1)])
def test_efforts_are_case_insensitive_and_kept_as_written(effort: str, tokens: int) -> None:
    spec = valid(thinkingBudget=effort)
    assert spec.thinking_budget == effort
    assert spec.reasoning_budget == tokens


@pytest.mark.parametrize("effort", ["adaptive/high", "adaptive/low", "ADAPTIVE/Medium", "adaptive/none"])
def test_adaptive_with_effort_is_unlimited(effort: str) -> None:
    assert valid(thinkingBudget=effort).reasoning_budget == -1


@pytest.mark.parametrize("tokens", [-1, 0, 1, 4096, 2_147_483_647])
def test_integer_budgets(tokens: int) -> None:
    assert valid(thinkingBudget=tokens).reasoning_budget == tokens


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("extreme", "unknown effort 'extreme'"),
        ("hihg", "did you mean high?"),
        ("adaptive/extreme", "unknown effort"),
        ("adaptive/adaptive", "unknown effort"),
        ("high/adaptive", "unknown effort"),
        ("4096", "without quotes"),
        (-2, "-1 (unlimited)"),
        (2_147_483_648, "at most 2147483647"),
        (True, "got the boolean true"),
        (1.5, "got the number 1.5"),
    ],
)
def test_thinking_budget_rejections(value: object, fragment: str) -> None:
    error = one_error(thinkingBudget=value)
    assert error.path == "spec.thinkingBudget"
    assert fragment in error.message


def test_unknown_effort_lists_the_valid_ones() -> None:
    message = one_error(thinkingBudget="extreme").message
    for effort in THINKING_EFFORTS:
        assert effort in message


def test_reasoning_budget_absent() -> None:
    assert valid().reasoning_budget is None
    assert thinking_budget_tokens(" low ") == 2048


# --- vLLM options ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, 1.0])
def test_gpu_memory_utilization_in_range(value: float) -> None:
    assert valid(vllm={"gpuMemoryUtilization": value}).vllm.gpu_memory_utilization == value  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [1.01, -0.1, 2, float("inf"), float("nan")])
def test_gpu_memory_utilization_out_of_range(value: float) -> None:
    error = one_error(vllm={"gpuMemoryUtilization": value})
    assert error.path == "spec.vllm.gpuMemoryUtilization"
    assert "between 0.0 and 1.0" in error.message


@pytest.mark.parametrize("value", [True, "0.5"])
def test_gpu_memory_utilization_must_be_a_number(value: object) -> None:
    assert "must be a number" in one_error(vllm={"gpuMemoryUtilization": value}).message


def test_hf_overrides_nested_values() -> None:
    overrides = {
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
        "_private": None,
        "layers": [1, 2.5, "x", True, None, [{"inner_key": {"deep": []}}]],
    }
    assert valid(vllm={"hfOverrides": overrides}).vllm.hf_overrides == overrides  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"rope-scaling": {}}, "spec.vllm.hfOverrides.rope-scaling"),
        ({"--max-model-len": 1}, "spec.vllm.hfOverrides.--max-model-len"),
        ({"1abc": 1}, "spec.vllm.hfOverrides.1abc"),
        ({"": 1}, "spec.vllm.hfOverrides."),
        ({"rope_scaling": {"rope type": "yarn"}}, "spec.vllm.hfOverrides.rope_scaling.rope type"),
        ({"a": {"b": {"c.d": 1}}}, "spec.vllm.hfOverrides.a.b.c.d"),
        ({"layers": [{"ok": 1}, {"not-ok": 2}]}, "spec.vllm.hfOverrides.layers[1].not-ok"),
        ({"a": [[{"x y": 1}]]}, "spec.vllm.hfOverrides.a[0][0].x y"),
        ({1: "x"}, "spec.vllm.hfOverrides.1"),
    ],
)
def test_hf_overrides_invalid_keys_at_any_depth(overrides: dict[Any, Any], path: str) -> None:
    error = one_error(vllm={"hfOverrides": overrides})
    assert error.path == path
    assert "^[a-zA-Z_][a-zA-Z0-9_]*$" in error.message


def test_hf_overrides_key_fix_is_suggested() -> None:
    assert "(e.g. rope_scaling)" in one_error(vllm={"hfOverrides": {"rope-scaling": 1}}).message


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"when": object()}, "spec.vllm.hfOverrides.when"),
        ({"a": {"b": {1, 2}}}, "spec.vllm.hfOverrides.a.b"),
        ({"a": [b"bytes"]}, "spec.vllm.hfOverrides.a[0]"),
        ({"a": float("nan")}, "spec.vllm.hfOverrides.a"),
    ],
)
def test_hf_overrides_bad_value_types(overrides: dict[str, Any], path: str) -> None:
    assert one_error(vllm={"hfOverrides": overrides}).path == path


def test_hf_overrides_must_be_a_mapping() -> None:
    assert "must be a mapping" in one_error(vllm={"hfOverrides": ["rope_scaling"]}).message


@pytest.mark.parametrize("backend", ["llama.cpp", "mlx", "sglang", "diffusers"])
def test_vllm_options_conflict_with_explicit_other_backend(backend: str) -> None:
    error = one_error(backend=backend, vllm={"gpuMemoryUtilization": 0.5})
    assert error.path == "spec.vllm"
    assert "set backend: vllm" in error.message


def test_any_vllm_block_conflicts_with_another_backend() -> None:
    # Even an empty block: the CRD's CEL rule cannot look inside hfOverrides, so both validators
    # reject the block itself and agree (tests/unit/test_crd.py).
    assert "vllm options apply only to the vllm backend" in one_error(backend="llama.cpp", vllm={}).message


def test_a_huge_bare_number_keep_alive_is_a_clean_error() -> None:
    # found by hypothesis: float("1e999") is infinite and int() of it used to raise OverflowError
    error = one_error(keepAlive="1e999")
    assert error.path == "spec.keepAlive"
    assert "is not a duration" in error.message


# --- speculative -----------------------------------------------------------------------------


def test_speculative_options() -> None:
    spec = valid(speculative={"draftModel": "ai/qwen3:0.6B-F16", "numTokens": 16, "acceptanceRate": 0.8})
    assert spec.speculative is not None
    assert (spec.speculative.draft_model, spec.speculative.num_tokens, spec.speculative.acceptance_rate) == (
        "ai/qwen3:0.6B-F16",
        16,
        0.8,
    )


@pytest.mark.parametrize(
    ("options", "path", "fragment"),
    [
        ({"numTokens": 0}, "spec.speculative.numTokens", "positive"),
        ({"numTokens": -3}, "spec.speculative.numTokens", "positive"),
        ({"numTokens": True}, "spec.speculative.numTokens", "must be an integer"),
        ({"numTokens": 2.0}, "spec.speculative.numTokens", "must be an integer"),
        ({"acceptanceRate": 1.5}, "spec.speculative.acceptanceRate", "between 0.0 and 1.0"),
        ({"acceptanceRate": -0.01}, "spec.speculative.acceptanceRate", "between 0.0 and 1.0"),
        ({"draftModel": ""}, "spec.speculative.draftModel", "must not be empty"),
        ({"draft_model": "ai/x"}, "spec.speculative.draft_model", "did you mean draftModel?"),
    ],
)
def test_speculative_rejections(options: dict[str, Any], path: str, fragment: str) -> None:
    error = one_error(speculative=options)
    assert (error.path, fragment in error.message) == (path, True), error.message


# --- enums and other fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("backend", "llamacpp", "did you mean llama.cpp?"),
        ("backend", "ollama", "use one of: llama.cpp, vllm, mlx, sglang, diffusers"),
        ("mode", "embeddings", "did you mean embedding?"),
        ("mode", "chat", "use one of: completion, embedding, reranking, image-generation"),
        ("pullPolicy", "always", "did you mean Always?"),
        ("deletionPolicy", "delete", "did you mean Delete?"),
        ("preload", "yes", "must be true or false"),
        ("preload", "true", "without quotes"),
        ("nodeSelector", {"gpu": True}, 'quote it: "true"'),
        ("nodeSelector", ["gpu"], "must be a mapping"),
    ],
)
def test_enum_and_type_rejections(field: str, value: object, fragment: str) -> None:
    error = one_error(**{field: value})
    assert error.path.startswith(f"spec.{field}")
    assert fragment in error.message


def test_image_generation_needs_diffusers() -> None:
    assert one_error(mode="image-generation", backend="llama.cpp").path == "spec.mode"
    assert valid(mode="image-generation", backend="diffusers").mode == "image-generation"


def test_defaults() -> None:
    spec = valid()
    assert (spec.preload, spec.pull_policy, spec.deletion_policy) == (False, "IfNotPresent", "Unload")
    assert spec.node_selector is None
    assert spec.backend is None
    assert spec.mode is None


@pytest.mark.parametrize(
    ("field", "suggestion"),
    [
        ("contextsize", "contextSize"),
        ("context_size", "contextSize"),
        ("ContextSize", "contextSize"),
        ("contextSzie", "contextSize"),
        ("runtime_flags", "runtimeFlags"),
        ("keep_alive", "keepAlive"),
        ("thinking_budget", "thinkingBudget"),
        ("pull_policy", "pullPolicy"),
        ("nodeselector", "nodeSelector"),
    ],
)
def test_unknown_fields_suggest_the_right_name(field: str, suggestion: str) -> None:
    error = one_error(**{field: 1})
    assert error.path == f"spec.{field}"
    assert error.message == f"unknown field {field!r}; did you mean {suggestion}?"


def test_unknown_field_without_close_match_lists_known_fields() -> None:
    message = one_error(temperature=0.7).message
    assert "unknown field 'temperature'" in message
    assert "contextSize" in message


def test_several_problems_are_all_reported() -> None:
    errors = spec_errors(contextSize=0, keepAlive=300, mode="chat")
    assert sorted(e.path for e in errors) == ["spec.contextSize", "spec.keepAlive", "spec.mode"]


def test_python_construction_by_field_name() -> None:
    spec = LocalModelSpec(model="ai/x", context_size=4096, vllm=VllmOptions(gpu_memory_utilization=0.5))
    assert spec.context_size == 4096
    assert LocalModel(metadata={"name": "x"}, spec=spec).name == "x"  # type: ignore[arg-type]


# --- whole objects ---------------------------------------------------------------------------


def test_parse_localmodel() -> None:
    model = parse_localmodel(document(), file="m.yaml", line=3)
    assert model.name == "chat"
    assert model.api_version == API_VERSION
    assert model.spec.model == "ai/qwen3:14B"


def test_kubernetes_object_metadata_and_status_are_accepted() -> None:
    data = document(
        metadata={
            "name": "chat",
            "namespace": "models",
            "generation": 3,
            "uid": "0b5e",
            "resourceVersion": "812",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl"}],
            "labels": {"app": "chat"},
            "annotations": {"note": "x"},
        },
        status={"conditions": []},
    )
    model = parse_localmodel(data)
    assert (model.metadata.namespace, model.metadata.generation) == ("models", 3)


@pytest.mark.parametrize(
    ("overrides", "path", "fragment"),
    [
        ({"apiVersion": "localmodel.io/v1"}, "apiVersion", "use apiVersion: localmodel.io/v1alpha1"),
        ({"kind": "LocalModels"}, "kind", "kind must be LocalModel"),
        ({"metadata": {"name": "Chat_Model"}}, "metadata.name", "e.g. chat-model"),
        ({"metadata": {"name": "x" * 254}}, "metadata.name", "at most 253"),
        ({"metadata": {}}, "metadata.name", "required"),
        ({"specs": {}}, "specs", "did you mean spec?"),
        ({"spec": {"model": "ai/x", "contextsize": 4}}, "spec.contextsize", "did you mean contextSize?"),
    ],
)
def test_parse_localmodel_errors(overrides: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(SpecInvalid) as info:
        parse_localmodel(document(**overrides), file="m.yaml", line=4)
    assert [e.path for e in info.value.errors] == [path]
    assert fragment in info.value.errors[0].message


@pytest.mark.parametrize(
    ("missing", "fragment"), [("kind", "kind: LocalModel"), ("apiVersion", "apiVersion: localmodel.io/v1alpha1")]
)
def test_kind_and_api_version_are_required(missing: str, fragment: str) -> None:
    data = document()
    del data[missing]
    with pytest.raises(SpecInvalid) as info:
        parse_localmodel(data)
    assert fragment in info.value.errors[0].message


def test_non_mapping_document() -> None:
    with pytest.raises(SpecInvalid) as info:
        parse_localmodel(["a"])
    assert info.value.errors[0].object == "<unnamed>"


def test_spec_error_formatting() -> None:
    with pytest.raises(SpecInvalid) as info:
        parse_localmodel(document(spec={"model": "ai/x", "contextSize": 0}), file="models/chat.yaml", line=7)
    error = info.value.errors[0]
    assert str(error) == (
        "models/chat.yaml:7: chat: spec.contextSize: "
        "0 is not a context size: omit contextSize to use the model's packaged default"
    )
    assert str(info.value) == str(error)
    assert str(SpecError(None, None, None, "", "broken")) == "broken"
    assert str(SpecError("f.yaml", None, "x", "spec", "m")) == "f.yaml: x: spec: m"
    assert str(SpecError(None, 3, None, "spec.mode", "m")) == "line 3: spec.mode: m"


def test_validate_spec_rejects_non_mapping() -> None:
    with pytest.raises(SpecInvalid) as info:
        validate_spec("ai/x", "m")
    assert (info.value.errors[0].path, info.value.errors[0].object) == ("spec", "m")


# --- helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("ai/qwen3:14B", "ai-qwen3-14b"),
        ("My_Model", "my-model"),
        ("--x--", "x"),
        ("a..b", "a.b"),
        ("日本", "model"),
        ("x" * 300, "x" * 253),
    ],
)
def test_dns_name(text: str, name: str) -> None:
    assert dns_name(text) == name


def test_format_path_and_did_you_mean() -> None:
    assert format_path(("spec", "runtimeFlags", 2)) == "spec.runtimeFlags[2]"
    assert format_path(("spec", "vllm", "hfOverrides", "a", 0, "b")) == "spec.vllm.hfOverrides.a[0].b"
    assert did_you_mean("keepalive", ["keepAlive", "model"]) == "keepAlive"
    assert did_you_mean("zzz", ["keepAlive"]) is None
    assert did_you_mean(3, ["keepAlive"]) is None


@pytest.mark.parametrize("value", ["-5m", "-1s", "-2h30m", "-1.5h"])
def test_a_negative_keep_alive_other_than_minus_one_says_write_minus_one(value: str) -> None:
    # The engine keeps the model loaded forever for any negative duration and reports -1 back (issue 10).
    with pytest.raises(SpecInvalid, match=r"spec.keepAlive: .*negative duration.*write -1 for never"):
        valid(keepAlive=value)


def test_minus_zero_keep_alive_says_write_zero() -> None:
    with pytest.raises(SpecInvalid, match=r'write "0" to unload as soon as idle'):
        valid(keepAlive="-0s")


@pytest.mark.parametrize("raw", ["--chat-template 'x", '--temp "0.7', "--threads 4 \\"])
def test_raw_runtime_flags_that_do_not_shell_split_are_refused_naming_the_field(raw: str) -> None:
    with pytest.raises(SpecInvalid, match=r"spec.rawRuntimeFlags: cannot be split into flags as a shell would"):
        valid(rawRuntimeFlags=raw)


def test_raw_runtime_flags_with_balanced_quotes_are_kept() -> None:
    raw = "--chat-template-kwargs '{\"enable_thinking\": false}' --temp 0.7"
    assert valid(rawRuntimeFlags=raw).raw_runtime_flags == raw
