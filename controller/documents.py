"""Loading LocalModels from YAML files: LocalModel documents and docker-agent configurations.

Two input forms are understood:

- LocalModel documents (`apiVersion: localmodel.io/v1alpha1`, `kind: LocalModel`), several per
  file separated by `---`, or inside a `kind: List` (what `kubectl get -o yaml` prints);
- docker-agent configurations: `models: <name>: {provider: dmr, model: ..., provider_opts: ...}`
  entries and `agents: <name>: {model: dmr/<ref>}` inline references. Each dmr model becomes a
  LocalModel with the same settings; other providers are skipped with a note.

Other documents (a ConfigMap next to the LocalModels in a GitOps directory) are skipped with a
note. Every problem is reported with the file and the line of the offending field, not raised;
callers decide what to do with `LoadResult.errors`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from controller.refs import canonical_ref
from controller.spec import (
    API_VERSION,
    KIND,
    LocalModel,
    SpecError,
    SpecInvalid,
    describe,
    did_you_mean,
    dns_name,
    format_path,
    parse_localmodel,
)

Loc = tuple[Any, ...]
Translate = Callable[[Loc], Loc]

YAML_SUFFIXES = (".yaml", ".yml")
DMR_PROVIDER = "dmr"

# docker-agent `provider_opts` keys (dmr provider) -> LocalModel spec field path.
PROVIDER_OPTS: dict[str, tuple[str, ...]] = {
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
# docker-agent model-entry keys -> LocalModel spec field path (the rest are client-side settings).
ENTRY_FIELDS: dict[str, tuple[str, ...]] = {
    "model": ("model",),
    "thinking_budget": ("thinkingBudget",),
}
# provider_opts keys that docker-agent itself uses on the client side.
CLIENT_OPTS = ("supports_images", "supports_pdf")
# Model-entry keys that docker-agent applies per request or on the client side.
CLIENT_ENTRY_KEYS = (
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "parallel_tool_calls",
    "token_key",
    "track_usage",
    "routing",
)
ENTRY_KEYS = ("provider", "model", "thinking_budget", "provider_opts", "max_tokens", "base_url", *CLIENT_ENTRY_KEYS)

_SPEC_TO_AGENT: dict[tuple[str, ...], tuple[str, ...]] = {
    **{path: (key,) for key, path in ENTRY_FIELDS.items()},
    **{path: ("provider_opts", key) for key, path in PROVIDER_OPTS.items()},
}

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class ModelSource:
    """Where a LocalModel was declared: the file and the 1-based line of its document or entry."""

    file: str | None
    line: int | None

    def __str__(self) -> str:
        where = self.file or "<input>"
        return f"{where}:{self.line}" if self.line else where


@dataclass(frozen=True)
class Sourced:
    """A LocalModel with its source; the source is not part of equality."""

    model: LocalModel
    source: ModelSource = field(compare=False)


@dataclass
class LoadResult:
    """What a load found: valid LocalModels (in file order), problems, and notes on skipped input."""

    sourced: list[Sourced] = field(default_factory=list)
    errors: list[SpecError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[LocalModel]:
        return [item.model for item in self.sourced]

    @property
    def ok(self) -> bool:
        return not self.errors

    def source_of(self, model: LocalModel) -> ModelSource | None:
        for item in self.sourced:
            if item.model is model:
                return item.source
        return None

    def add(self, model: LocalModel, source: ModelSource) -> None:
        """Add a model unless another one with the same (namespace, name) is already here."""
        key = (model.metadata.namespace, model.name)
        for item in self.sourced:
            if (item.model.metadata.namespace, item.model.name) == key:
                self.errors.append(
                    SpecError(
                        source.file,
                        source.line,
                        model.name,
                        "metadata.name",
                        f"duplicate LocalModel name: {model.name!r} is already declared at {item.source}; "
                        "rename one of them (this one is ignored)",
                        ("metadata", "name"),
                    )
                )
                return
        self.sourced.append(Sourced(model, source))

    def merge(self, other: LoadResult) -> None:
        for item in other.sourced:
            self.add(item.model, item.source)
        self.errors.extend(other.errors)
        self.notes.extend(other.notes)
        self.files.extend(other.files)


# --------------------------------------------------------------------------------------------
# YAML with line numbers and duplicate-key detection


class _Loader(_BaseLoader):  # type: ignore[misc]
    """A safe loader that rejects duplicate keys in a mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *base` followed by overrides is not a duplicate
            key = self.construct_object(key_node, deep=True)
            try:
                first = first_line.get(key)
            except TypeError:
                continue  # unhashable key: the base constructor reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first}): keep only one", key_node.start_mark
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def _yaml_error(exc: yaml.YAMLError, file: str | None) -> SpecError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    if isinstance(exc, yaml.constructor.ConstructorError):
        problem = exc.problem or str(exc)
        message = problem if problem.startswith("duplicate key") else f"unsupported YAML: {problem}"
    elif isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        message = "YAML syntax error: " + ", ".join(parts) if parts else f"YAML syntax error: {exc}"
    else:
        message = f"YAML error: {exc}"
    return SpecError(file, line, None, "", message)


def _documents(text: str, file: str | None, result: LoadResult) -> Iterator[yaml.Node]:
    """The document nodes of `text`, one at a time; a syntax error is recorded and ends the stream."""
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield node
    except yaml.YAMLError as exc:
        result.errors.append(_yaml_error(exc, file))
    finally:
        loader.dispose()


def _locate(node: yaml.Node, loc: Loc) -> int:
    """The 1-based line of the field at `loc` (of its key, for mapping entries), or of the nearest parent found."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    line, node = key_node.start_mark.line + 1, value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


# --------------------------------------------------------------------------------------------
# Documents


@dataclass
class _Document:
    """One YAML document being interpreted: where to report problems and notes."""

    file: str | None
    node: yaml.Node
    result: LoadResult

    def line(self, loc: Loc) -> int:
        return _locate(self.node, loc)

    def error(self, loc: Loc, message: str, obj: str | None = None) -> None:
        self.result.errors.append(SpecError(self.file, self.line(loc), obj, format_path(loc), message, loc))

    def note(self, loc: Loc, text: str) -> None:
        where = str(ModelSource(self.file, self.line(loc)))
        path = format_path(loc)
        self.result.notes.append(f"{where}: {path}: {text}" if path else f"{where}: {text}")

    def parse(self, data: Any, prefix: Loc, translate: Translate | None = None) -> LocalModel | None:
        """Validate a LocalModel at `prefix`.

        Errors are re-pointed at the fields' lines (and paths, via `translate`).
        """
        line = self.line(prefix)
        try:
            return parse_localmodel(data, file=self.file, line=line)
        except SpecInvalid as exc:
            located = []
            for error in exc.errors:
                loc = translate(error.loc) if translate else (*prefix, *error.loc)
                path = format_path(loc) if translate else error.path
                located.append(replace(error, line=self.line(loc), path=path, loc=loc))
            self.result.errors.extend(sorted(located, key=lambda e: e.line or 0))
        except RecursionError:
            self.error(prefix, "recursive YAML aliases are not allowed in a LocalModel")
        return None

    def add(self, model: LocalModel, loc: Loc) -> None:
        self.result.add(model, ModelSource(self.file, self.line(loc)))


def load_text(text: str, file: str | None = None) -> LoadResult:
    """Load every LocalModel in `text` (one YAML stream); `file` labels errors and sources."""
    result = LoadResult(files=[file] if file else [])
    for node in _documents(text, file, result):
        try:
            data = _Loader("").construct_document(node)
        except yaml.YAMLError as exc:
            result.errors.append(_yaml_error(exc, file))
            continue
        except RecursionError:
            result.errors.append(
                SpecError(file, node.start_mark.line + 1, None, "", "recursive YAML aliases are not allowed")
            )
            continue
        _load_document(_Document(file, node, result), data)
    return result


def _load_document(doc: _Document, data: Any) -> None:
    if data is None:
        return
    if not isinstance(data, Mapping):
        doc.note((), f"skipped: not a LocalModel ({describe(data)})")
        return
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if _is_localmodel(kind, api_version):
        model = doc.parse(data, ())
        if model is not None:
            doc.add(model, ())
    elif kind == "List" and api_version == "v1" and isinstance(data.get("items"), list):
        for i, item in enumerate(data["items"]):
            if isinstance(item, Mapping) and _is_localmodel(item.get("kind"), item.get("apiVersion")):
                model = doc.parse(item, ("items", i))
                if model is not None:
                    doc.add(model, ("items", i))
            else:
                doc.note(("items", i), f"skipped: not a LocalModel (kind {_show(item)})")
    elif "kind" in data or "apiVersion" in data:
        doc.note((), f"skipped: not a LocalModel (kind {kind!r}, apiVersion {api_version!r})")
    elif "models" in data or "agents" in data:
        _load_agent_config(doc, data)
    else:
        doc.note((), "skipped: neither a LocalModel nor a docker-agent configuration (no kind, models or agents)")


def _is_localmodel(kind: object, api_version: object) -> bool:
    """LocalModel documents, including ones with a wrong apiVersion or a misspelt kind (reported as errors)."""
    if isinstance(kind, str) and kind.lower() == KIND.lower():
        return True
    return isinstance(api_version, str) and api_version.split("/")[0] == API_VERSION.split("/")[0]


def _show(item: object) -> str:
    return repr(item.get("kind")) if isinstance(item, Mapping) else describe(item)


# --------------------------------------------------------------------------------------------
# docker-agent configurations


def _load_agent_config(doc: _Document, data: Mapping[Any, Any]) -> None:
    models = data.get("models")
    agents = data.get("agents")
    for key, value in (("models", models), ("agents", agents)):
        if value is not None and not isinstance(value, Mapping):
            doc.error((key,), f"must be a mapping of names to settings, got {describe(value)}")
    taken: set[str] = set()
    refs: dict[str, str] = {}  # canonical model ref -> LocalModel name, for dmr entries of this file
    if isinstance(models, Mapping):
        for key, entry in models.items():
            _load_model_entry(doc, key, entry, taken, refs)
    if isinstance(agents, Mapping):
        named = set(models) if isinstance(models, Mapping) else set()
        for agent, settings in agents.items():
            for loc, ref in _agent_refs(doc, agent, settings):
                _load_inline_ref(doc, loc, ref, named, taken, refs)


def _load_model_entry(doc: _Document, key: Any, entry: Any, taken: set[str], refs: dict[str, str]) -> None:
    base: Loc = ("models", key)
    if isinstance(entry, str):  # docker-agent's shorthand: provider/model
        provider, _, model = entry.partition("/")
        entry = {"provider": provider, "model": model}
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
    name = _unique(doc, base, dns_name(str(key)), taken)
    if isinstance(entry.get("model"), str):
        refs.setdefault(canonical_ref(entry["model"]), name)  # even if invalid: agents' refs mean this entry
    spec = _entry_spec(doc, base, entry, name)
    model = doc.parse(_localmodel(name, spec), base, _translator(base))
    if model is not None:
        doc.add(model, base)


def _entry_spec(doc: _Document, base: Loc, entry: Mapping[Any, Any], name: str) -> dict[str, Any]:
    """The LocalModel spec for a docker-agent model entry; unknown keys are errors, client-side ones notes."""
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
            client_keys.append(key)
        elif key not in ("provider", "provider_opts"):
            hint = did_you_mean(key, ENTRY_KEYS)
            doc.error(
                (*base, key),
                f"unknown field {key!r}"
                + (f"; did you mean {hint}?" if hint else f"; known fields: {', '.join(ENTRY_KEYS)}"),
                name,
            )
    if client_keys:
        doc.note(base, f"{', '.join(client_keys)}: applied by docker-agent per request; not engine settings")
    opts = entry.get("provider_opts")
    if opts is not None and not isinstance(opts, Mapping):
        doc.error((*base, "provider_opts"), f"must be a mapping, got {describe(opts)}", name)
    elif opts:
        _provider_opts(doc, (*base, "provider_opts"), opts, spec, name)
    return spec


def _provider_opts(doc: _Document, base: Loc, opts: Mapping[Any, Any], spec: dict[str, Any], name: str) -> None:
    known = (*PROVIDER_OPTS, "base_url", *CLIENT_OPTS)
    for key, value in opts.items():
        if key in PROVIDER_OPTS:
            if key == "runtime_flags" and isinstance(value, str):
                value = split_runtime_flags(value)
            _put(spec, PROVIDER_OPTS[key], value)
        elif key == "base_url":
            doc.note((*base, key), "base_url ignored: use --engine to say where the engine is")
        elif key in CLIENT_OPTS:
            doc.note((*base, key), f"{key} is a docker-agent client setting; not an engine setting")
        else:
            hint = did_you_mean(key, known)
            doc.error(
                (*base, key),
                f"unknown provider_opts key {key!r}"
                + (f"; did you mean {hint}?" if hint else f"; known keys: {', '.join(known)}"),
                name,
            )


def _agent_refs(doc: _Document, agent: Any, settings: Any) -> list[tuple[Loc, str]]:
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


def _load_inline_ref(
    doc: _Document, loc: Loc, ref: str, named: set[Any], taken: set[str], refs: dict[str, str]
) -> None:
    if ref in named:
        return  # an entry of models:, loaded above
    provider, slash, model = ref.partition("/")
    if not slash:
        doc.note(loc, f"skipped: {ref!r} is neither an entry of models: nor a provider/model reference")
        return
    if provider != DMR_PROVIDER:
        doc.note(loc, f"skipped: provider {provider!r} is not dmr (Docker Model Runner)")
        return
    canonical = canonical_ref(model)
    if canonical in refs:
        return  # the same model is already declared in this file
    name = _unique(doc, loc, name_for_ref(model), taken)
    parsed = doc.parse(_localmodel(name, {"model": model}), loc, lambda _loc: loc)
    if parsed is not None:
        doc.add(parsed, loc)
        refs[canonical] = name


def name_for_ref(ref: str) -> str:
    """A LocalModel name for a model reference: `ai/qwen3:14B` -> `qwen3-14b`, `ai/smollm2` -> `smollm2`."""
    last = ref.rsplit("/", 1)[-1].split("@", 1)[0]
    repo, _, tag = last.partition(":")
    return dns_name(repo if tag in ("", "latest") else f"{repo}-{tag}")


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


# --------------------------------------------------------------------------------------------
# Files and directories


def load_file(path: str | os.PathLike[str]) -> LoadResult:
    """Load one file. An unreadable file is an error in the result, not an exception."""
    label = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return LoadResult(
            errors=[SpecError(label, None, None, "", "not UTF-8 text: save the file as UTF-8")], files=[label]
        )
    except OSError as exc:
        return LoadResult(errors=[SpecError(label, None, None, "", f"cannot read: {exc.strerror or exc}")])
    return load_text(text, label)


def _is_skipped(name: str) -> bool:
    """Hidden files and editor leftovers (`.x.swp`, `.#x`, `x~`, `#x#`)."""
    return name.startswith((".", "#")) or name.endswith(("~", "#"))


def _yaml_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not _is_skipped(d))
        found += [Path(root, f) for f in files if f.endswith(YAML_SUFFIXES) and not _is_skipped(f)]
    return sorted(found, key=lambda p: p.relative_to(directory).parts)


def load_paths(paths: Iterable[str | os.PathLike[str]]) -> LoadResult:
    """Load files and directories (recursively `*.yaml`/`*.yml`, sorted, hidden and editor files skipped).

    A LocalModel name declared twice is an error naming both places; the first one is kept.
    """
    result = LoadResult()
    seen: set[Path] = set()
    for path in paths:
        target = Path(path)
        if target.is_dir():
            files = _yaml_files(target)
            if not files:
                result.notes.append(f"{target}: no .yaml or .yml files")
        elif target.exists():
            files = [target]
        else:
            result.errors.append(SpecError(str(target), None, None, "", "no such file or directory"))
            continue
        for file in files:
            resolved = file.resolve()
            if resolved not in seen:
                seen.add(resolved)
                result.merge(load_file(file))
    return result


def split_runtime_flags(text: str) -> list[str]:
    """docker-agent's split of a runtime_flags string: on whitespace and commas."""
    return re.split(r"[\s,]+", text.strip()) if text.strip() else []
