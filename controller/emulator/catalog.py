"""The emulated registry: which models a pull can fetch, and what they look like once stored.

Each `Artifact` is one model artifact (one digest). Tags of the same repository that name the same
artifact share it, as `ai/smollm2:latest` and `ai/smollm2:360M-Q4_K_M` do on Docker Hub; a model
pulled under both then carries two tags (which matters for `DELETE /models/{id}`, docs/engine-contract.md §6.4).

A catalog file (`localmodel emulator --catalog FILE`) is a JSON or YAML list of artifacts, each
`{"name": "ai/x", "tags": ["latest", "1B"], "format": "gguf", "context_size": 4096,
"size_bytes": 1000000, "quantization": "Q4_K_M", "parameters": "1 B", "architecture": "llama"}`;
only `name` is required. Entries are added to the default catalog (a tag already there is replaced).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller import wire
from controller.refs import canonical_ref, qualified_ref

_MIB = 1024 * 1024
CREATED = 1742816981  # a fixed creation time keeps GET /models stable across runs


# gguf-parser-go's byte units: the first base the size reaches, binary before decimal.
_GGUF_UNITS = (
    (1024**5, "Pi"),
    (1e15, "P"),
    (1024**4, "Ti"),
    (1e12, "T"),
    (1024**3, "Gi"),
    (1e9, "G"),
    (1024**2, "Mi"),
    (1e6, "M"),
    (1024, "Ki"),
    (1e3, "K"),
)
_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
_SPACE_BEFORE_UNIT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s+([A-Za-z]+)")


def format_size(size_bytes: int, fmt: str = wire.FORMAT_GGUF) -> str:
    """`config.size` as model-runner v1.2.9 writes it, with no space before the unit. GGUF: gguf-parser's
    size (`256.38MiB`, `3MiB`, `864B`: two decimals, `.00` dropped); other formats: FormatSize, base 1000
    (`724.00MB`)."""
    if fmt == wire.FORMAT_GGUF:
        base, unit = next(((b, u) for b, u in _GGUF_UNITS if size_bytes >= b), (1, ""))
        return f"{size_bytes / base:.2f}".removesuffix(".00") + unit + "B"
    if size_bytes <= 0:
        return "n/a"
    value, index = float(size_bytes), 0
    while value >= 1000 and index < len(_DECIMAL_UNITS) - 1:
        value, index = value / 1000, index + 1
    return f"{value:.2f}{_DECIMAL_UNITS[index]}"


def normalize_units(text: str) -> str:
    """normalizeUnitString: `361.82 M` -> `361.82M` (how v1.2.9 writes parameters and sizes)."""
    return _SPACE_BEFORE_UNIT.sub(r"\1\2", text.strip())


@dataclass(frozen=True)
class Artifact:
    """One pullable model artifact and the tags (of its repository) that point at it."""

    name: str  # repository, e.g. "ai/smollm2"
    tags: tuple[str, ...] = ("latest",)
    format: str = wire.FORMAT_GGUF
    context_size: int | None = None
    size_bytes: int = 100 * _MIB
    quantization: str = "Q4_K_M"
    parameters: str = ""
    architecture: str = "llama"
    layers: int = 1

    @property
    def digest(self) -> str:
        """Deterministic `sha256:<hex>` from the repository and its first tag."""
        seed = f"{canonical_ref(self.name)}@{self.tags[0]}".encode()
        return "sha256:" + hashlib.sha256(seed).hexdigest()

    def refs(self) -> list[str]:
        return [f"{self.name}:{tag}" for tag in self.tags]

    @property
    def size(self) -> str:
        return format_size(self.size_bytes, self.format)

    def config_json(self) -> dict[str, Any]:
        """`config` of GET /models (types.Config, omitempty)."""
        config: dict[str, Any] = {wire.MODEL_FORMAT: self.format}
        for key, value in (
            ("quantization", self.quantization),
            ("parameters", normalize_units(self.parameters)),
            ("architecture", self.architecture),
            (wire.MODEL_SIZE, self.size),
        ):
            if value:
                config[key] = value
        if self.format == wire.FORMAT_GGUF and self.architecture:
            config["gguf"] = {"general.architecture": self.architecture}
        if self.format == wire.FORMAT_SAFETENSORS and self.architecture:
            config["safetensors"] = {"architecture": self.architecture}
        if self.context_size is not None:
            config[wire.MODEL_CONTEXT_SIZE] = self.context_size
        return config


DEFAULT_ARTIFACTS: tuple[Artifact, ...] = (
    Artifact(
        "ai/smollm2",
        ("latest", "360M-Q4_K_M"),
        context_size=8192,
        size_bytes=268_836_256,
        quantization="IQ2_XXS/Q4_K_M",
        parameters="361.82 M",
    ),
    Artifact(
        "ai/smollm2",
        ("135M-Q4_0",),
        context_size=8192,
        size_bytes=91_733_568,
        quantization="Q4_0",
        parameters="134.52 M",
    ),
    Artifact(
        "ai/qwen3",
        ("latest", "8B"),
        context_size=40960,
        size_bytes=5_030_000_000,
        quantization="Q4_K_M",
        parameters="8.19 B",
        architecture="qwen3",
        layers=2,
    ),
    Artifact(
        "ai/qwen3",
        ("14B",),
        context_size=40960,
        size_bytes=9_000_000_000,
        quantization="Q4_K_M",
        parameters="14.77 B",
        architecture="qwen3",
        layers=2,
    ),
    Artifact(
        "ai/qwen3",
        ("0.6B-F16",),
        context_size=40960,
        size_bytes=1_500_000_000,
        quantization="F16",
        parameters="751.63 M",
        architecture="qwen3",
    ),
    Artifact(
        "ai/llama3.2",
        ("latest", "3B"),
        context_size=131072,
        size_bytes=2_019_000_000,
        quantization="Q4_K_M",
        parameters="3.21 B",
    ),
    Artifact(
        "ai/embeddinggemma",
        ("latest",),
        context_size=2048,
        size_bytes=323_000_000,
        quantization="Q8_0",
        parameters="307.58 M",
        architecture="gemma-embedding",
    ),
    Artifact(
        "ai/smollm2-vllm",
        ("latest",),
        format=wire.FORMAT_SAFETENSORS,
        context_size=8192,
        size_bytes=724_000_000,
        quantization="",
        parameters="361.82 M",
        architecture="LlamaForCausalLM",
    ),
    Artifact(
        "ai/gemma3",
        ("4B",),
        context_size=131072,
        size_bytes=2_490_000_000,
        quantization="Q4_K_M",
        parameters="3.88 B",
        architecture="gemma3",
    ),
    Artifact(
        "ai/mxbai-embed-large",
        ("latest",),
        context_size=512,
        size_bytes=670_000_000,
        quantization="F16",
        parameters="334.09 M",
        architecture="bert",
    ),
    Artifact(
        "ai/nomic-embed-text-v1.5",
        ("latest",),
        context_size=2048,
        size_bytes=274_000_000,
        quantization="F16",
        parameters="136.73 M",
        architecture="nomic-bert",
    ),
    Artifact(
        "hf.co/ggml-org/qwen3-reranker-0.6b-q8_0-gguf",
        ("latest",),
        context_size=40960,
        size_bytes=639_000_000,
        quantization="Q8_0",
        parameters="595.78 M",
        architecture="qwen3",
    ),
    Artifact(
        "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF",
        ("latest", "Q4_K_M"),
        context_size=8192,
        size_bytes=105_000_000,
        parameters="134.52 M",
    ),
)


FORMATS = (wire.FORMAT_GGUF, wire.FORMAT_SAFETENSORS, wire.FORMAT_DDUF, wire.FORMAT_DIFFUSERS)
MAX_ARTIFACT_BYTES = 2**53
MAX_LAYERS = 64
_INT32 = 2**31 - 1
_ARTIFACT_STRINGS = ("quantization", "parameters", "architecture")


def artifact_from_json(body: dict[str, Any]) -> Artifact:
    """An `Artifact` from a control-API or catalog-file object, every field checked (ValueError naming it)."""
    fields = dict(body)
    unknown = sorted(set(fields) - set(Artifact.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown fields {unknown}; known: {sorted(Artifact.__dataclass_fields__)}")
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError('"name" must be a repository such as "ai/smollm2"')
    if "tags" in fields:
        tags = fields["tags"]
        if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t.strip() for t in tags):
            raise ValueError('"tags" must be a non-empty list of tags such as ["latest", "1B"]')
        fields["tags"] = tuple(tags)
    if "format" in fields and fields["format"] not in FORMATS:
        raise ValueError(f'"format" must be one of {", ".join(FORMATS)}')
    for key, maximum, required in (
        ("context_size", _INT32, False),
        ("size_bytes", MAX_ARTIFACT_BYTES, True),
        ("layers", MAX_LAYERS, True),
    ):
        value = fields.get(key)
        if value is None and not required:
            continue
        if key in fields and not (
            isinstance(value, int) and not isinstance(value, bool) and (1 if key == "layers" else 0) <= value <= maximum
        ):
            raise ValueError(f'"{key}" must be a whole number from {1 if key == "layers" else 0} to {maximum}')
    for key in _ARTIFACT_STRINGS:
        if key in fields and not isinstance(fields[key], str):
            raise ValueError(f'"{key}" must be a string')
    return Artifact(**fields)


class Catalog:
    """Tag reference -> artifact. Lookups are O(1) by normalised reference."""

    def __init__(self, artifacts: tuple[Artifact, ...] | list[Artifact] = DEFAULT_ARTIFACTS) -> None:
        self._by_key: dict[str, tuple[Artifact, str]] = {}
        for artifact in artifacts:
            self.add(artifact)

    def add(self, artifact: Artifact) -> None:
        for ref in artifact.refs():
            self._by_key[canonical_ref(ref)] = (artifact, qualified_ref(ref))

    def lookup(self, ref: str) -> tuple[Artifact, str] | None:
        """The artifact a reference names and the tag it will be stored under, or None."""
        return self._by_key.get(canonical_ref(ref))

    def refs(self) -> list[str]:
        return sorted(tag for _, tag in self._by_key.values())


def load_artifacts(path: str | Path) -> list[Artifact]:
    """Read a catalog file (JSON, or YAML when the suffix is .yaml/.yml)."""
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError(f"catalog {path}: expected a list of artifacts, got {type(data).__name__}")
    artifacts = []
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"catalog {path}: entry {index} needs a string 'name' (e.g. \"ai/smollm2\")")
        try:
            artifacts.append(artifact_from_json(item))
        except ValueError as exc:
            raise ValueError(f"catalog {path}: entry {index}: {exc}") from None
    return artifacts
