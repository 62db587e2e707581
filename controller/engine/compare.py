"""Semantic comparison of a desired `_configure` body with what the engine reports (pure).

The engine does not echo what it was sent (docs/engine-contract.md §4.2): `keep_alive` comes back re-rendered
(`10m` as `10m0s`), `raw-runtime-flags` comes back parsed into `runtime-flags`, zero speculative fields
and empty maps disappear. Comparing strings would see drift where there is none, so every field is
compared by meaning:

- `context-size`: absent equals 0 (both mean "the packaged default" to llama.cpp and vLLM).
- `runtime-flags`: the array if non-empty, else `raw-runtime-flags` split like a POSIX shell, as the engine does.
- `keep_alive`: Go durations (`10m` == `10m0s`, `0` == `0s`, every negative value == `-1`). Absent is
  the engine default (5 min) and differs from `0`.
- `speculative`: absent equals a block of zero fields; `draft_model` compared as a model reference.
- `vllm.gpu-memory-utilization`, `llamacpp.reasoning-budget`: absent differs from 0 (`reasoning-budget: 0`
  turns thinking off); numbers compared numerically, floats with a tolerance.
- `vllm.hf-overrides`: deep equality, `4` == `4.0`; absent equals `{}`.
- `model` and `mode` are not part of a stored config: `mode` is the key of a stored entry, matched by
  `find_stored_config` with `effective_mode`.
"""

from __future__ import annotations

import functools
import json
import math
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from controller import wire
from controller.durations import DurationError, normalize_keep_alive
from controller.engine.types import StoredConfig
from controller.refs import same_model

FLOAT_TOLERANCE = 1e-6
UNSET = "unset"

# The backend-specific blocks each backend reads; the engine stores both blocks whatever the backend.
_BLOCKS_READ_BY: dict[str, frozenset[str]] = {
    wire.LLAMA_CPP: frozenset({wire.LLAMACPP}),
    wire.VLLM_BACKEND: frozenset({wire.VLLM}),
}
_BACKEND_BLOCKS = frozenset({wire.LLAMACPP, wire.VLLM})
_NOT_CONFIG = frozenset({wire.MODEL, wire.MODE, wire.RAW_RUNTIME_FLAGS})


def config_differences(
    desired_body: Mapping[str, Any], reported: Mapping[str, Any], *, backend: str | None = None
) -> list[str]:
    """Human-readable differences between a desired `_configure` body and a reported config; [] means a match.

    `reported` is a `Config` of `GET /engines/_configure` or a `config` of `GET /engines/requests`.
    With `backend`, the block the backend never reads (`vllm` on llama.cpp, `llamacpp` on vLLM, both on
    MLX/SGLang/diffusers) is ignored: the engine stores it but a difference there changes nothing.
    """
    differences: list[str] = []
    want_context, have_context = desired_body.get(wire.CONTEXT_SIZE), reported.get(wire.CONTEXT_SIZE)
    differences += _compare(wire.CONTEXT_SIZE, want_context, have_context, zero=0)
    differences += _compare_flags(desired_body, reported)
    differences += _compare_keep_alive(desired_body.get(wire.KEEP_ALIVE), reported.get(wire.KEEP_ALIVE))
    differences += _compare_speculative(_block(desired_body, wire.SPECULATIVE), _block(reported, wire.SPECULATIVE))
    ignored = _ignored_blocks(backend)
    if wire.VLLM not in ignored:
        differences += _compare_vllm(_block(desired_body, wire.VLLM), _block(reported, wire.VLLM))
    if wire.LLAMACPP not in ignored:
        want, have = _block(desired_body, wire.LLAMACPP), _block(reported, wire.LLAMACPP)
        differences += _compare_block(wire.LLAMACPP, want, have)
    known = _NOT_CONFIG | {wire.CONTEXT_SIZE, wire.RUNTIME_FLAGS, wire.KEEP_ALIVE, wire.SPECULATIVE} | _BACKEND_BLOCKS
    for key in sorted((set(desired_body) | set(reported)) - known):
        differences += _compare(key, desired_body.get(key), reported.get(key))
    return differences


def effective_flags(config: Mapping[str, Any]) -> list[str]:
    """The runtime flags the engine uses: `runtime-flags` when non-empty, else `raw-runtime-flags` shell-split.

    Raises ValueError when `raw-runtime-flags` cannot be split (an unclosed quote)."""
    flags = config.get(wire.RUNTIME_FLAGS) or []
    if flags:
        return [str(flag) for flag in flags]
    raw = config.get(wire.RAW_RUNTIME_FLAGS) or ""
    return list(_shell_split(raw)) if raw else []


@functools.lru_cache(maxsize=1024)
def _shell_split(raw: str) -> tuple[str, ...]:
    # Every pass asks for the mode of every config it looks at: shlex builds a lexer each time.
    return tuple(shlex.split(raw, posix=True))


def effective_mode(desired_body: Mapping[str, Any]) -> str:
    """The mode the engine stores a body under: `mode` if given, `embedding` if the flags contain the token
    `--embeddings`, else `completion` (docs/engine-contract.md §3.3 step 5; the engine uses `slices.Contains`)."""
    mode = desired_body.get(wire.MODE)
    if mode:
        return str(mode)
    try:
        flags = effective_flags(desired_body)
    except ValueError:
        return wire.COMPLETION
    return wire.EMBEDDING if "--embeddings" in flags else wire.COMPLETION


def find_stored_config(
    entries: Iterable[StoredConfig], model_ref: str, model_id: str | None, backend: str, mode: str
) -> StoredConfig | None:
    """The stored entry for (backend, model, mode), or None.

    With the model's resolved ID (`sha256:...`, from `GET /models`) only that ID matches: an entry keyed by
    the raw reference was stored before the pull and is never used by the engine (docs/engine-contract.md §3.4). Without
    an ID (the model is not pulled), the entry's tag or raw key is compared as a model reference."""
    for entry in entries:
        if entry.backend == backend and entry.mode == mode and _same_entry(entry, model_ref, model_id):
            return entry
    return None


def _same_entry(entry: StoredConfig, model_ref: str, model_id: str | None) -> bool:
    if model_id:
        return entry.model_id == model_id
    return any(name and same_model(name, model_ref) for name in (entry.model, entry.model_id))


# -- fields ---------------------------------------------------------------------------------


def _ignored_blocks(backend: str | None) -> frozenset[str]:
    if backend is None:
        return frozenset()
    return _BACKEND_BLOCKS - _BLOCKS_READ_BY.get(backend, frozenset())


def _block(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = config.get(key)
    return value if isinstance(value, Mapping) else {}


def _show(value: Any) -> str:
    if value is None:
        return UNSET
    if isinstance(value, str):
        return value or '""'
    return json.dumps(value, sort_keys=True)


def _difference(name: str, want: Any, have: Any) -> str:
    return f"{name}: want {_show(want)}, engine has {_show(have)}"


def _compare(name: str, want: Any, have: Any, *, zero: Any = None) -> list[str]:
    """One field; with `zero`, an absent value (None) counts as that zero value (Go's omitempty)."""
    if _equal(zero if want is None else want, zero if have is None else have):
        return []
    return [_difference(name, want, have)]


def _compare_flags(desired: Mapping[str, Any], reported: Mapping[str, Any]) -> list[str]:
    try:
        want = effective_flags(desired)
    except ValueError as exc:
        return [f"{wire.RAW_RUNTIME_FLAGS}: cannot be split like a shell command line ({exc})"]
    try:
        have = effective_flags(reported)
    except ValueError as exc:
        return [f"{wire.RUNTIME_FLAGS}: the engine reports flags that cannot be split ({exc})"]
    if want == have:
        return []
    return [f"{wire.RUNTIME_FLAGS}: want {shlex.join(want) or '(none)'}, engine has {shlex.join(have) or '(none)'}"]


def _compare_keep_alive(want: Any, have: Any) -> list[str]:
    if _keep_alive(want) == _keep_alive(have):
        return []
    return [_difference(wire.KEEP_ALIVE, want, have)]


def _keep_alive(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return normalize_keep_alive(value)
    except DurationError:
        return value  # not a duration: compared as written


def _compare_speculative(want: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    prefix = f"{wire.SPECULATIVE}."
    differences: list[str] = []
    want_draft, have_draft = want.get(wire.DRAFT_MODEL) or "", have.get(wire.DRAFT_MODEL) or ""
    if bool(want_draft) != bool(have_draft) or (want_draft and not same_model(want_draft, have_draft)):
        differences.append(_difference(prefix + wire.DRAFT_MODEL, want_draft or None, have_draft or None))
    for key in (wire.NUM_TOKENS, wire.MIN_ACCEPTANCE_RATE):
        differences += _compare(prefix + key, want.get(key), have.get(key), zero=0)
    for key in sorted((set(want) | set(have)) - {wire.DRAFT_MODEL, wire.NUM_TOKENS, wire.MIN_ACCEPTANCE_RATE}):
        differences += _compare(prefix + key, want.get(key), have.get(key))
    return differences


def _compare_vllm(want: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    prefix = f"{wire.VLLM}."
    differences = _compare(
        prefix + wire.HF_OVERRIDES, want.get(wire.HF_OVERRIDES), have.get(wire.HF_OVERRIDES), zero={}
    )
    rest_want = {k: v for k, v in want.items() if k != wire.HF_OVERRIDES}
    rest_have = {k: v for k, v in have.items() if k != wire.HF_OVERRIDES}
    return differences + _compare_block(wire.VLLM, rest_want, rest_have)


def _compare_block(name: str, want: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    differences: list[str] = []
    for key in sorted(set(want) | set(have)):
        differences += _compare(f"{name}.{key}", want.get(key), have.get(key))
    return differences


def _equal(a: Any, b: Any) -> bool:
    """Deep equality where numbers compare numerically (`4` == `4.0`, floats within FLOAT_TOLERANCE)."""
    if _is_number(a) and _is_number(b):
        return math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
