"""The `_configure` request a LocalModel asks for (pure: no I/O).

`render_configure` turns a validated spec into the exact route and JSON body to send. Options that
do not apply to the backend that will serve the model are left out and explained in `notes`, so
the status can say so instead of failing or staying silent (docs/engine-contract.md §9).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from controller import wire
from controller.spec import FLAGLESS_BACKENDS, LocalModel, LocalModelSpec


@dataclass(frozen=True)
class ConfigureRequest:
    """A `POST <path>` with `body`; `backend` is None for the default route (llama.cpp, auto-switched)."""

    path: str
    backend: str | None
    body: dict[str, Any]
    notes: tuple[str, ...] = ()


class RenderError(Exception):
    """The spec cannot be sent to the backend that serves the model (e.g. flags for MLX)."""

    def __init__(self, path: str, message: str, object: str | None = None):
        super().__init__(": ".join(p for p in (object, path, message) if p))
        self.path = path
        self.message = message
        self.object = object


def effective_backend(spec: LocalModelSpec, backend: str | None = None) -> tuple[str | None, tuple[str, ...]]:
    """The backend to configure and a note on how it was chosen.

    `spec.backend` wins; then `backend` (learned from the model's format); then `vllm` when vLLM
    options are set; otherwise None, the default route.
    """
    if spec.backend is not None:
        return spec.backend, ()
    if backend is not None:
        return backend, ()
    if spec.vllm is not None and spec.vllm.is_set:
        return wire.VLLM_BACKEND, ("backend inferred from vllm options",)
    return None, ()


def render_configure(spec: LocalModelSpec, backend: str | None = None) -> ConfigureRequest:
    """The `_configure` request for `spec`; `backend` is what the model's format selects, if known.

    Raises `RenderError` when runtime flags meet a backend that rejects every flag.
    """
    chosen, notes = effective_backend(spec, backend)
    notes_list = list(notes)
    if chosen in FLAGLESS_BACKENDS and spec.has_runtime_flags:
        field = "spec.runtimeFlags" if spec.runtime_flags else "spec.rawRuntimeFlags"
        raise RenderError(
            field, f"this model is served by {chosen}, which rejects every runtime flag: remove the flags"
        )

    body: dict[str, Any] = {wire.MODEL: spec.model}
    if spec.mode is not None:
        body[wire.MODE] = spec.mode
    if spec.context_size is not None:
        body[wire.CONTEXT_SIZE] = spec.context_size
    if spec.runtime_flags:
        body[wire.RUNTIME_FLAGS] = list(spec.runtime_flags)
    if spec.raw_runtime_flags:
        body[wire.RAW_RUNTIME_FLAGS] = spec.raw_runtime_flags
    if spec.keep_alive is not None:
        body[wire.KEEP_ALIVE] = spec.keep_alive
    speculative = _speculative(spec)
    if speculative:
        body[wire.SPECULATIVE] = speculative
    vllm = _vllm(spec, chosen, notes_list)
    if vllm:
        body[wire.VLLM] = vllm
    llamacpp = _llamacpp(spec, chosen, notes_list)
    if llamacpp:
        body[wire.LLAMACPP] = llamacpp
    return ConfigureRequest(wire.configure_path(chosen), chosen, body, tuple(notes_list))


def _speculative(spec: LocalModelSpec) -> dict[str, Any]:
    options = spec.speculative
    if options is None:
        return {}
    fields = {
        wire.DRAFT_MODEL: options.draft_model,
        wire.NUM_TOKENS: options.num_tokens,
        wire.MIN_ACCEPTANCE_RATE: options.acceptance_rate,
    }
    return {key: value for key, value in fields.items() if value is not None}


def _vllm(spec: LocalModelSpec, backend: str | None, notes: list[str]) -> dict[str, Any]:
    options = spec.vllm
    if options is None or not options.is_set:
        return {}
    if backend != wire.VLLM_BACKEND:
        served = backend or wire.DEFAULT_BACKEND
        notes.append(f"vllm options (gpuMemoryUtilization, hfOverrides) do not apply to {served}; not sent")
        return {}
    fields = {
        wire.GPU_MEMORY_UTILIZATION: options.gpu_memory_utilization,
        wire.HF_OVERRIDES: options.hf_overrides,
    }
    return {key: value for key, value in fields.items() if value is not None}


def _llamacpp(spec: LocalModelSpec, backend: str | None, notes: list[str]) -> dict[str, Any]:
    budget = spec.reasoning_budget
    if budget is None:
        return {}
    if backend in (None, wire.LLAMA_CPP):
        return {wire.REASONING_BUDGET: budget}
    if backend == wire.VLLM_BACKEND:
        notes.append("vLLM takes the thinking budget per request (thinking_token_budget), not in _configure; not sent")
    else:
        notes.append(f"thinkingBudget is ignored by {backend}; not sent")
    return {}


def render_all(models: Iterable[LocalModel], backend: str | None = None) -> list[dict[str, Any]]:
    """One `{"name", "backend", "path", "body", "notes"}` entry per LocalModel, for `localmodel render`."""
    rendered: list[dict[str, Any]] = []
    for model in models:
        try:
            request = render_configure(model.spec, backend)
        except RenderError as exc:
            raise RenderError(exc.path, exc.message, model.name) from None
        rendered.append(
            {
                "name": model.name,
                "backend": request.backend,
                "path": request.path,
                "body": request.body,
                "notes": list(request.notes),
            }
        )
    return rendered
