"""`_configure` bodies decoded the way Go's `encoding/json` decodes them into DMR's structs.

What matters for fidelity (docs/engine-contract.md §3.1, §3.2, §4.2):
- keys match case-insensitively (an exact match wins), unknown keys are ignored, a repeated key's
  last value wins, and `null` leaves a field unset;
- any type mismatch, an int32 overflow of `context-size`, a non-integer literal for an integer field,
  an unknown `mode` or an unparsable `keep_alive` is a decode error (the server answers 400);
- `BackendConfig` equality is Go's `reflect.DeepEqual` on the stored struct (an empty `speculative`
  object differs from an absent one), and `to_json` is the read-back rendering (omitempty,
  `keep_alive` through `Duration.String()`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from controller import wire
from controller.durations import DurationError, format_go_duration, parse_keep_alive

KEEP_ALIVE_FOREVER = -1  # KeepAliveForever: any negative keep_alive is stored as -1ns

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


class DecodeError(ValueError):
    """The body is not a valid ConfigureRequest (the engine answers `400 invalid request`)."""


@dataclass(frozen=True)
class Speculative:
    draft_model: str = ""
    num_tokens: int = 0
    min_acceptance_rate: float = 0.0


@dataclass(frozen=True)
class VLLMOptions:
    hf_overrides: dict[str, Any] | None = field(default=None, hash=False)
    gpu_memory_utilization: float | None = None


@dataclass(frozen=True)
class LlamaCppOptions:
    reasoning_budget: int | None = None


@dataclass(frozen=True)
class BackendConfig:
    """inference.BackendConfiguration as stored by the engine. `keep_alive_ns` is -1 for "never"."""

    context_size: int | None = None
    runtime_flags: tuple[str, ...] | None = None
    speculative: Speculative | None = None
    keep_alive_ns: int | None = None
    vllm: VLLMOptions | None = None
    llamacpp: LlamaCppOptions | None = None

    @property
    def draft_model(self) -> str:
        return self.speculative.draft_model if self.speculative else ""

    def to_json(self) -> dict[str, Any]:
        """The JSON the engine writes for this config (read-back of GET /engines/_configure)."""
        out: dict[str, Any] = {}
        if self.context_size is not None:
            out[wire.CONTEXT_SIZE] = self.context_size
        if self.runtime_flags:
            out[wire.RUNTIME_FLAGS] = list(self.runtime_flags)
        if self.speculative is not None:
            spec: dict[str, Any] = {}
            if self.speculative.draft_model:
                spec[wire.DRAFT_MODEL] = self.speculative.draft_model
            if self.speculative.num_tokens:
                spec[wire.NUM_TOKENS] = self.speculative.num_tokens
            if self.speculative.min_acceptance_rate:
                spec[wire.MIN_ACCEPTANCE_RATE] = go_number(self.speculative.min_acceptance_rate)
            out[wire.SPECULATIVE] = spec
        if self.keep_alive_ns is not None:
            out[wire.KEEP_ALIVE] = render_keep_alive(self.keep_alive_ns)
        if self.vllm is not None:
            vllm: dict[str, Any] = {}
            if self.vllm.hf_overrides:
                vllm[wire.HF_OVERRIDES] = go_encoded(self.vllm.hf_overrides)
            if self.vllm.gpu_memory_utilization is not None:
                vllm[wire.GPU_MEMORY_UTILIZATION] = go_number(self.vllm.gpu_memory_utilization)
            out[wire.VLLM] = vllm
        if self.llamacpp is not None:
            llamacpp: dict[str, Any] = {}
            if self.llamacpp.reasoning_budget is not None:
                llamacpp[wire.REASONING_BUDGET] = self.llamacpp.reasoning_budget
            out[wire.LLAMACPP] = llamacpp
        return out


@dataclass(frozen=True)
class ConfigureRequest:
    model: str
    mode: str | None
    raw_runtime_flags: str
    config: BackendConfig


def render_keep_alive(ns: int) -> str:
    """KeepAlive.MarshalJSON: `-1` for forever, else Go's Duration.String()."""
    return "-1" if ns == KEEP_ALIVE_FOREVER else format_go_duration(ns)


def go_number(value: float) -> float | int:
    """A float64 as Go's encoder prints it: integral values without a fraction (`4.0` -> `4`)."""
    if value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def go_encoded(value: Any) -> Any:
    """A decoded JSON value as Go's encoder writes it back: floats via go_number, map keys sorted."""
    if isinstance(value, float):
        return go_number(value)
    if isinstance(value, dict):  # a Go map: keys sorted
        return {key: go_encoded(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [go_encoded(item) for item in value]
    return value


# --- Go-like JSON decoding -------------------------------------------------------------------


class _Object(list[tuple[str, Any]]):
    """A JSON object as its ordered (key, value) pairs, duplicates kept, as Go's decoder sees it."""


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"invalid JSON constant {name}")


def parse_go_json(body: bytes) -> Any:
    """Parse JSON keeping what Go distinguishes: objects as ordered pairs, non-integer literals as Decimal."""
    try:
        return json.loads(body, object_pairs_hook=_Object, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(str(exc)) from None


def _fields(obj: Any, names: tuple[str, ...], what: str) -> dict[str, Any]:
    """Match an object's keys to struct fields like Go: exact name first, else case-insensitive."""
    if obj is None:
        return {}
    if not isinstance(obj, _Object):
        raise DecodeError(f"{what} must be a JSON object")
    folded = {name.casefold(): name for name in names}
    out: dict[str, Any] = {}
    for key, value in obj:
        name = key if key in names else folded.get(key.casefold())
        if name is not None:
            out[name] = value
    return out


def _string(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"{what} must be a string")
    return value


def _integer(value: Any, what: str, bounds: tuple[int, int]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{what} must be an integer literal")
    if not bounds[0] <= value <= bounds[1]:
        raise DecodeError(f"{what} overflows")
    return value


def _float(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise DecodeError(f"{what} must be a number")
    number = float(value)
    if math.isinf(number):
        raise DecodeError(f"{what} overflows float64")
    return number


def _plain(value: Any) -> Any:
    """An `interface{}` value: objects become dicts (last key wins), every number a float64."""
    if isinstance(value, _Object):
        return {key: _plain(item) for key, item in value}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    number = float(value)
    if math.isinf(number):
        raise DecodeError("number overflows float64")
    return number


def _string_list(value: Any, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise DecodeError(f"{what} must be an array of strings")
    items = []
    for item in value:
        if item is not None and not isinstance(item, str):
            raise DecodeError(f"{what} must be an array of strings")
        items.append(item or "")
    return tuple(items)


def _speculative(value: Any) -> Speculative | None:
    if value is None:
        return None
    f = _fields(value, (wire.DRAFT_MODEL, wire.NUM_TOKENS, wire.MIN_ACCEPTANCE_RATE), wire.SPECULATIVE)
    return Speculative(
        draft_model=_string(f.get(wire.DRAFT_MODEL), wire.DRAFT_MODEL) or "",
        num_tokens=_integer(f.get(wire.NUM_TOKENS), wire.NUM_TOKENS, _INT64) or 0,
        min_acceptance_rate=_float(f.get(wire.MIN_ACCEPTANCE_RATE), wire.MIN_ACCEPTANCE_RATE) or 0.0,
    )


def _vllm(value: Any) -> VLLMOptions | None:
    if value is None:
        return None
    f = _fields(value, (wire.HF_OVERRIDES, wire.GPU_MEMORY_UTILIZATION), wire.VLLM)
    overrides = f.get(wire.HF_OVERRIDES)
    if overrides is not None and not isinstance(overrides, _Object):
        raise DecodeError(f"{wire.HF_OVERRIDES} must be a JSON object")
    return VLLMOptions(
        hf_overrides=_plain(overrides) if overrides is not None else None,
        gpu_memory_utilization=_float(f.get(wire.GPU_MEMORY_UTILIZATION), wire.GPU_MEMORY_UTILIZATION),
    )


def _llamacpp(value: Any) -> LlamaCppOptions | None:
    if value is None:
        return None
    f = _fields(value, (wire.REASONING_BUDGET,), wire.LLAMACPP)
    return LlamaCppOptions(reasoning_budget=_integer(f.get(wire.REASONING_BUDGET), wire.REASONING_BUDGET, _INT32))


def _keep_alive(value: Any) -> int | None:
    text = _string(value, wire.KEEP_ALIVE)
    if text is None:
        return None
    try:
        ns = parse_keep_alive(text)
    except DurationError as exc:
        raise DecodeError(str(exc)) from None
    return KEEP_ALIVE_FOREVER if ns is None else ns


def _mode(value: Any) -> str | None:
    text = _string(value, wire.MODE)
    if text is not None and text not in wire.MODES:
        raise DecodeError(f"unknown backend mode: {text!r}")
    return text


_REQUEST_FIELDS = (
    wire.MODEL,
    wire.MODE,
    wire.RAW_RUNTIME_FLAGS,
    wire.CONTEXT_SIZE,
    wire.RUNTIME_FLAGS,
    wire.SPECULATIVE,
    wire.KEEP_ALIVE,
    wire.VLLM,
    wire.LLAMACPP,
)


def decode_configure(body: bytes, *, keep_alive: bool = True, image_generation: bool = True) -> ConfigureRequest:
    """Decode a `_configure` body; raises DecodeError where Go's json.Unmarshal would fail.

    Older releases (controller/engine/capabilities.py): without `keep_alive` the key is unknown, so any
    value is ignored; without `image_generation` that mode is an unknown mode (a decode error)."""
    names = _REQUEST_FIELDS if keep_alive else tuple(name for name in _REQUEST_FIELDS if name != wire.KEEP_ALIVE)
    f = _fields(parse_go_json(body), names, "request body")
    if not image_generation and _mode(f.get(wire.MODE)) == wire.IMAGE_GENERATION:
        raise DecodeError(f"unknown backend mode: {wire.IMAGE_GENERATION!r}")
    config = BackendConfig(
        context_size=_integer(f.get(wire.CONTEXT_SIZE), wire.CONTEXT_SIZE, _INT32),
        runtime_flags=_string_list(f.get(wire.RUNTIME_FLAGS), wire.RUNTIME_FLAGS),
        speculative=_speculative(f.get(wire.SPECULATIVE)),
        keep_alive_ns=_keep_alive(f.get(wire.KEEP_ALIVE)),
        vllm=_vllm(f.get(wire.VLLM)),
        llamacpp=_llamacpp(f.get(wire.LLAMACPP)),
    )
    return ConfigureRequest(
        model=_string(f.get(wire.MODEL), wire.MODEL) or "",
        mode=_mode(f.get(wire.MODE)),
        raw_runtime_flags=_string(f.get(wire.RAW_RUNTIME_FLAGS), wire.RAW_RUNTIME_FLAGS) or "",
        config=config,
    )


def decode_object(body: bytes, names: tuple[str, ...]) -> dict[str, Any]:
    """Decode a small request object (unload, pull) with Go's key matching; values stay raw."""
    return _fields(parse_go_json(body), names, "request body")


def plain(value: Any) -> Any:
    """A decoded value with objects turned into dicts (for the control API)."""
    return _plain(value) if isinstance(value, (_Object, list)) else value
