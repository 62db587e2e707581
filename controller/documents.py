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

from controller.compose import is_compose_file, load_compose
from controller.durations import FOREVER, DurationError, parse_go_duration
from controller.inputs import MAX_FILE_BYTES, ReadError, read_text, scan
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

# Bounds on what one YAML stream may make us build (see _Loader).
MAX_DEPTH = 64  # nesting of mappings and sequences
MAX_ALIAS_NODES = 10_000  # nodes that aliases may add to a stream when expanded (an alias bomb adds billions)
MAX_INT_DIGITS = 32  # an integer setting fits in 20 digits; Python cannot even print one of 4,301
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
    """What a load found: valid LocalModels (in file order), problems, notes on skipped input, and
    warnings (input that is likely a mistake but not refused: `validate --strict` fails on them)."""

    sourced: list[Sourced] = field(default_factory=list)
    errors: list[SpecError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

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
        self.warnings.extend(other.warnings)


# --------------------------------------------------------------------------------------------
# YAML with line numbers, duplicate-key detection and bounds


class _Rejected(yaml.MarkedYAMLError):
    """Input the loader refuses on purpose; `problem` is the whole message for the user."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(None, None, problem, mark)


# YAML 1.1 integer forms that PyYAML reads as numbers but YAML 1.2 readers (Go's yaml for Kubernetes
# and docker-agent) read differently or as text. Only plain decimal integers are taken as they are.
_DECIMAL_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_DECIMAL_FLOAT = re.compile(
    r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+][0-9]+)?\Z|[-+]?\.(?:inf|Inf|INF)\Z|\.(?:nan|NaN|NAN)\Z"
)


def _number_hint(text: str) -> str:
    """Why a YAML 1.1 number form is refused, and what to write instead."""
    body = text.lstrip("+-").replace("_", "")
    sign = -1 if text.startswith("-") else 1
    what, value = "", None
    if len(body) > MAX_INT_DIGITS:
        return f"{text[:40]}... is a number too large for any setting: quote it if it is text"
    if ":" in text:
        what = "a YAML 1.1 base-60 number; Kubernetes and docker-agent read it as the text " + repr(text)
        if "." not in body:
            value = 0
            for part in body.split(":"):
                value = value * 60 + int(part)
    elif body.startswith(("0x", "0X")):
        what, value = "a YAML 1.1 hexadecimal number", int(body[2:], 16)
    elif body.startswith(("0b", "0B")):
        what, value = "a YAML 1.1 binary number", int(body[2:], 2)
    elif "_" in text:
        what = "a number with YAML 1.1 digit separators (_)"
        value = int(body) if body.isdigit() else None
    elif body.startswith("0") and body.isdigit():
        what = "a YAML 1.1 octal number (a leading 0; YAML 1.2 reads it as decimal)"
        value = int(body, 8)
    else:
        what = "a YAML 1.1 number form"
    instead = f"write {sign * value}" if value is not None else "write the number out in decimal"
    return f"{text} is {what}; it is not read as a number here: quote it ('{text}') if it is text, or {instead}"


_SafeBase: Any  # PyYAML's safe loader, its events from libyaml when PyYAML has it
try:
    from yaml._yaml import CParser as _EventSource

    class _CSafeBase(yaml.composer.Composer, _EventSource, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        """Events from libyaml (fast); composing them into nodes in Python, where it can be bounded."""

        def __init__(self, stream: str) -> None:
            _EventSource.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _SafeBase, _BYTE_OFFSETS = _CSafeBase, True  # libyaml reports a reader error's position in UTF-8 bytes
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _SafeBase, _BYTE_OFFSETS = yaml.SafeLoader, False


class _Loader(_SafeBase):  # a subclass of a base chosen at import time
    """PyYAML's safe loader, bounded, and stricter where PyYAML is silently lenient:

    - nesting deeper than MAX_DEPTH, aliases that would expand to more than MAX_ALIAS_NODES nodes
      (an "alias bomb": a kilobyte that expands to gigabytes), and recursive aliases are errors,
      found while composing, before anything is built;
    - integers longer than MAX_INT_DIGITS digits are errors (Python refuses to print an integer of
      4,301 digits), and YAML 1.1 number forms (`2:16:32`, `0x2000`, `8_192`, `010`) are errors
      with a hint: other tools read them differently, so taking them as numbers would be a guess;
    - a key given twice in a mapping is an error (PyYAML silently keeps the last).

    Events come from libyaml when PyYAML has it; composing them into nodes is PyYAML's Python
    composer, which can be bounded (libyaml's cannot). Callers run it off the event loop.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._alias_nodes = 0
        self._open_anchors: set[str] = set()
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event: Any = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise _Rejected(
                    f"recursive YAML alias *{event.anchor}: an alias cannot point into itself",
                    event.start_mark,
                )
            if event.anchor in self.anchors:
                self._alias_nodes += self._size(self.anchors[event.anchor])
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise _Rejected(
                        f"YAML aliases expand to more than {MAX_ALIAS_NODES} values: write the values out "
                        "instead of repeating aliases of aliases",
                        event.start_mark,
                    )
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise _Rejected(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        anchor = getattr(event, "anchor", None)
        self._depth += 1
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open_anchors.discard(anchor)

    def _size(self, node: yaml.Node) -> int:
        """How many nodes `node` stands for once every alias in it is expanded (memoized: linear time)."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        return size

    def compose_document(self) -> yaml.Node | None:
        self._sizes.clear()  # anchors (and so the nodes sized) do not cross documents
        return super().compose_document()

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
        return super().construct_mapping(node, deep=deep)

    def construct_bounded_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node)).strip()
        if not _DECIMAL_INT.match(text):
            raise _Rejected(_number_hint(text), node.start_mark)
        digits = len(text.lstrip("+-"))
        if digits > MAX_INT_DIGITS:
            raise _Rejected(
                f"an integer of {digits} digits is too large for any setting (at most {MAX_INT_DIGITS}): "
                "quote it if it is text",
                node.start_mark,
            )
        return int(text)

    def construct_bounded_float(self, node: yaml.ScalarNode) -> float:
        text = str(self.construct_scalar(node)).strip()
        if not _DECIMAL_FLOAT.match(text):
            raise _Rejected(_number_hint(text), node.start_mark)
        return super().construct_yaml_float(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_bounded_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_bounded_float)


def _yaml_error(exc: yaml.YAMLError, file: str | None, text: str = "") -> SpecError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    if isinstance(exc, _Rejected):
        message = exc.problem or str(exc)
    elif isinstance(exc, yaml.constructor.ConstructorError):
        problem = exc.problem or str(exc)
        message = problem if problem.startswith("duplicate key") else f"unsupported YAML: {problem}"
    elif isinstance(exc, yaml.reader.ReaderError):
        before = (
            text.encode("utf-8")[: exc.position].decode("utf-8", "replace") if _BYTE_OFFSETS else text[: exc.position]
        )
        line = before.count("\n") + 1 if text else None
        column = len(before) - before.rfind("\n") if text else None
        where = f" at column {column}" if column else ""
        message = (
            f"YAML error: a control character (#x{exc.character:04x}){where} is not allowed in YAML: remove it"
            if isinstance(exc.character, int)
            else f"YAML error: {exc.reason}"
        )
    elif isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        message = "YAML syntax error: " + ", ".join(parts) if parts else f"YAML syntax error: {exc}"
    else:
        message = f"YAML error: {exc}"
    return SpecError(file, line, None, "", message)


def _documents(text: str, file: str | None, result: LoadResult) -> Iterator[yaml.Node]:
    """The document nodes of `text`, one at a time; an error is recorded and ends the stream."""
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # a control character: the reader checks the whole text first
        result.errors.append(_yaml_error(exc, file, text))
        return
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield node
    except yaml.YAMLError as exc:
        result.errors.append(_yaml_error(exc, file, text))
    except RecursionError:  # a bound above should have stopped it first; never a crash
        result.errors.append(SpecError(file, None, None, "", "YAML nested too deeply to read"))
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

    def warn(self, loc: Loc, text: str) -> None:
        where = str(ModelSource(self.file, self.line(loc)))
        path = format_path(loc)
        self.result.warnings.append(f"{where}: {path}: {text}" if path else f"{where}: {text}")

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
    if is_compose_file(doc.file):
        load_compose(doc, data)
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


def load_file(path: str | os.PathLike[str], *, limit: int = MAX_FILE_BYTES) -> LoadResult:
    """Load one file (a regular file of at most `limit` bytes, links resolved). A file that cannot be
    read (missing, a FIFO or device, too large, a link loop, not UTF-8) is an error in the result,
    not an exception."""
    label = str(path)
    try:
        text = read_text(Path(path), limit)
    except ReadError as exc:
        return LoadResult(errors=[SpecError(label, None, None, "", str(exc))], files=[label])
    return load_text(text, label)


def load_paths(paths: Iterable[str | os.PathLike[str]], *, limit: int = MAX_FILE_BYTES) -> LoadResult:
    """Load files and directories (recursively `*.yaml`/`*.yml`, sorted, hidden and editor files skipped).

    A directory below one given that cannot be listed is an error naming it (its files are not read).
    A LocalModel name declared twice is an error naming both places; the first one is kept.
    """
    result = LoadResult()
    seen: set[str] = set()
    for path in paths:
        target = Path(path)
        if target.is_dir():
            listing = scan(target)
            files = listing.files
            for directory, why in sorted(listing.unreadable.items()):
                result.errors.append(
                    SpecError(
                        str(directory), None, None, "", f"cannot read the directory ({why}); its files were not read"
                    )
                )
            if not files and not listing.unreadable:
                result.notes.append(f"{target}: no .yaml or .yml files")
        elif os.path.lexists(target):
            files = [target]
        else:
            result.errors.append(SpecError(str(target), None, None, "", "no such file or directory"))
            continue
        for file in files:
            resolved = os.path.realpath(file)  # not Path.resolve(): it raises on a link loop
            if resolved not in seen:
                seen.add(resolved)
                result.merge(load_file(file, limit=limit))
    return result


def _negative_duration(value: object) -> bool:
    """A Go duration below zero other than -1 (docker-agent accepts any; DMR reads every negative one as never)."""
    if not isinstance(value, str) or value.strip() == FOREVER:
        return False
    try:
        return parse_go_duration(value.strip()) < 0
    except DurationError:
        return False


def split_runtime_flags(text: str) -> list[str]:
    """docker-agent's split of a runtime_flags string: on whitespace and commas."""
    return re.split(r"[\s,]+", text.strip()) if text.strip() else []
