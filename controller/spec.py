"""The LocalModel resource: schema, validation rules and error reporting (pure: no I/O).

A LocalModel declares one model and the engine settings it should run with:

    apiVersion: localmodel.io/v1alpha1
    kind: LocalModel
    metadata: {name: qwen3}
    spec: {model: ai/qwen3:14B, contextSize: 16384, keepAlive: 30m}

Field names are camelCase on the wire and in YAML, snake_case in Python (both are accepted on
input). Every rule of docs/engine-contract.md §9 is enforced here, before anything is sent, and an
unknown field is an error rather than a silent no-op. Problems come back as `SpecError`s that
name the field path and say how to fix it.

Decisions worth knowing:
- Numbers are strict: `contextSize: "8192"`, `8192.0` and `true` are rejected with a hint,
  because the engine's JSON decoder would reject (or, for other clients, silently drop) them.
- `contextSize: 0` is rejected: on the wire it means "engine default", which is spelled by
  omitting the field.
- `keepAlive: 300` (a bare number) is rejected: the engine wants a Go duration (`300s`, `5m`).
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controller import wire
from controller.durations import DurationError, parse_keep_alive

API_VERSION: Final = "localmodel.io/v1alpha1"
KIND: Final = "LocalModel"

PULL_IF_NOT_PRESENT: Final = "IfNotPresent"
PULL_ALWAYS: Final = "Always"
PULL_NEVER: Final = "Never"
PULL_POLICIES: Final = (PULL_IF_NOT_PRESENT, PULL_ALWAYS, PULL_NEVER)

DELETION_UNLOAD: Final = "Unload"
DELETION_DELETE: Final = "Delete"
DELETION_RETAIN: Final = "Retain"
DELETION_POLICIES: Final = (DELETION_UNLOAD, DELETION_DELETE, DELETION_RETAIN)

UNLIMITED_CONTEXT: Final = -1
ADAPTIVE: Final = "adaptive"

#: Thinking-budget efforts and the token budgets they stand for (-1: unlimited). Case-insensitive;
#: `adaptive/<effort>` is accepted too and also means -1.
THINKING_EFFORTS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "none": 0,
        "minimal": 1024,
        "low": 2048,
        "medium": 8192,
        "high": 16384,
        "xhigh": 32768,
        "max": 32768,
        ADAPTIVE: -1,
    }
)

#: Backends that reject every runtime flag (no allowlist in the engine; docs/engine-contract.md §5.1).
FLAGLESS_BACKENDS: Final = (wire.MLX, wire.SGLANG, wire.DIFFUSERS)

_HF_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_BARE_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_UNNAMED: Final = "<unnamed>"

Loc = tuple[str | int, ...]


# --------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class SpecError:
    """One problem in a LocalModel: where it is and what to do about it.

    `path` is the dotted field path as the user wrote it (`spec.vllm.hfOverrides.rope-scaling`,
    `spec.runtimeFlags[2]`); `loc` is the same path as a tuple, for tools that locate the field
    in a source file.
    """

    file: str | None
    line: int | None
    object: str | None
    path: str
    message: str
    loc: Loc = field(default=(), compare=False, repr=False)

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else self.file)
        elif self.line:
            parts.append(f"line {self.line}")
        if self.object:
            parts.append(self.object)
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class SpecInvalid(Exception):
    """Raised when a LocalModel (or a bare spec) does not validate; carries every problem found."""

    def __init__(self, errors: list[SpecError]):
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


class _Invalid(ValueError):
    """A validator's complaint, optionally about a field below the one being validated."""

    def __init__(self, message: str, subpath: Loc = ()):
        super().__init__(message)
        self.message = message
        self.subpath = subpath


def format_path(loc: Iterable[str | int]) -> str:
    """`('spec', 'runtimeFlags', 2)` -> `spec.runtimeFlags[2]`."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: object, candidates: Iterable[str]) -> str | None:
    """The candidate a likely typo meant: same letters ignoring case, `_` and `-`, else the closest."""
    if not isinstance(word, str):
        return None
    options = list(candidates)
    squashed = {c.lower().replace("_", "").replace("-", ""): c for c in options}
    key = word.lower().replace("_", "").replace("-", "")
    if key in squashed:
        return squashed[key]
    close = difflib.get_close_matches(key, list(squashed), n=1, cutoff=0.75)
    return squashed[close[0]] if close else None


def describe(value: object) -> str:
    """A short, human description of a YAML/JSON value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {text!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a value of type {type(value).__name__}"


def _one_of(value: str, choices: Iterable[str], what: str) -> str:
    options = tuple(choices)
    if value in options:
        return value
    hint = did_you_mean(value, options)
    message = f"unknown {what} {value!r}; use one of: {', '.join(options)}"
    raise _Invalid(message + (f" (did you mean {hint}?)" if hint else ""))


# --------------------------------------------------------------------------------------------
# Field rules shared by the LocalModel schema and the docker-agent loader


def thinking_budget_tokens(value: int | str) -> int:
    """The token budget an already-validated thinking budget stands for (-1: unlimited)."""
    if isinstance(value, int):
        return value
    effort = value.strip().lower()
    if effort.startswith(ADAPTIVE + "/"):
        return THINKING_EFFORTS[ADAPTIVE]
    return THINKING_EFFORTS[effort]


def _check_thinking_budget(value: object) -> int | str:
    efforts = ", ".join([*THINKING_EFFORTS, "adaptive/<effort>"])
    expected = f"an integer token count (-1 unlimited, 0 off) or an effort: {efforts}"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _Invalid(f"must be {expected}; got {describe(value)}")
    if isinstance(value, int):
        if value < -1:
            raise _Invalid(f"{value} is not a budget: use -1 (unlimited), 0 (thinking off) or a positive token count")
        if value > wire.INT32_MAX:
            raise _Invalid(
                f"{value} is too large: the engine takes at most {wire.INT32_MAX} tokens (use -1 for unlimited)"
            )
        return value
    effort = value.strip().lower()
    if _BARE_NUMBER.match(effort):
        raise _Invalid(f"{value!r} is a quoted number: write it without quotes, or use an effort ({efforts})")
    base, slash, inner = effort.partition("/")
    if slash and base == ADAPTIVE and inner in THINKING_EFFORTS and inner != ADAPTIVE:
        return value
    if not slash and effort in THINKING_EFFORTS:
        return value
    hint = did_you_mean(effort, THINKING_EFFORTS)
    suffix = f" (did you mean {hint}?)" if hint else ""
    raise _Invalid(f"unknown effort {value!r}; use {expected}{suffix}")


def _seconds_hint(number: str) -> str:
    try:
        seconds = int(float(number))
    except (ValueError, OverflowError):  # "1e999" is a number too, and infinite
        return "30s or 5m"
    if seconds > 0 and seconds % 60 == 0:
        return f"{seconds}s or {seconds // 60}m"
    return f"{abs(seconds)}s"


def _check_keep_alive(value: object) -> str:
    special = 'use "0" to unload as soon as idle or "-1" to keep it loaded'
    if isinstance(value, bool):
        raise _Invalid(f"must be a duration such as 5m, 1h or 2h30m, got {describe(value)}; {special}")
    if isinstance(value, (int, float)):
        if value in (0, -1):
            raise _Invalid(f'a bare number is not a duration: quote it ("{int(value)}")')
        raise _Invalid(f"a bare number is not a duration: write {_seconds_hint(str(value))} (Go duration syntax)")
    if not isinstance(value, str):
        raise _Invalid(f"must be a duration such as 5m, 1h or 2h30m, got {describe(value)}")
    if value == "":
        raise _Invalid("must not be empty: omit keepAlive to use the engine default (5m)")
    if _BARE_NUMBER.match(value) and value not in ("0", "-1"):
        raise _Invalid(f"{value!r} is a bare number, not a duration: write {_seconds_hint(value)}; {special}")
    try:
        nanoseconds = parse_keep_alive(value)
    except DurationError:
        raise _Invalid(
            f"{value!r} is not a duration: write a Go duration such as 30s, 5m, 1h or 2h30m, or {special}"
        ) from None
    if value.startswith("-") and value != "-1" and nanoseconds == 0:
        raise _Invalid(f'{value!r} is zero with a minus sign: write "0" to unload as soon as idle, or -1 for never')
    if value.startswith("-") and value != "-1":
        # The engine takes any negative duration as "never unload" and reports it back as -1: a -5m meant
        # as something else would be applied as forever, and verified.
        raise _Invalid(
            f"{value!r} is a negative duration, which the engine treats as never unloading: "
            'write -1 for never, or a positive duration such as 5m ("0" unloads as soon as idle)'
        )
    return value


def _check_raw_flags(value: str) -> str:
    """The engine splits `raw-runtime-flags` as a shell does (go-shellwords) and answers 500 when it cannot:
    refuse such a string before anything is sent."""
    try:
        shlex.split(value, posix=True)
    except ValueError as exc:
        raise _Invalid(
            f"cannot be split into flags as a shell would ({str(exc).lower()}): close the quote or escape it "
            "with a backslash, or write the flags as a runtimeFlags list"
        ) from None
    return value


def _check_context_size(value: object) -> int:
    if isinstance(value, bool):
        raise _Invalid(f"must be an integer token count such as 8192, got {describe(value)}")
    if isinstance(value, float):
        if value.is_integer():
            raise _Invalid(f"must be a whole number without a decimal point: write {int(value)}")
        raise _Invalid(f"must be an integer token count such as 8192, got {describe(value)}")
    if isinstance(value, str):
        if _BARE_NUMBER.match(value.strip()):
            raise _Invalid(f"must be an integer, not a string: write {value.strip()} without quotes")
        raise _Invalid(f"must be an integer token count such as 8192, got {describe(value)}")
    if not isinstance(value, int):
        raise _Invalid(f"must be an integer token count such as 8192, got {describe(value)}")
    if value == 0:
        raise _Invalid("0 is not a context size: omit contextSize to use the model's packaged default")
    if value < UNLIMITED_CONTEXT:
        raise _Invalid(f"{value} is not a context size: use a positive token count, or -1 for unlimited (llama.cpp)")
    if value > wire.INT32_MAX:
        raise _Invalid(f"{value} is too large: the engine takes at most {wire.INT32_MAX} (int32)")
    return value


def _check_hf_value(value: object, subpath: Loc) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(f"{value} is not a JSON number; use a finite number", subpath)
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_hf_value(item, (*subpath, i))
        return
    if isinstance(value, Mapping):
        _check_hf_mapping(value, subpath)
        return
    raise _Invalid(
        f"unsupported value ({describe(value)}): use a string, boolean, number, null, or a list or mapping of those",
        subpath,
    )


def _check_hf_mapping(mapping: Mapping[Any, Any], subpath: Loc) -> None:
    for key, item in mapping.items():
        if not isinstance(key, str) or not _HF_KEY.match(key):
            fix = key.replace("-", "_").replace(".", "_") if isinstance(key, str) else None
            hint = f" (e.g. {fix})" if fix and _HF_KEY.match(fix) else ""
            raise _Invalid(
                f"invalid key {key!r}: keys must match ^[a-zA-Z_][a-zA-Z0-9_]*$ "
                f"(letters, digits and underscores, not starting with a digit){hint}",
                (*subpath, str(key)),
            )
        _check_hf_value(item, (*subpath, key))


def _check_hf_overrides(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Invalid(f"must be a mapping of Hugging Face config keys to values, got {describe(value)}")
    _check_hf_mapping(value, ())
    return dict(value)


def _check_fraction(value: float, what: str) -> float:
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise _Invalid(f"{value} is out of range: {what} is a fraction between 0.0 and 1.0 inclusive")
    return value


def _check_model_ref(value: str, example: str) -> str:
    if not value.strip():
        raise _Invalid(f"must not be empty: name a model, e.g. {example}")
    if any(ch.isspace() for ch in value):
        raise _Invalid(f"{value!r} contains whitespace: a model reference looks like {example}")
    return value


# --------------------------------------------------------------------------------------------
# Schema

_SPEC_CONFIG = ConfigDict(extra="forbid", strict=True, populate_by_name=True, frozen=True)


class VllmOptions(BaseModel):
    """vLLM-only settings (sent as the `vllm` block of `_configure`)."""

    model_config = _SPEC_CONFIG

    gpu_memory_utilization: float | None = Field(default=None, alias="gpuMemoryUtilization")
    hf_overrides: dict[str, Any] | None = Field(default=None, alias="hfOverrides")

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _gpu_range(cls, value: float | None) -> float | None:
        return None if value is None else _check_fraction(value, "gpuMemoryUtilization")

    @field_validator("hf_overrides", mode="before")
    @classmethod
    def _hf_keys(cls, value: object) -> object:
        return None if value is None else _check_hf_overrides(value)

    @property
    def is_set(self) -> bool:
        return self.gpu_memory_utilization is not None or self.hf_overrides is not None


class SpeculativeOptions(BaseModel):
    """Speculative decoding: a smaller draft model predicts tokens ahead of the main model."""

    model_config = _SPEC_CONFIG

    draft_model: str | None = Field(default=None, alias="draftModel")
    num_tokens: int | None = Field(default=None, alias="numTokens")
    acceptance_rate: float | None = Field(default=None, alias="acceptanceRate")

    @field_validator("draft_model")
    @classmethod
    def _draft(cls, value: str | None) -> str | None:
        return None if value is None else _check_model_ref(value, "ai/qwen3:0.6B-F16")

    @field_validator("num_tokens")
    @classmethod
    def _tokens(cls, value: int | None) -> int | None:
        if value is not None and not 0 < value <= wire.INT32_MAX:
            raise _Invalid(f"{value} is out of range: numTokens is a positive number of draft tokens, e.g. 16")
        return value

    @field_validator("acceptance_rate")
    @classmethod
    def _rate(cls, value: float | None) -> float | None:
        return None if value is None else _check_fraction(value, "acceptanceRate")


class LocalModelSpec(BaseModel):
    """What a LocalModel asks of an engine. Absent fields are left to the engine's defaults."""

    model_config = _SPEC_CONFIG

    model: str
    backend: str | None = None
    mode: str | None = None
    context_size: int | None = Field(default=None, alias="contextSize")
    runtime_flags: list[str] | None = Field(default=None, alias="runtimeFlags")
    raw_runtime_flags: str | None = Field(default=None, alias="rawRuntimeFlags")
    keep_alive: str | None = Field(default=None, alias="keepAlive")
    thinking_budget: int | str | None = Field(default=None, alias="thinkingBudget")
    vllm: VllmOptions | None = None
    speculative: SpeculativeOptions | None = None
    preload: bool = False
    pull_policy: str = Field(default=PULL_IF_NOT_PRESENT, alias="pullPolicy")
    deletion_policy: str = Field(default=DELETION_UNLOAD, alias="deletionPolicy")
    node_selector: dict[str, str] | None = Field(default=None, alias="nodeSelector")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return _check_model_ref(value, "ai/smollm2 or ai/qwen3:14B")

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str | None) -> str | None:
        return None if value is None else _one_of(value, wire.BACKENDS, "backend")

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str | None) -> str | None:
        return None if value is None else _one_of(value, wire.MODES, "mode")

    @field_validator("pull_policy")
    @classmethod
    def _pull(cls, value: str) -> str:
        return _one_of(value, PULL_POLICIES, "pullPolicy")

    @field_validator("deletion_policy")
    @classmethod
    def _deletion(cls, value: str) -> str:
        return _one_of(value, DELETION_POLICIES, "deletionPolicy")

    @field_validator("context_size", mode="before")
    @classmethod
    def _context(cls, value: object) -> object:
        return None if value is None else _check_context_size(value)

    @field_validator("runtime_flags", mode="before")
    @classmethod
    def _flags(cls, value: object) -> object:
        if isinstance(value, str):
            return value.split()
        if value is not None and not isinstance(value, list):
            raise _Invalid(f"must be a list of strings (or one string of flags), got {describe(value)}")
        return value

    @field_validator("runtime_flags")
    @classmethod
    def _flag_items(cls, value: list[str] | None) -> list[str] | None:
        for i, flag in enumerate(value or ()):
            if not flag:
                raise _Invalid("empty flag: remove it", (i,))
        return value

    @field_validator("raw_runtime_flags")
    @classmethod
    def _raw_flags(cls, value: str | None) -> str | None:
        return None if value is None else _check_raw_flags(value)

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, value: object) -> object:
        return None if value is None else _check_keep_alive(value)

    @field_validator("thinking_budget", mode="before")
    @classmethod
    def _thinking(cls, value: object) -> object:
        return None if value is None else _check_thinking_budget(value)

    @model_validator(mode="after")
    def _combinations(self) -> LocalModelSpec:
        if self.runtime_flags is not None and self.raw_runtime_flags is not None:
            raise _Invalid(
                "runtimeFlags and rawRuntimeFlags are both set; the engine would silently ignore "
                "rawRuntimeFlags: keep only one of them",
                ("rawRuntimeFlags",),
            )
        if self.backend is not None and self.backend != wire.VLLM_BACKEND and self.vllm is not None:
            raise _Invalid(
                f"vllm options apply only to the vllm backend, but backend is {self.backend}: "
                "remove the vllm block or set backend: vllm",
                ("vllm",),
            )
        if self.backend in FLAGLESS_BACKENDS and self.has_runtime_flags:
            field_name = "runtimeFlags" if self.runtime_flags else "rawRuntimeFlags"
            raise _Invalid(
                f"the {self.backend} backend rejects every runtime flag: remove {field_name}",
                (field_name,),
            )
        if self.mode == wire.IMAGE_GENERATION and self.backend in (wire.LLAMA_CPP, wire.VLLM_BACKEND):
            raise _Invalid(
                f"{self.backend} cannot generate images: use backend: diffusers or remove backend",
                ("mode",),
            )
        return self

    @property
    def has_runtime_flags(self) -> bool:
        return bool(self.runtime_flags) or bool(self.raw_runtime_flags)

    @property
    def reasoning_budget(self) -> int | None:
        """The thinking budget in tokens (-1: unlimited), or None when not set."""
        return None if self.thinking_budget is None else thinking_budget_tokens(self.thinking_budget)


class ObjectMeta(BaseModel):
    """Kubernetes-style metadata. Server-set fields (uid, resourceVersion, ...) are accepted and kept."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True, frozen=True)

    name: str
    namespace: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
            suggestion = dns_name(value)
            raise _Invalid(
                f"{value!r} is not a valid name: use at most 253 lowercase letters, digits, '-' and '.', "
                f"starting and ending with a letter or digit (e.g. {suggestion})"
            )
        return value


class LocalModel(BaseModel):
    """A LocalModel resource. `status` (written by the controller) is ignored on input."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, frozen=True)

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: ObjectMeta
    spec: LocalModelSpec

    @model_validator(mode="before")
    @classmethod
    def _drop_status(cls, data: object) -> object:
        if isinstance(data, Mapping) and "status" in data:
            return {k: v for k, v in data.items() if k != "status"}
        return data

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        if value != API_VERSION:
            raise _Invalid(f"unsupported apiVersion {value!r}: use apiVersion: {API_VERSION}")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value != KIND:
            raise _Invalid(f"kind must be {KIND}, got {value!r}")
        return value

    @property
    def name(self) -> str:
        return self.metadata.name


def dns_name(text: str) -> str:
    """A valid DNS-1123 subdomain derived from `text`: lowercased, other characters turned into '-'."""
    dashed = re.sub(r"[^a-z0-9.]+", "-", text.lower())
    labels = [label.strip("-") for label in dashed.split(".")]
    name = ".".join(label for label in labels if label)[:253].strip("-.")
    return name or "model"


# --------------------------------------------------------------------------------------------
# Entry points


def parse_localmodel(data: Any, *, file: str | None = None, line: int | None = None) -> LocalModel:
    """Validate a whole LocalModel object (a parsed YAML document or a Kubernetes object).

    Raises `SpecInvalid` with one `SpecError` per problem found.
    """
    name = _object_name(data)

    def fail(path: Loc, message: str) -> SpecInvalid:
        return SpecInvalid([SpecError(file, line, name, format_path(path), message, path)])

    if not isinstance(data, Mapping):
        raise fail((), f"a LocalModel must be a mapping with apiVersion, kind, metadata and spec; got {describe(data)}")
    if "kind" not in data:
        raise fail(("kind",), f"kind is required: kind: {KIND}")
    if "apiVersion" not in data:
        raise fail(("apiVersion",), f"apiVersion is required: apiVersion: {API_VERSION}")
    try:
        return LocalModel.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise SpecInvalid(_convert(exc, LocalModel, (), file, line, name)) from None


def validate_spec(data: Any, name: str) -> LocalModelSpec:
    """Validate a bare `spec` (as the Kubernetes operator receives it). Paths start with `spec.`."""
    if not isinstance(data, Mapping):
        raise SpecInvalid([SpecError(None, None, name, "spec", f"must be a mapping, got {describe(data)}", ("spec",))])
    try:
        return LocalModelSpec.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise SpecInvalid(_convert(exc, LocalModelSpec, ("spec",), None, None, name)) from None


def _object_name(data: object) -> str:
    if isinstance(data, Mapping):
        metadata = data.get("metadata")
        if isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str) and metadata["name"]:
            return metadata["name"]
    return _UNNAMED


# --------------------------------------------------------------------------------------------
# pydantic errors -> SpecErrors

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def _convert(
    exc: ValidationError, root: type[BaseModel], prefix: Loc, file: str | None, line: int | None, name: str
) -> list[SpecError]:
    errors: list[SpecError] = []
    for err in exc.errors(include_url=False):
        loc: Loc = (*prefix, *err["loc"])
        message = _message(err, root, err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _Invalid):
            loc = (*loc, *cause.subpath)
        error = SpecError(file, line, name, format_path(loc), message, loc)
        if error not in errors:
            errors.append(error)
    return errors


def _message(err: Any, root: type[BaseModel], loc: Loc) -> str:
    kind = err["type"]
    value = err.get("input")
    cause = (err.get("ctx") or {}).get("error")
    if kind == "value_error" and isinstance(cause, _Invalid):
        return cause.message
    if kind == "missing":
        return f"required field is missing: add {loc[-1]}" if loc else "required field is missing"
    if kind == "extra_forbidden":
        fields = _field_names(root, loc[:-1])
        hint = did_you_mean(loc[-1], fields)
        known = f"known fields: {', '.join(fields)}" if fields else ""
        return f"unknown field {loc[-1]!r}" + (f"; did you mean {hint}?" if hint else f"; {known}")
    if kind == "invalid_key":
        return f"keys must be strings, got {describe(value)}"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, got {describe(value)}{_type_hint(kind, value)}"
    return str(err.get("msg", "invalid value"))


def _type_hint(kind: str, value: object) -> str:
    if kind == "string_type" and isinstance(value, (int, float, bool)):
        return f'; quote it: "{str(value).lower() if isinstance(value, bool) else value}"'
    if kind in ("int_type", "float_type") and isinstance(value, str) and _BARE_NUMBER.match(value.strip()):
        return "; write the number without quotes"
    if kind == "bool_type" and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return "; write it without quotes"
    return ""


def _field_names(root: type[BaseModel], loc: Loc) -> list[str]:
    """The wire names of the fields of the model found at `loc` under `root` (empty if none)."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return []
        model = _submodel(model, part)
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _submodel(model: type[BaseModel], part: str | int) -> type[BaseModel] | None:
    for name, info in model.model_fields.items():
        if part in (name, info.alias):
            for candidate in (info.annotation, *get_args(info.annotation)):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    return candidate
    return None
