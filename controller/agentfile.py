"""docker-agent configurations, read the way docker-agent reads them: every dmr model as a LocalModel.

docker-agent declares models in `models:` (`<name>: {provider: dmr, model: ai/qwen3, provider_opts:
{...}}`, or the shorthand `<name>: dmr/ai/qwen3`) and references them, or inline `dmr/<model>`
references, from agents (`model:`, `fallback.models`) and from RAG sources (`rag: <source>:
strategies[].embedding_model`, `strategies[].chat_model`, `results.reranking.model`).

Keys, from docker-agent's own code (docker/docker-agent; the `fetch`ed snapshot is v1.32.3-19-g0d76412a,
2026-03-14; `agent-schema.json` at v1.32.3-26-g5d7186b0; the dmr provider's provider_opts parsing,
`pkg/model/provider/dmr/configure.go`, and `ModelConfig` in `pkg/config/latest/types.go` at the newer
commits of the code index, 7c1086de and later):

- engine settings become LocalModel fields: `model`, `thinking_budget`, and the dmr provider_opts
  `context_size`, `runtime_flags`, `raw_runtime_flags`, `keep_alive`, `mode`, `gpu_memory_utilization`,
  `hf_overrides`, `speculative_draft_model`, `speculative_num_tokens`, `speculative_acceptance_rate`.
  Invalid values are errors, with the field and the fix (docker-agent drops or clamps some silently);
- keys docker-agent reads for its own use (sampling and client settings, `extra_body`, `supports_images`,
  `unload_api`, ...) are notes: "not an engine setting";
- a key nobody reads is a warning with a did-you-mean, never a refused file (docker-agent keeps
  provider_opts as a free map); `localmodel validate --strict` fails on warnings.

Mode from use: the engine keeps one config per (backend, model, mode) and does not fall back from the
embedding mode to the completion config, so a model used as a RAG `embedding_model` is configured in
mode `embedding`, one used for reranking in mode `reranking`, and one used for several gets one
LocalModel per mode (`<name>` for chat, `<name>-embedding`, `<name>-reranking`). An explicit
`provider_opts.mode` wins. A dmr model nothing references is configured for chat (completion), with a note.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from controller import wire
from controller.durations import FOREVER, DurationError, parse_go_duration
from controller.refs import canonical_ref
from controller.spec import API_VERSION, KIND, describe, did_you_mean, dns_name

if TYPE_CHECKING:
    from controller.documents import _Document

Loc = tuple[Any, ...]
Translate = Callable[[Loc], Loc]

DMR_PROVIDER: Final = "dmr"
DOCKER_AGENT_SOURCE: Final = "docker/docker-agent v1.32.3 (agent-schema.json, pkg/model/provider/dmr/configure.go)"

# provider_opts keys of the dmr provider that are engine settings -> LocalModel spec field path.
PROVIDER_OPTS: Final[dict[str, tuple[str, ...]]] = {
    "context_size": ("contextSize",),
    "runtime_flags": ("runtimeFlags",),
    "raw_runtime_flags": ("rawRuntimeFlags",),
    "keep_alive": ("keepAlive",),
    "mode": ("mode",),
    "gpu_memory_utilization": ("vllm", "gpuMemoryUtilization"),
    "hf_overrides": ("vllm", "hfOverrides"),
    "speculative_draft_model": ("speculative", "draftModel"),
    "speculative_num_tokens": ("speculative", "numTokens"),
    "speculative_acceptance_rate": ("speculative", "acceptanceRate"),
}
# Model-entry keys that are engine settings -> LocalModel spec field path.
ENTRY_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "model": ("model",),
    "thinking_budget": ("thinkingBudget",),
}
# provider_opts keys docker-agent reads for its own use, and what it does with them.
CLIENT_OPTS: Final[dict[str, str]] = {
    "supports_images": "tells docker-agent the model accepts images",
    "supports_pdf": "tells docker-agent the model accepts PDFs",
    "unload_api": "the endpoint docker-agent calls to unload the model",
    "extra_body": "merged by docker-agent into every request body",
    "top_k": "a sampling parameter docker-agent sends with each request",
    "min_p": "a sampling parameter docker-agent sends with each request",
    "seed": "a sampling parameter docker-agent sends with each request",
    "api_type": "selects docker-agent's client API (chat completions or responses)",
    "transport": "selects docker-agent's client transport",
    "rerank_prompt": "the prompt docker-agent's LLM-based reranking uses",
    "interleaved_thinking": "read by docker-agent's Anthropic and Bedrock providers",
    "base_url": "where docker-agent sends requests; localmodel uses --engine",
}
# Model-entry keys (ModelConfig) docker-agent applies per request or on the client side.
CLIENT_ENTRY_KEYS: Final = (
    "description",
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "parallel_tool_calls",
    "token_key",
    "bypass_models_gateway",
    "track_usage",
    "task_budget",
    "auth",
    "routing",
    "first_available",
    "title_model",
    "compaction_model",
    "compaction_threshold",
    "capabilities",
    "output_capabilities",
    "cost",
    "headers",
)
ENTRY_KEYS: Final = (*ENTRY_FIELDS, "provider", "provider_opts", "max_tokens", "base_url", *CLIENT_ENTRY_KEYS)
_SPEC_TO_AGENT: Final[dict[tuple[str, ...], tuple[str, ...]]] = {
    **{path: (key,) for key, path in ENTRY_FIELDS.items()},
    **{path: ("provider_opts", key) for key, path in PROVIDER_OPTS.items()},
}
_MODE_ORDER: Final = {wire.COMPLETION: 0, wire.EMBEDDING: 1, wire.RERANKING: 2, wire.IMAGE_GENERATION: 3}
_USE: Final = {wire.COMPLETION: "chat", wire.EMBEDDING: "embeddings", wire.RERANKING: "reranking"}


# --------------------------------------------------------------------------------------------
# Uses: which references are used for what


class _Uses:
    """Every model reference of the file with the modes it is used in, and where (in file order)."""

    def __init__(self) -> None:
        self.modes: dict[str, dict[str, Loc]] = {}  # reference as written -> mode -> first place of use

    def add(self, ref: str, mode: str, loc: Loc) -> None:
        self.modes.setdefault(ref, {}).setdefault(mode, loc)

    def of(self, ref: str) -> dict[str, Loc]:
        return self.modes.get(ref, {})


def _collect_uses(data: Mapping[Any, Any]) -> _Uses:
    uses = _Uses()
    agents = data.get("agents")
    if isinstance(agents, Mapping):
        for agent, settings in agents.items():
            for loc, ref in _agent_refs(agent, settings):
                uses.add(ref, wire.COMPLETION, loc)
    rag = data.get("rag")
    if isinstance(rag, Mapping):
        for source, settings in rag.items():
            for loc, ref, mode in _rag_refs(source, settings):
                uses.add(ref, mode, loc)
    return uses


def _agent_refs(agent: Any, settings: Any) -> list[tuple[Loc, str]]:
    """Model references of an agent (`model: a,b` and `fallback.models`), with their locations."""
    if not isinstance(settings, Mapping):
        return []
    found: list[tuple[Loc, str]] = []
    model = settings.get("model")
    if isinstance(model, str):
        found += [(("agents", agent, "model"), ref.strip()) for ref in model.split(",") if ref.strip()]
    fallback = settings.get("fallback")
    if isinstance(fallback, Mapping) and isinstance(fallback.get("models"), list):
        for i, ref in enumerate(fallback["models"]):
            if isinstance(ref, str) and ref.strip():
                found.append((("agents", agent, "fallback", "models", i), ref.strip()))
    return found


def _rag_refs(source: Any, settings: Any) -> Iterator[tuple[Loc, str, str]]:
    """Model references of a RAG source: strategies' embedding and chat models, the reranking model."""
    if not isinstance(settings, Mapping):
        return
    strategies = settings.get("strategies")
    if isinstance(strategies, list):
        for i, strategy in enumerate(strategies):
            if not isinstance(strategy, Mapping):
                continue
            for key, mode in (("embedding_model", wire.EMBEDDING), ("chat_model", wire.COMPLETION)):
                ref = strategy.get(key)
                if isinstance(ref, str) and ref.strip() and ref.strip() != "auto":
                    yield ("rag", source, "strategies", i, key), ref.strip(), mode
    results = settings.get("results")
    reranking = results.get("reranking") if isinstance(results, Mapping) else None
    if isinstance(reranking, Mapping) and isinstance(reranking.get("model"), str) and reranking["model"].strip():
        yield ("rag", source, "results", "reranking", "model"), reranking["model"].strip(), wire.RERANKING


# --------------------------------------------------------------------------------------------
# The file


def load_agent_config(doc: _Document, data: Mapping[Any, Any]) -> None:
    """Every dmr model of a docker-agent configuration as LocalModels, one per mode it is used in."""
    models = data.get("models")
    for key in ("models", "agents", "rag"):
        value = data.get(key)
        if value is not None and not isinstance(value, Mapping):
            doc.error((key,), f"must be a mapping of names to settings, got {describe(value)}")
    uses = _collect_uses(data)
    taken: set[str] = set()
    declared: dict[tuple[str, str], str] = {}  # (canonical model, mode) -> LocalModel name, for this file
    named = set(models) if isinstance(models, Mapping) else set()
    if isinstance(models, Mapping):
        for key, entry in models.items():
            _load_model_entry(doc, key, entry, uses.of(str(key)), taken, declared, bool(uses.modes))
    for ref, modes in uses.modes.items():
        if ref not in named:
            _load_inline_ref(doc, ref, modes, taken, declared)


def _load_model_entry(
    doc: _Document,
    key: Any,
    entry: Any,
    modes: dict[str, Loc],
    taken: set[str],
    declared: dict[tuple[str, str], str],
    used_anywhere: bool,
) -> None:
    base: Loc = ("models", key)
    if isinstance(entry, str):  # docker-agent's shorthand: provider/model
        short_provider, _, short_model = entry.partition("/")
        entry = {"provider": short_provider, "model": short_model}
    if not isinstance(entry, Mapping):
        doc.error(base, f"must be a mapping with provider and model, got {describe(entry)}")
        return
    provider = entry.get("provider")
    if provider is None:
        doc.error(base, "provider is required: add provider: dmr (entries of other providers are skipped)")
        return
    if provider != DMR_PROVIDER:
        doc.note(base, f"skipped: provider {provider!r} is not dmr (Docker Model Runner)")
        return
    name = dns_name(str(key))
    spec = _entry_spec(doc, base, entry, name)
    explicit = spec.get("mode")
    wanted = _wanted_modes(doc, base, explicit, modes, used_anywhere)
    names = [_unique(doc, base, name if mode == wanted[0] else f"{name}-{mode}", taken) for mode in wanted]
    if isinstance(entry.get("model"), str):  # even if invalid: references to this model mean this entry
        for mode, mode_name in zip(wanted, names, strict=True):
            declared.setdefault((canonical_ref(entry["model"]), str(mode)), mode_name)
    for mode, mode_name in zip(wanted, names, strict=True):
        mode_spec = dict(spec)
        if mode != wire.COMPLETION or explicit is not None:
            mode_spec["mode"] = mode
        parsed = doc.parse(_localmodel(mode_name, mode_spec), base, _translator(base))
        if parsed is None:
            return  # the same errors would repeat for every mode
        doc.add(parsed, base)


def _wanted_modes(doc: _Document, base: Loc, explicit: Any, modes: dict[str, Loc], used_anywhere: bool) -> list[Any]:
    """The modes to configure a model entry in: the explicit mode, else every mode it is used in."""
    if explicit is not None and not isinstance(explicit, str):
        return [explicit]  # invalid: the spec says why
    if explicit is not None:
        others = sorted(set(modes) - {explicit}, key=lambda m: _MODE_ORDER.get(m, 9))
        if others:
            doc.note(
                (*base, "provider_opts", "mode"),
                f"mode {explicit} is set explicitly, but the file also uses this model for "
                f"{', '.join(_USE.get(m, m) for m in others)}; only mode {explicit} is configured "
                "(the engine keeps one config per mode: declare another model entry for the other use)",
            )
        return [str(explicit)]
    if not modes:
        if used_anywhere:
            doc.note(base, "not used by any agent or RAG source of this file: configured for chat (completion)")
        return [wire.COMPLETION]
    return sorted(modes, key=lambda m: _MODE_ORDER.get(m, 9))


def _entry_spec(doc: _Document, base: Loc, entry: Mapping[Any, Any], name: str) -> dict[str, Any]:
    """The LocalModel spec for a docker-agent model entry; client-side keys are notes, unknown keys warnings."""
    spec: dict[str, Any] = {}
    client_keys: list[str] = []
    for key, value in entry.items():
        if key in ENTRY_FIELDS:
            _put(spec, ENTRY_FIELDS[key], value)
        elif key == "max_tokens":
            doc.note(
                (*base, key),
                "max_tokens is a per-request limit; not an engine setting "
                "(use provider_opts.context_size for the context window)",
            )
        elif key == "base_url":
            doc.note((*base, key), "base_url ignored: use --engine to say where the engine is")
        elif key in CLIENT_ENTRY_KEYS:
            client_keys.append(str(key))
        elif key not in ("provider", "provider_opts"):
            hint = did_you_mean(key, ENTRY_KEYS)
            doc.warn(
                (*base, key),
                f"{key!r} is not a docker-agent model field; docker-agent ignores it and so does localmodel"
                + (f" (did you mean {hint}?)" if hint else ""),
            )
    if client_keys:
        doc.note(base, f"{', '.join(client_keys)}: applied by docker-agent per request; not engine settings")
    opts = entry.get("provider_opts")
    if opts is not None and not isinstance(opts, Mapping):
        doc.error((*base, "provider_opts"), f"must be a mapping, got {describe(opts)}", name)
    elif opts:
        _provider_opts(doc, (*base, "provider_opts"), opts, spec)
    return spec


def _provider_opts(doc: _Document, base: Loc, opts: Mapping[Any, Any], spec: dict[str, Any]) -> None:
    known = (*PROVIDER_OPTS, *CLIENT_OPTS)
    for key, value in opts.items():
        if key in PROVIDER_OPTS:
            if key == "runtime_flags" and isinstance(value, str):
                value = split_runtime_flags(value)
            elif key == "keep_alive" and _negative_duration(value):
                doc.note(
                    (*base, key),
                    f"{value} is negative: the engine keeps the model loaded for good, as with -1 "
                    "(write -1 to say so); applied as -1",
                )
                value = FOREVER
            _put(spec, PROVIDER_OPTS[key], value)
        elif key == "base_url":
            doc.note((*base, key), "base_url ignored: use --engine to say where the engine is")
        elif key in CLIENT_OPTS:
            doc.note(
                (*base, key), f"{key} is a docker-agent client setting ({CLIENT_OPTS[key]}); not an engine setting"
            )
        else:
            hint = did_you_mean(key, known)
            doc.warn(
                (*base, key),
                f"{key!r} is read neither by docker-agent's dmr provider nor by the engine; it has no effect"
                + (f" (did you mean {hint}?)" if hint else f" (engine settings: {', '.join(PROVIDER_OPTS)})"),
            )


def _load_inline_ref(
    doc: _Document, ref: str, modes: dict[str, Loc], taken: set[str], declared: dict[tuple[str, str], str]
) -> None:
    first = next(iter(modes.values()))
    provider, slash, model = ref.partition("/")
    if not slash:
        doc.note(first, f"skipped: {ref!r} is neither an entry of models: nor a provider/model reference")
        return
    if provider != DMR_PROVIDER:
        doc.note(first, f"skipped: provider {provider!r} is not dmr (Docker Model Runner)")
        return
    canonical = canonical_ref(model)
    wanted = [m for m in sorted(modes, key=lambda m: _MODE_ORDER.get(m, 9)) if (canonical, m) not in declared]
    for mode in wanted:
        loc = modes[mode]
        base_name = name_for_ref(model)
        several = len(modes) > 1 or any(key[0] == canonical for key in declared)
        name = _unique(doc, loc, f"{base_name}-{mode}" if several and mode != wire.COMPLETION else base_name, taken)
        spec: dict[str, Any] = {"model": model}
        if mode != wire.COMPLETION:
            spec["mode"] = mode
        parsed = doc.parse(_localmodel(name, spec), loc, lambda _loc, loc=loc: loc)  # type: ignore[misc]
        if parsed is None:
            return
        doc.add(parsed, loc)
        declared[(canonical, mode)] = name


# --------------------------------------------------------------------------------------------
# Helpers


def name_for_ref(ref: str) -> str:
    """A LocalModel name for a model reference: `ai/qwen3:14B` -> `qwen3-14b`, `ai/smollm2` -> `smollm2`."""
    last = ref.rsplit("/", 1)[-1].split("@", 1)[0]
    repo, _, tag = last.partition(":")
    return dns_name(repo if tag in ("", "latest") else f"{repo}-{tag}")


def split_runtime_flags(text: str) -> list[str]:
    """docker-agent's split of a runtime_flags string: on whitespace and commas."""
    return re.split(r"[\s,]+", text.strip()) if text.strip() else []


def _negative_duration(value: object) -> bool:
    """A Go duration below zero other than -1 (docker-agent accepts any; DMR reads every negative one as never)."""
    if not isinstance(value, str) or value.strip() == FOREVER:
        return False
    try:
        return parse_go_duration(value.strip()) < 0
    except DurationError:
        return False


def _unique(doc: _Document, loc: Loc, name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name[: 253 - len(str(n)) - 1]}-{n}"
    if candidate != name:
        doc.note(loc, f"name {name!r} is already used in this file; this LocalModel is named {candidate!r}")
    taken.add(candidate)
    return candidate


def _localmodel(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


def _put(spec: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = spec
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def _translator(base: Loc) -> Translate:
    """Maps a LocalModel error location (`spec.vllm.hfOverrides.x`) to the docker-agent file's own keys."""

    def translate(loc: Loc) -> Loc:
        rest = loc[1:] if loc[:1] == ("spec",) else ()
        for n in range(len(rest), 0, -1):
            if rest[:n] in _SPEC_TO_AGENT:
                return (*base, *_SPEC_TO_AGENT[rest[:n]], *rest[n:])
        return (*base, "provider_opts") if rest else base

    return translate
