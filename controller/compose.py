"""Docker Compose files: one LocalModel per entry of the top-level `models:` element.

Compose declares DMR models like this (the Compose specification's `models` top-level element):

    models:
      llm:
        model: ai/qwen3:14B
        context_size: ${LLM_CONTEXT:-16384}
        runtime_flags: ["--threads", "8"]
        x-localmodel: {keepAlive: 30m, preload: true}

`model`, `context_size` and `runtime_flags` map to the LocalModel fields of the same meaning; an
`x-localmodel:` extension carries any other LocalModel spec field (keepAlive, preload,
thinkingBudget, vllm, speculative, mode, backend...), in the LocalModel's own spelling. Other `x-*`
extensions and everything outside `models:` (services, networks, volumes...) are ignored without a
word: Compose applies those, not us. A key Compose itself does not allow in a model entry is an
error, as it is for `docker compose`.

Values are interpolated as Compose does it, from the environment and then from a `.env` file beside
the Compose file (the environment wins): `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
`${VAR:?error}`, `${VAR?error}`, `${VAR:+replacement}`, `${VAR+replacement}`, nested defaults, and
`$$` for a literal `$`. A variable that is not set and has no default becomes the empty string with a
warning, as in Compose. Any other `${...}` form is an error naming it. An interpolated value of a
number or boolean field (`context_size: ${CTX}`) is read as that type, as Compose does with its schema.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from controller.spec import API_VERSION, KIND, describe, did_you_mean, dns_name

if TYPE_CHECKING:
    from controller.documents import _Document

COMPOSE_FILE_NAMES: Final = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
EXTENSION: Final = "x-localmodel"
ENV_FILE: Final = ".env"

# Compose model-entry keys -> LocalModel spec field.
ENTRY_FIELDS: Final = {"model": "model", "context_size": "contextSize", "runtime_flags": "runtimeFlags"}
_SPEC_TO_ENTRY: Final = {spec: key for key, spec in ENTRY_FIELDS.items()}

# LocalModel spec fields whose interpolated (string) value is read as a number or a boolean.
_INTEGER_FIELDS: Final = frozenset({("contextSize",), ("thinkingBudget",), ("speculative", "numTokens")})
_FLOAT_FIELDS: Final = frozenset({("speculative", "acceptanceRate"), ("vllm", "gpuMemoryUtilization")})
_BOOL_FIELDS: Final = frozenset({("preload",)})

_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
_INT = re.compile(r"[-+]?[0-9]+\Z")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_OPERATORS: Final = (":-", ":?", ":+", "-", "?", "+")
SUPPORTED_FORMS: Final = (
    "$VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, ${VAR+alt}"
)

Loc = tuple[Any, ...]


def is_compose_file(file: str | None) -> bool:
    """A Compose file by its name, as `docker compose` finds one in a directory."""
    return file is not None and os.path.basename(file) in COMPOSE_FILE_NAMES


# --------------------------------------------------------------------------------------------
# Interpolation


class InterpolationError(ValueError):
    """A `${...}` that Compose would refuse (an unsupported form, an unclosed brace, a required variable)."""


@dataclass
class Interpolator:
    """Compose's variable substitution over one set of variables; records the variables found unset."""

    variables: Mapping[str, str]
    unset: list[str] = field(default_factory=list)

    def __call__(self, text: str) -> str:
        out, end = self._expand(text, 0, closing=False)
        return out

    def _expand(self, text: str, start: int, *, closing: bool) -> tuple[str, int]:
        """Expand `text` from `start`; with `closing`, stop at the `}` that closes an enclosing `${`."""
        out: list[str] = []
        i = start
        while i < len(text):
            char = text[i]
            if closing and char == "}":
                return "".join(out), i
            if char != "$":
                out.append(char)
                i += 1
                continue
            following = text[i + 1 : i + 2]
            if following == "$":
                out.append("$")
                i += 2
            elif following == "{":
                value, i = self._braced(text, i)
                out.append(value)
            elif (match := _NAME.match(text, i + 1)) is not None:
                out.append(self._lookup(match.group()))
                i = match.end()
            else:
                out.append("$")  # not a variable: kept as written, as Compose does
                i += 1
        if closing:
            raise InterpolationError(f"unclosed ${{ in {text!r}: add the closing }}")
        return "".join(out), i

    def _braced(self, text: str, start: int) -> tuple[str, int]:
        """`${...}` at `start`; returns its value and the index after the closing brace."""
        match = _NAME.match(text, start + 2)
        if match is None:
            raise InterpolationError(_unsupported(text, start))
        name, i = match.group(), match.end()
        if text[i : i + 1] == "}":
            return self._lookup(name), i + 1
        operator = next((op for op in _OPERATORS if text.startswith(op, i)), None)
        if operator is None:
            raise InterpolationError(_unsupported(text, start))
        argument, close = self._expand(text, i + len(operator), closing=True)
        value = self.variables.get(name)
        empty_counts = operator.startswith(":")
        missing = value is None or (empty_counts and value == "")
        kind = operator[-1]
        if kind == "-":
            return (argument if missing else value or ""), close + 1
        if kind == "+":
            return ("" if missing else argument), close + 1
        if missing:  # "?": required
            why = argument or ("is not set" if value is None else "is empty")
            raise InterpolationError(f"required variable {name} is missing a value: {why}")
        return value or "", close + 1

    def _lookup(self, name: str) -> str:
        value = self.variables.get(name)
        if value is None:
            if name not in self.unset:
                self.unset.append(name)
            return ""
        return value


def _unsupported(text: str, start: int) -> str:
    depth, end = 0, len(text)
    for j in range(start + 1, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                end = j + 1
                break
    form = text[start:end]
    if end == len(text) and not form.endswith("}"):
        return f"unclosed ${{ in {text!r}: add the closing }}"
    return f"{form} is not a Compose interpolation this reader supports; use {SUPPORTED_FORMS}, or $$ for a literal $"


def parse_env_file(text: str) -> dict[str, str]:
    """A Compose `.env` file: `KEY=VALUE` lines, `#` comments, optional `export `, single quotes literal,
    double quotes with `\\n`/`\\t`/`\\\\`/`\\"` escapes, an unquoted value's ` #` comment dropped.
    (Values are not interpolated against each other here: a `$` in a value is kept.)"""
    variables: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            continue
        value = value.strip()
        if value[:1] == "'" and "'" in value[1:]:
            value = value[1 : value.index("'", 1)]
        elif value[:1] == '"' and '"' in value[1:]:
            body, i, escaped = [], 1, False
            while i < len(value):
                char = value[i]
                if escaped:
                    body.append({"n": "\n", "t": "\t", "r": "\r"}.get(char, char))
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    break
                else:
                    body.append(char)
                i += 1
            value = "".join(body)
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        variables[key] = value
    return variables


def compose_variables(file: str | None, environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], str | None]:
    """The variables a Compose file sees: the `.env` file beside it, overridden by the environment.
    Returns them and an error about the `.env` file (unreadable), if any."""
    from controller.inputs import ReadError, read_text

    variables: dict[str, str] = {}
    problem = None
    if file is not None:
        env_path = Path(file).parent / ENV_FILE
        if os.path.lexists(env_path):
            try:
                variables.update(parse_env_file(read_text(env_path)))
            except ReadError as exc:
                problem = f"{env_path}: {exc}"
    variables.update(os.environ if environ is None else environ)
    return variables, problem


# --------------------------------------------------------------------------------------------
# The models element


def load_compose(doc: _Document, data: Mapping[Any, Any], environ: Mapping[str, str] | None = None) -> None:
    """Every entry of `models:` as a LocalModel; the rest of the file is not looked at."""
    models = data.get("models")
    if models is None:
        return
    if not isinstance(models, Mapping):
        doc.error(
            ("models",),
            f"must be a mapping of model names to {{model, context_size, runtime_flags}}, got {describe(models)}",
        )
        return
    variables, problem = compose_variables(doc.file, environ)
    if problem:
        doc.error((), f"cannot read the {ENV_FILE} file: {problem}")
    taken: set[str] = set()
    for key, entry in models.items():
        _load_entry(doc, ("models", key), key, entry, Interpolator(variables), taken)


def _load_entry(doc: _Document, base: Loc, key: Any, entry: Any, interpolate: Interpolator, taken: set[str]) -> None:
    if not isinstance(entry, Mapping):
        doc.error(base, f"must be a mapping with model (and context_size, runtime_flags), got {describe(entry)}")
        return
    name = dns_name(str(key))
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate)
    spec: dict[str, Any] = {}
    origin: dict[str, Loc] = {}  # spec field -> where the user wrote it
    ok = True
    for field_key, value in entry.items():
        loc = (*base, field_key)
        if field_key in ENTRY_FIELDS:
            target = ENTRY_FIELDS[field_key]
            spec[target], good = _interpolated(doc, loc, (target,), value, interpolate, candidate)
            origin[target] = loc
            ok = ok and good
        elif field_key == EXTENSION:
            continue  # below, once the Compose fields are known
        elif isinstance(field_key, str) and field_key.startswith("x-"):
            continue  # another tool's extension
        else:
            hint = did_you_mean(field_key, [*ENTRY_FIELDS, EXTENSION])
            doc.error(
                loc,
                f"unknown key {field_key!r} in a Compose model"
                + (
                    f"; did you mean {hint}?"
                    if hint
                    else f"; Compose allows {', '.join(ENTRY_FIELDS)} and x-* extensions"
                )
                + f" (other LocalModel fields go under {EXTENSION})",
                candidate,
            )
            ok = False
    if EXTENSION in entry:
        ok = _extension(doc, (*base, EXTENSION), entry[EXTENSION], spec, origin, interpolate, candidate) and ok
    for variable in interpolate.unset:
        doc.warn(base, f"variable {variable} is not set; it is replaced by an empty string (as Compose does)")
    interpolate.unset.clear()
    if not ok:
        return
    document = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": candidate}, "spec": spec}
    model = doc.parse(document, base, _translator(base, origin))
    if model is not None:
        doc.add(model, base)


def _extension(
    doc: _Document,
    loc: Loc,
    value: Any,
    spec: dict[str, Any],
    origin: dict[str, Loc],
    interpolate: Interpolator,
    name: str,
) -> bool:
    if not isinstance(value, Mapping):
        doc.error(
            loc, f"must be a mapping of LocalModel spec fields (keepAlive, preload, ...), got {describe(value)}", name
        )
        return False
    ok = True
    for spec_key, item in value.items():
        if spec_key in spec:
            where = _SPEC_TO_ENTRY.get(spec_key, spec_key)
            doc.error((*loc, spec_key), f"{spec_key} is already set by {where}: set it once", name)
            ok = False
            continue
        spec[spec_key], good = _interpolated(doc, (*loc, spec_key), (str(spec_key),), item, interpolate, name)
        origin[str(spec_key)] = (*loc, spec_key)
        ok = ok and good
    return ok


def _interpolated(
    doc: _Document, loc: Loc, path: tuple[str, ...], value: Any, interpolate: Interpolator, name: str
) -> tuple[Any, bool]:
    """`value` with every string interpolated (recursively), interpolated strings of typed fields converted."""
    try:
        return _walk(value, path, interpolate), True
    except InterpolationError as exc:
        doc.error(loc, str(exc), name)
        return None, False


def _walk(value: Any, path: tuple[str, ...], interpolate: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        if "$" not in value:
            return value
        return _typed(interpolate(value), path)
    if isinstance(value, Mapping):
        return {k: _walk(v, (*path, str(k)), interpolate) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, path, interpolate) for v in value]
    return value


def _typed(text: str, path: tuple[str, ...]) -> Any:
    """An interpolated string as the field's type, when it reads as one (else left as text: the spec says why)."""
    stripped = text.strip()
    if path in _INTEGER_FIELDS and _INT.match(stripped):
        return int(stripped)
    if path in _FLOAT_FIELDS and _FLOAT.match(stripped):
        return float(stripped)
    if path in _BOOL_FIELDS and stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    return text


def _translator(base: Loc, origin: Mapping[str, Loc]) -> Callable[[Loc], Loc]:
    """A LocalModel error location (`spec.contextSize`) -> the Compose file's own key (`models.llm.context_size`)."""

    def translate(loc: Loc) -> Loc:
        rest = loc[1:] if loc[:1] == ("spec",) else ()
        if rest and str(rest[0]) in origin:
            return (*origin[str(rest[0])], *rest[1:])
        return base

    return translate
