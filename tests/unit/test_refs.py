"""Model references compare as DMR compares them: repository case-insensitive, tag case-sensitive."""

import pytest

from controller.refs import canonical_ref, qualified_ref, same_model


@pytest.mark.parametrize(
    ("ref", "canonical"),
    [
        ("ai/smollm2", "ai/smollm2:latest"),
        ("smollm2", "ai/smollm2:latest"),
        ("  ai/smollm2:latest ", "ai/smollm2:latest"),
        ("docker.io/ai/smollm2:latest", "ai/smollm2:latest"),
        ("index.docker.io/ai/smollm2", "ai/smollm2:latest"),
        ("docker.io/library/smollm2", "ai/smollm2:latest"),
        ("AI/SmolLM2:360M-Q4_K_M", "ai/smollm2:360M-Q4_K_M"),
        ("ai/qwen3:0.6B-F16", "ai/qwen3:0.6B-F16"),
        ("localhost:5000/team/model", "localhost:5000/team/model:latest"),
        ("Registry.Example.com:5000/Team/Model:V1", "registry.example.com:5000/team/model:V1"),
        ("hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M", "huggingface.co/bartowski/llama-3.2-1b-gguf:Q4_K_M"),
        ("sha256:ABCDEF", "sha256:abcdef"),
        ("ai/smollm2@sha256:ABC", "ai/smollm2@sha256:abc"),
        ("smollm2@sha256:abc", "ai/smollm2@sha256:abc"),
    ],
)
def test_canonical_ref(ref: str, canonical: str) -> None:
    assert canonical_ref(ref) == canonical


def test_tags_are_case_sensitive_and_names_are_not() -> None:
    assert same_model("ai/SmolLM2", "docker.io/ai/smollm2:latest")
    assert not same_model("ai/smollm2:LATEST", "ai/smollm2:latest")
    assert not same_model("ai/qwen3:14B", "ai/qwen3:14b")


@pytest.mark.parametrize(
    ("ref", "stored"),
    [
        ("ai/smollm2", "docker.io/ai/smollm2:latest"),
        ("AI/Qwen3:14B", "docker.io/ai/qwen3:14B"),
        ("hf.co/Org/Model", "huggingface.co/org/model:latest"),
        ("localhost:5000/m:v1", "localhost:5000/m:v1"),
    ],
)
def test_qualified_ref_is_the_tag_dmr_stores(ref: str, stored: str) -> None:
    assert qualified_ref(ref) == stored
