"""Semantic comparison of desired `_configure` bodies with the engine's normalised read-back.

See docs/engine-contract.md §4.2.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.engine.compare import config_differences, effective_mode, find_stored_config
from controller.engine.types import StoredConfig

MATCHES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("empty", {"model": "ai/x"}, {}),
    ("context size", {"model": "ai/x", "context-size": 8192}, {"context-size": 8192}),
    ("context size 0 is absent", {"model": "ai/x", "context-size": 0}, {}),
    ("keep_alive re-rendered", {"model": "ai/x", "keep_alive": "10m"}, {"keep_alive": "10m0s"}),
    ("keep_alive hours", {"model": "ai/x", "keep_alive": "1h"}, {"keep_alive": "1h0m0s"}),
    ("keep_alive zero", {"model": "ai/x", "keep_alive": "0"}, {"keep_alive": "0s"}),
    ("keep_alive negative is forever", {"model": "ai/x", "keep_alive": "-5m"}, {"keep_alive": "-1"}),
    (
        "raw flags parsed",
        {"model": "ai/x", "raw-runtime-flags": "--threads 4 --temp=0.7"},
        {"runtime-flags": ["--threads", "4", "--temp=0.7"]},
    ),
    (
        "raw flags quoted",
        {"model": "ai/x", "raw-runtime-flags": "--chat-template-kwargs '{\"a\": 1}'"},
        {"runtime-flags": ["--chat-template-kwargs", '{"a": 1}']},
    ),
    (
        "array wins over raw",
        {"model": "ai/x", "runtime-flags": ["-t", "2"], "raw-runtime-flags": "--foo"},
        {"runtime-flags": ["-t", "2"]},
    ),
    ("empty flags are absent", {"model": "ai/x", "runtime-flags": []}, {}),
    (
        "zero speculative fields omitted",
        {"model": "ai/x", "speculative": {"draft_model": "ai/d", "num_tokens": 0, "min_acceptance_rate": 0.0}},
        {"speculative": {"draft_model": "ai/d"}},
    ),
    (
        "draft model as a reference",
        {"model": "ai/x", "speculative": {"draft_model": "ai/d"}},
        {"speculative": {"draft_model": "docker.io/ai/d:latest"}},
    ),
    (
        "acceptance rate tolerance",
        {"model": "ai/x", "speculative": {"min_acceptance_rate": 0.8}},
        {"speculative": {"min_acceptance_rate": 0.8000000001}},
    ),
    ("empty speculative block", {"model": "ai/x", "speculative": {}}, {}),
    (
        "hf-overrides ints equal floats",
        {"model": "ai/x", "vllm": {"hf-overrides": {"rope_scaling": {"rope_type": "yarn", "factor": 4}}}},
        {"vllm": {"hf-overrides": {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}}},
    ),
    ("empty hf-overrides", {"model": "ai/x", "vllm": {"hf-overrides": {}}}, {}),
    (
        "gpu memory",
        {"model": "ai/x", "vllm": {"gpu-memory-utilization": 0.5}},
        {"vllm": {"gpu-memory-utilization": 0.5}},
    ),
    (
        "reasoning budget",
        {"model": "ai/x", "llamacpp": {"reasoning-budget": -1}},
        {"llamacpp": {"reasoning-budget": -1}},
    ),
    ("mode is not in Config", {"model": "ai/x", "mode": "embedding"}, {}),
]


@pytest.mark.parametrize(("desired", "reported"), [(d, r) for _, d, r in MATCHES], ids=[n for n, _, _ in MATCHES])
def test_semantically_equal_configs_match(desired: dict[str, Any], reported: dict[str, Any]) -> None:
    assert config_differences(desired, reported) == []


DIFFERENCES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "context size",
        {"model": "ai/x", "context-size": 8192},
        {"context-size": 4096},
        "context-size: want 8192, engine has 4096",
    ),
    ("context size lost", {"model": "ai/x", "context-size": 8192}, {}, "context-size: want 8192, engine has unset"),
    (
        "keep_alive",
        {"model": "ai/x", "keep_alive": "10m"},
        {"keep_alive": "5m0s"},
        "keep_alive: want 10m, engine has 5m0s",
    ),
    ("keep_alive absent is not zero", {"model": "ai/x", "keep_alive": "0"}, {}, "keep_alive: want 0, engine has unset"),
    (
        "flags",
        {"model": "ai/x", "raw-runtime-flags": "--threads 4"},
        {"runtime-flags": ["--threads", "8"]},
        "runtime-flags: want --threads 4, engine has --threads 8",
    ),
    (
        "flags lost",
        {"model": "ai/x", "runtime-flags": ["--jinja"]},
        {},
        "runtime-flags: want --jinja, engine has (none)",
    ),
    (
        "draft model",
        {"model": "ai/x", "speculative": {"draft_model": "ai/d"}},
        {},
        "speculative.draft_model: want ai/d, engine has unset",
    ),
    (
        "num tokens",
        {"model": "ai/x", "speculative": {"num_tokens": 16}},
        {"speculative": {"num_tokens": 8}},
        "speculative.num_tokens: want 16, engine has 8",
    ),
    (
        "hf-overrides",
        {"model": "ai/x", "vllm": {"hf-overrides": {"a": 1}}},
        {"vllm": {"hf-overrides": {"a": 2}}},
        'vllm.hf-overrides: want {"a": 1}, engine has {"a": 2}',
    ),
    (
        "gpu memory absent is not zero",
        {"model": "ai/x", "vllm": {"gpu-memory-utilization": 0.0}},
        {},
        "vllm.gpu-memory-utilization: want 0.0, engine has unset",
    ),
    (
        "reasoning budget 0 is not absent",
        {"model": "ai/x", "llamacpp": {"reasoning-budget": 0}},
        {},
        "llamacpp.reasoning-budget: want 0, engine has unset",
    ),
    ("set by someone else", {"model": "ai/x"}, {"keep_alive": "-1"}, "keep_alive: want unset, engine has -1"),
    ("unknown reported key", {"model": "ai/x"}, {"new-field": True}, "new-field: want unset, engine has true"),
    (
        "unsplittable raw flags",
        {"model": "ai/x", "raw-runtime-flags": "--chat-template 'x"},
        {},
        "raw-runtime-flags: cannot be split like a shell command line (No closing quotation)",
    ),
]


@pytest.mark.parametrize(
    ("desired", "reported", "expected"),
    [(d, r, e) for _, d, r, e in DIFFERENCES],
    ids=[n for n, _, _, _ in DIFFERENCES],
)
def test_differences_are_named_with_both_values(
    desired: dict[str, Any], reported: dict[str, Any], expected: str
) -> None:
    assert config_differences(desired, reported) == [expected]


def test_every_difference_is_reported() -> None:
    desired = {"model": "ai/x", "context-size": 8192, "keep_alive": "10m", "runtime-flags": ["--jinja"]}
    assert len(config_differences(desired, {"context-size": 4096})) == 3


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (
            None,
            [
                "llamacpp.reasoning-budget: want unset, engine has -1",
                "vllm.gpu-memory-utilization: want unset, engine has 0.5",
            ],
        ),
        ("llama.cpp", ["llamacpp.reasoning-budget: want unset, engine has -1"]),
        ("vllm", ["vllm.gpu-memory-utilization: want unset, engine has 0.5"]),
        ("mlx", []),
    ],
)
def test_backend_ignores_blocks_it_never_reads(backend: str | None, expected: list[str]) -> None:
    reported = {"vllm": {"gpu-memory-utilization": 0.5}, "llamacpp": {"reasoning-budget": -1}}
    assert sorted(config_differences({"model": "ai/x"}, reported, backend=backend)) == expected


@pytest.mark.parametrize(
    ("body", "mode"),
    [
        ({"model": "ai/x"}, "completion"),
        ({"model": "ai/x", "mode": "reranking"}, "reranking"),
        ({"model": "ai/x", "runtime-flags": ["--embeddings"]}, "embedding"),
        ({"model": "ai/x", "raw-runtime-flags": "--embeddings"}, "embedding"),
        ({"model": "ai/x", "runtime-flags": ["-t", "2", "--embeddings"]}, "embedding"),
        ({"model": "ai/x", "runtime-flags": ["--embeddings=false"]}, "completion"),
        ({"model": "ai/x", "runtime-flags": ["--embedding"]}, "completion"),
    ],
)
def test_effective_mode(body: dict[str, Any], mode: str) -> None:
    assert effective_mode(body) == mode


def _entry(model: str, model_id: str, *, backend: str = "llama.cpp", mode: str = "completion") -> StoredConfig:
    return StoredConfig(backend=backend, model=model, model_id=model_id, mode=mode, config={"context-size": 1})


PULLED = _entry("docker.io/ai/x:latest", "sha256:aaa")
BEFORE_PULL = _entry("docker.io/ai/x:latest", "ai/x")  # keyed by the raw ref: never used by the engine
EMBEDDING = _entry("docker.io/ai/x:latest", "sha256:aaa", mode="embedding")
VLLM = _entry("docker.io/ai/x:latest", "sha256:aaa", backend="vllm")


@pytest.mark.parametrize(
    ("entries", "ref", "model_id", "backend", "mode", "expected"),
    [
        ([BEFORE_PULL, PULLED], "ai/x", "sha256:aaa", "llama.cpp", "completion", PULLED),
        ([BEFORE_PULL], "ai/x", "sha256:aaa", "llama.cpp", "completion", None),
        ([PULLED], "ai/x", "sha256:bbb", "llama.cpp", "completion", None),
        ([PULLED], "ai/x:latest", None, "llama.cpp", "completion", PULLED),
        ([BEFORE_PULL], "docker.io/ai/x", None, "llama.cpp", "completion", BEFORE_PULL),
        ([PULLED, EMBEDDING], "ai/x", "sha256:aaa", "llama.cpp", "embedding", EMBEDDING),
        ([PULLED, VLLM], "ai/x", "sha256:aaa", "vllm", "completion", VLLM),
        ([PULLED], "ai/y", None, "llama.cpp", "completion", None),
        ([], "ai/x", "sha256:aaa", "llama.cpp", "completion", None),
    ],
)
def test_find_stored_config(
    entries: list[StoredConfig], ref: str, model_id: str | None, backend: str, mode: str, expected: StoredConfig | None
) -> None:
    assert find_stored_config(entries, ref, model_id, backend, mode) is expected
