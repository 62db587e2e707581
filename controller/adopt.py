"""What the engine holds, turned back into LocalModels (pure: no I/O): the inverse of desired.py.

`GET /engines/_configure` lists one entry per stored config: `Backend`, `Model` (the first tag),
`ModelID`, `Mode` and `Config`, the `_configure` body as the engine normalised it (docs/engine-contract.md §4.1):
`keep_alive` re-rendered by Go (`10m` -> `10m0s`, `0` -> `0s`), `raw-runtime-flags` shown parsed as
`runtime-flags`, zero and empty fields left out. `adopt_configs` maps every entry back to a
LocalModel whose `render_configure` is a body the engine stores as the same config, so that
`localmodel plan` on the adopted files has nothing to change:

- `backend` is written only when it differs from what the model's format selects (llama.cpp for GGUF,
  vLLM for safetensors), `mode` only when the engine would not infer it from the flags;
- `keepAlive` is written compactly (`10m0s` -> `10m`, `0s` -> `"0"`), numbers as the engine holds them
  (`thinkingBudget` as a token count: an effort such as `high` comes back as `16384`);
- a block the serving backend never reads (`vllm` on llama.cpp, `llamacpp` on vLLM) is left out with a
  note: the engine stores it, but it changes nothing, and a LocalModel with it would not validate.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller import wire
from controller.durations import DurationError, parse_keep_alive
from controller.engine.compare import effective_mode
from controller.engine.types import ModelInfo, StoredConfig
from controller.refs import canonical_ref
from controller.spec import API_VERSION, KIND, SpecInvalid, dns_name, parse_localmodel

_KNOWN_CONFIG = frozenset(
    {
        wire.CONTEXT_SIZE,
        wire.RUNTIME_FLAGS,
        wire.RAW_RUNTIME_FLAGS,
        wire.KEEP_ALIVE,
        wire.SPECULATIVE,
        wire.VLLM,
        wire.LLAMACPP,
    }
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|h|m|s)")
_HUB_PREFIXES = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


@dataclass(frozen=True)
class Adopted:
    """One stored config as a LocalModel document, with what could not be carried over."""

    name: str
    document: dict[str, Any]  # apiVersion, kind, metadata, spec: ready for yaml.safe_dump
    entry: StoredConfig
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refused:
    """A stored config that cannot be a valid LocalModel (say, image-generation on llama.cpp)."""

    entry: StoredConfig
    reason: str


def compact_keep_alive(text: str) -> str:
    """A Go duration as a person writes it: zero parts dropped (`1h0m0s` -> `1h`, `0s` -> `0`); `-1` kept.

    The result always means the same as the input to the engine; anything else comes back unchanged."""
    if text == "-1":
        return text
    sign = "-" if text.startswith("-") else ""
    body = text[len(sign) :]
    parts = _DURATION_PART.findall(body)
    if not parts or "".join(number + unit for number, unit in parts) != body:
        return text
    kept = "".join(number + unit for number, unit in parts if float(number) != 0)
    compact = sign + kept if kept else "0"
    try:
        same = parse_keep_alive(compact) == parse_keep_alive(text)
    except DurationError:
        return text
    return compact if same else text


def display_ref(ref: str) -> str:
    """A model reference as a person writes it: `docker.io/ai/smollm2:latest` -> `ai/smollm2:latest`."""
    lowered = ref.lower()
    for prefix in _HUB_PREFIXES:
        if lowered.startswith(prefix) and "/" in ref[len(prefix) :]:
            return ref[len(prefix) :]
    return ref


def model_ref(entry: StoredConfig, info: ModelInfo | None) -> str:
    """The reference an adopted LocalModel names: the entry's tag, else the model's first tag, else its ID."""
    if entry.model:
        return display_ref(entry.model)
    if info is not None and info.tags:
        return display_ref(info.tags[0])
    return entry.model_id


def spec_from_config(entry: StoredConfig, ref: str, format_backend: str | None) -> tuple[dict[str, Any], list[str]]:
    """The LocalModel spec (camelCase keys, in the order the README lists them) for one stored entry, and notes.

    `format_backend` is the backend the model's format selects (None when the model is not in the store:
    then the entry's backend is written out whenever it is not the default llama.cpp)."""
    config: Mapping[str, Any] = entry.config
    notes: list[str] = []
    spec: dict[str, Any] = {"model": ref}
    if entry.backend != (format_backend or wire.DEFAULT_BACKEND):
        spec["backend"] = entry.backend
    flags = [str(flag) for flag in config.get(wire.RUNTIME_FLAGS) or []]
    spec_raw = "" if flags else str(config.get(wire.RAW_RUNTIME_FLAGS) or "")
    inferred = effective_mode({wire.RUNTIME_FLAGS: flags} if flags else {wire.RAW_RUNTIME_FLAGS: spec_raw})
    if entry.mode != inferred:
        spec["mode"] = entry.mode
    context = config.get(wire.CONTEXT_SIZE)
    if context:  # 0 or absent: the packaged default
        spec["contextSize"] = context
    if flags:
        spec["runtimeFlags"] = flags
    elif spec_raw:
        spec["rawRuntimeFlags"] = spec_raw
    keep_alive = config.get(wire.KEEP_ALIVE)
    if isinstance(keep_alive, str) and keep_alive:
        spec["keepAlive"] = compact_keep_alive(keep_alive)
    llamacpp = _block(config, wire.LLAMACPP)
    budget = llamacpp.get(wire.REASONING_BUDGET)
    if budget is not None:
        if entry.backend == wire.LLAMA_CPP:
            spec["thinkingBudget"] = budget
        else:
            notes.append(f"llamacpp.reasoning-budget {budget} is stored but {entry.backend} does not read it; left out")
    speculative = _speculative(_block(config, wire.SPECULATIVE))
    if speculative:
        spec["speculative"] = speculative
    vllm = _vllm(_block(config, wire.VLLM))
    if vllm:
        if entry.backend == wire.VLLM_BACKEND:
            spec["vllm"] = vllm
        else:
            notes.append(f"vllm options are stored but {entry.backend} does not read them; left out")
    for key in sorted(set(config) - _KNOWN_CONFIG):
        notes.append(f"{key} ({config[key]!r}) is not a LocalModel setting; left out")
    return spec, notes


def adopt_configs(entries: Iterable[StoredConfig], models: Sequence[ModelInfo] = ()) -> list[Adopted | Refused]:
    """One LocalModel per stored config, named from the model (a mode other than completion and a second
    backend for the same model show in the name); names are unique and valid, in a stable order."""
    by_id = {info.id: info for info in models}
    ordered = sorted(entries, key=lambda e: (e.model or e.model_id, e.mode != wire.COMPLETION, e.mode, e.backend))
    keys = [_key(e) for e in ordered]
    shared = Counter(keys)
    out: list[Adopted | Refused] = []
    taken: set[str] = set()
    for entry, key in zip(ordered, keys, strict=True):
        info = by_id.get(entry.model_id)
        ref = model_ref(entry, info)
        format_backend = wire.backend_for_format(info.format) if info is not None else None
        spec, notes = spec_from_config(entry, ref, format_backend)
        if info is None and not entry.model_id.startswith("sha256:"):
            notes.append(
                "stored before the model was pulled (keyed by the raw reference): the engine never uses it; "
                "applying this file pulls the model and configures it properly"
            )
        base = name_for(ref, entry.mode, entry.backend if shared[key] > 1 else None)
        name = _unique(base, taken)
        document = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}
        try:
            parse_localmodel(document)
        except SpecInvalid as exc:
            taken.discard(name)
            out.append(Refused(entry, "; ".join(f"{e.path}: {e.message}" for e in exc.errors)))
            continue
        out.append(Adopted(name, document, entry, tuple(notes)))
    return out


def name_for(ref: str, mode: str, backend: str | None = None) -> str:
    """`ai/qwen3:14B` in completion mode -> `qwen3-14b`; in embedding mode -> `qwen3-14b-embedding`;
    with `backend` (the same model configured on two backends) `-vllm` and so on is added."""
    last = ref.rsplit("/", 1)[-1].split("@", 1)[0]
    if last.lower().startswith("sha256:"):
        last = "model-" + last.split(":", 1)[1][:12]
    repo, _, tag = last.partition(":")
    parts = [repo if tag in ("", "latest") else f"{repo}-{tag}"]
    if mode != wire.COMPLETION:
        parts.append(mode)
    if backend is not None:
        parts.append(backend)
    return dns_name("-".join(parts))[:200].strip("-.") or "model"


def _key(entry: StoredConfig) -> tuple[str, str]:
    return canonical_ref(entry.model or entry.model_id), entry.mode


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate)
    return candidate


def _block(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = config.get(key)
    return value if isinstance(value, Mapping) else {}


def _speculative(block: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if block.get(wire.DRAFT_MODEL):
        out["draftModel"] = display_ref(str(block[wire.DRAFT_MODEL]))
    if block.get(wire.NUM_TOKENS):
        out["numTokens"] = block[wire.NUM_TOKENS]
    if block.get(wire.MIN_ACCEPTANCE_RATE):
        out["acceptanceRate"] = _float(block[wire.MIN_ACCEPTANCE_RATE])
    return out


def _vllm(block: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if block.get(wire.GPU_MEMORY_UTILIZATION) is not None:
        out["gpuMemoryUtilization"] = _float(block[wire.GPU_MEMORY_UTILIZATION])
    if block.get(wire.HF_OVERRIDES):
        out["hfOverrides"] = dict(block[wire.HF_OVERRIDES])
    return out


def _float(value: Any) -> Any:
    """Go writes `0.5` and `1`; the spec's float fields are strict, so `1` becomes `1.0`."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
