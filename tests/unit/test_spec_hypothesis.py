"""Property tests: no input crashes validation or loading; valid specs always render."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.desired import render_configure
from controller.documents import load_text
from controller.spec import API_VERSION, THINKING_EFFORTS, LocalModel, SpecInvalid, parse_localmodel, validate_spec

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SPEC_KEYS = [
    "model",
    "backend",
    "mode",
    "contextSize",
    "runtimeFlags",
    "rawRuntimeFlags",
    "keepAlive",
    "thinkingBudget",
    "vllm",
    "speculative",
    "preload",
    "pullPolicy",
    "deletionPolicy",
    "nodeSelector",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["5m", "-1", "0", "300", "high", "adaptive/low", "llama.cpp", "vllm", "embedding", "ai/smollm2"]),
)
keys = st.one_of(
    st.sampled_from(SPEC_KEYS + ["gpuMemoryUtilization", "hfOverrides", "draftModel", "numTokens"]),
    st.text(max_size=8),
    st.integers(),
)
json_like = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=20
)


def check(data: Any) -> None:
    try:
        model = parse_localmodel(data, file="f.yaml", line=1)
    except SpecInvalid as exc:
        assert exc.errors  # noqa: PT017 either outcome is valid for arbitrary input; this checks the error's shape
        assert all(str(e) for e in exc.errors)  # noqa: PT017 as above
    else:
        assert isinstance(model, LocalModel)


@FAST
@given(json_like)
def test_arbitrary_data_only_raises_spec_invalid(data: Any) -> None:
    check(data)


@FAST
@given(st.dictionaries(st.sampled_from(SPEC_KEYS), json_like, max_size=6))
def test_arbitrary_specs_only_raise_spec_invalid(spec: dict[str, Any]) -> None:
    check(
        {"apiVersion": API_VERSION, "kind": "LocalModel", "metadata": {"name": "m"}, "spec": {"model": "ai/x", **spec}}
    )


@FAST
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes_the_loader(text: str) -> None:
    result = load_text(text, "f.yaml")
    assert all(str(e) for e in result.errors)


@FAST
@given(json_like)
def test_arbitrary_yaml_documents_never_crash_the_loader(data: Any) -> None:
    try:
        text = yaml.safe_dump(data)
    except (yaml.YAMLError, ValueError):
        return
    load_text(text, "f.yaml")
    load_text(
        yaml.safe_dump({"models": {"m": {"provider": "dmr", "model": "ai/x", "provider_opts": data}}, "agents": data}),
        "agent.yaml",
    )


valid_specs = st.fixed_dictionaries(
    {"model": st.sampled_from(["ai/smollm2", "ai/qwen3:14B", "hf.co/a/b:Q4"])},
    optional={
        "mode": st.sampled_from(["completion", "embedding", "reranking"]),
        "contextSize": st.one_of(st.just(-1), st.integers(min_value=1, max_value=2**31 - 1)),
        "runtimeFlags": st.lists(st.text(min_size=1, max_size=6).filter(lambda s: s.strip() == s and s), max_size=3),
        "keepAlive": st.sampled_from(["0", "-1", "30s", "5m", "1h30m", "+3m"]),
        "thinkingBudget": st.one_of(
            st.integers(min_value=-1, max_value=2**31 - 1), st.sampled_from(sorted(THINKING_EFFORTS))
        ),
        "vllm": st.fixed_dictionaries({}, optional={"gpuMemoryUtilization": st.floats(min_value=0, max_value=1)}),
        "speculative": st.fixed_dictionaries({}, optional={"numTokens": st.integers(min_value=1, max_value=64)}),
    },
)


@FAST
@given(valid_specs, st.sampled_from([None, "llama.cpp", "vllm"]))
def test_valid_specs_render_without_nulls_or_empty_values(data: dict[str, Any], backend: str | None) -> None:
    request = render_configure(validate_spec(data, "m"), backend)
    assert request.body["model"] == data["model"]
    for value in request.body.values():
        assert value is not None
        assert value != []
        assert value != {}
