"""Loading LocalModels from YAML files: LocalModel documents, docker-agent configurations, Compose files.

Three input forms are understood:

- LocalModel documents (`apiVersion: localmodel.io/v1alpha1`, `kind: LocalModel`), several per
  file separated by `---`, or inside a `kind: List` (what `kubectl get -o yaml` prints);
- docker-agent configurations: `models: <name>: {provider: dmr, model: ..., provider_opts: ...}`
  entries and `dmr/<ref>` references from agents and RAG sources (controller/agentfile.py). Each dmr
  model becomes a LocalModel per mode it is used in; other providers are skipped with a note;
- Compose files (`compose.yaml`, `docker-compose.yml`, ...): one LocalModel per entry of the
  top-level `models:` element (controller/compose.py).

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

from controller.agentfile import load_agent_config
from controller.agentfile import name_for_ref as name_for_ref  # re-exported
from controller.agentfile import split_runtime_flags as split_runtime_flags  # re-exported
from controller.compose import is_compose_file, load_compose
from controller.inputs import MAX_FILE_BYTES, ReadError, read_text, scan
from controller.spec import (
    API_VERSION,
    KIND,
    LocalModel,
    SpecError,
    SpecInvalid,
    describe,
    format_path,
    parse_localmodel,
)

Loc = tuple[Any, ...]
Translate = Callable[[Loc], Loc]

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
    unreadable: bool = False  # a file could not be read at all (missing, not a regular file, too large, ...)

    @property
    def models(self) -> list[LocalModel]:
        return [item.model for item in self.sourced]

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
            value = _base_60(body)
    elif body.startswith(("0x", "0X")):
        what, value = "a YAML 1.1 hexadecimal number", _digits(body[2:], 16)
    elif body.startswith(("0b", "0B")):
        what, value = "a YAML 1.1 binary number", _digits(body[2:], 2)
    elif "_" in text:
        what = "a number with YAML 1.1 digit separators (_)"
        value = _digits(body, 10)
    elif body.startswith("0") and body.isdigit():
        what = "a YAML 1.1 octal number (a leading 0; YAML 1.2 reads it as decimal)"
        value = _digits(body, 8)
    else:
        what = "a YAML 1.1 number form"
    instead = f"write {sign * value}" if value is not None else "write the number out in decimal"
    return f"{text} is {what}; it is not read as a number here: quote it ('{text}') if it is text, or {instead}"


def _digits(digits: str, base: int) -> int | None:
    """`digits` read in `base`; None when they are not a number in it (`0x_` has no digits at all)."""
    try:
        return int(digits, base)
    except ValueError:
        return None


def _base_60(body: str) -> int | None:
    """`2:16:32` read as YAML 1.1 does (8192); None when a part is not a number."""
    value = 0
    for part in body.split(":"):
        digits = _digits(part, 10)
        if digits is None:
            return None
        value = value * 60 + digits
    return value


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
        load_agent_config(doc, data)
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
# Files and directories


def load_file(path: str | os.PathLike[str], *, limit: int = MAX_FILE_BYTES) -> LoadResult:
    """Load one file (a regular file of at most `limit` bytes, links resolved). A file that cannot be
    read (missing, a FIFO or device, too large, a link loop, not UTF-8) is an error in the result,
    not an exception."""
    label = str(path)
    try:
        text = read_text(Path(path), limit)
    except ReadError as exc:
        return LoadResult(errors=[SpecError(label, None, None, "", str(exc))], files=[label], unreadable=True)
    return load_text(text, label)


def load_paths(paths: Iterable[str | os.PathLike[str]], *, limit: int = MAX_FILE_BYTES) -> LoadResult:
    """Load files and directories (recursively `*.yaml`/`*.yml`, sorted, hidden and editor files and Helm
    charts skipped).

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
            result.notes += [
                f"{chart}: a Helm chart, not read (validate what `helm template` renders from it)"
                for chart in listing.charts
            ]
            if not files and not listing.unreadable and not listing.charts:
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
