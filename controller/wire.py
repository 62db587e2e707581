"""Docker Model Runner's wire vocabulary, spelled exactly as the engine spells it.

This is the only module that knows the engine's JSON keys and routes. The spellings are mixed
on purpose (`context-size` but `keep_alive`): they are what the engine's Go structs declare
(docs/engine-contract.md §3.1). Go's decoder ignores unknown keys silently, so a misspelling here
would be a silent no-op on the engine: keep every key in this one place.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

# POST /engines[/{backend}]/_configure body keys (BackendConfiguration, flattened).
MODEL: Final = "model"
MODE: Final = "mode"
CONTEXT_SIZE: Final = "context-size"
RUNTIME_FLAGS: Final = "runtime-flags"
RAW_RUNTIME_FLAGS: Final = "raw-runtime-flags"
KEEP_ALIVE: Final = "keep_alive"
SPECULATIVE: Final = "speculative"
DRAFT_MODEL: Final = "draft_model"
NUM_TOKENS: Final = "num_tokens"
MIN_ACCEPTANCE_RATE: Final = "min_acceptance_rate"
VLLM: Final = "vllm"
HF_OVERRIDES: Final = "hf-overrides"
GPU_MEMORY_UTILIZATION: Final = "gpu-memory-utilization"
LLAMACPP: Final = "llamacpp"
REASONING_BUDGET: Final = "reasoning-budget"

# GET /engines/_configure entries (ModelConfigEntry has no JSON tags: Go field names).
ENTRY_BACKEND: Final = "Backend"
ENTRY_MODEL: Final = "Model"
ENTRY_MODEL_ID: Final = "ModelID"
ENTRY_MODE: Final = "Mode"
ENTRY_CONFIG: Final = "Config"

# Backends (the `Name` constants of pkg/inference/backends/*).
LLAMA_CPP: Final = "llama.cpp"
VLLM_BACKEND: Final = "vllm"
MLX: Final = "mlx"
SGLANG: Final = "sglang"
DIFFUSERS: Final = "diffusers"
BACKENDS: Final = (LLAMA_CPP, VLLM_BACKEND, MLX, SGLANG, DIFFUSERS)
DEFAULT_BACKEND: Final = LLAMA_CPP

# Modes (BackendMode).
COMPLETION: Final = "completion"
EMBEDDING: Final = "embedding"
RERANKING: Final = "reranking"
IMAGE_GENERATION: Final = "image-generation"
MODES: Final = (COMPLETION, EMBEDDING, RERANKING, IMAGE_GENERATION)

# Model formats (GET /models -> config.format).
FORMAT_GGUF: Final = "gguf"
FORMAT_SAFETENSORS: Final = "safetensors"
FORMAT_DDUF: Final = "dduf"
FORMAT_DIFFUSERS: Final = "diffusers"

# Header that turns an inference request into a synchronous load (preload).
PRELOAD_ONLY_HEADER: Final = "X-Preload-Only"

# Docker Desktop's engine-socket path prefix.
DESKTOP_PREFIX: Final = "/exp/vDD4.40"

INT32_MAX: Final = 2**31 - 1


def configure_path(backend: str | None) -> str:
    """The `_configure` route for a backend; `None` is the default route (llama.cpp, auto-switched)."""
    return "/engines/_configure" if backend is None else f"/engines/{backend}/_configure"


def backend_for_format(fmt: str | None) -> str:
    """The backend DMR selects for a model format on Linux (scheduler.go selectBackendForModel)."""
    if fmt == FORMAT_SAFETENSORS:
        return VLLM_BACKEND
    if fmt in (FORMAT_DDUF, FORMAT_DIFFUSERS):
        return DIFFUSERS
    return LLAMA_CPP


# Routes (docs/engine-contract.md §2.1). `configure_path` above covers POST `_configure`.
ROUTE_ROOT: Final = "/"
ROUTE_VERSION: Final = "/version"
ROUTE_MODELS: Final = "/models"
ROUTE_PULL: Final = "/models/create"
ROUTE_STORED_CONFIGS: Final = "/engines/_configure"  # GET; there is no per-backend GET
ROUTE_ENGINES_STATUS: Final = "/engines/status"
ROUTE_PS: Final = "/engines/ps"
ROUTE_DF: Final = "/engines/df"
ROUTE_UNLOAD: Final = "/engines/unload"
ROUTE_REQUESTS: Final = "/engines/requests"

# Query parameters.
QUERY_MODEL: Final = "model"  # GET /engines/_configure, GET /engines/requests
QUERY_FORCE: Final = "force"  # DELETE /models/{name}

# GET /version.
VERSION: Final = "version"

# POST /models/create body, and its NDJSON progress lines.
PULL_FROM: Final = "from"
BEARER_TOKEN: Final = "bearer-token"
PROGRESS_TYPE: Final = "type"
PROGRESS_MESSAGE: Final = "message"
PROGRESS_TOTAL: Final = "total"
PROGRESS_LAYER: Final = "layer"
LAYER_ID: Final = "id"
LAYER_SIZE: Final = "size"
LAYER_CURRENT: Final = "current"
PROGRESS_MODE: Final = "mode"
LINE_PROGRESS: Final = "progress"
LINE_SUCCESS: Final = "success"
LINE_WARNING: Final = "warning"
LINE_ERROR: Final = "error"

# GET /models entries.
MODEL_ID: Final = "id"
MODEL_TAGS: Final = "tags"
MODEL_CREATED: Final = "created"
MODEL_CONFIG: Final = "config"
MODEL_FORMAT: Final = "format"
MODEL_CONTEXT_SIZE: Final = "context_size"
MODEL_SIZE: Final = "size"

# GET /engines/ps entries (BackendStatus).
PS_BACKEND: Final = "backend_name"
PS_MODEL: Final = "model_name"
PS_MODE: Final = "mode"
PS_LAST_USED: Final = "last_used"
PS_IN_USE: Final = "in_use"
PS_LOADING: Final = "loading"
PS_KEEP_ALIVE: Final = "keep_alive"
GO_ZERO_TIME: Final = "0001-01-01T00:00:00Z"  # `last_used` while a runner is in use or loading

# POST /engines/unload body and answer.
UNLOAD_ALL: Final = "all"
UNLOAD_BACKEND: Final = "backend"
UNLOAD_MODELS: Final = "models"
UNLOADED_RUNNERS: Final = "unloaded_runners"

# GET /engines/requests entries.
REQUESTS_MODEL: Final = "model"
REQUESTS_CONFIG: Final = "config"
REQUESTS_COUNT: Final = "count"
REQUESTS_RECORDS: Final = "records"


def model_path(ref: str) -> str:
    """`/models/{name...}` for a reference; the name keeps its `/` and `:` (Go matches the rest of the path)."""
    return f"{ROUTE_MODELS}/{quote(ref, safe='/:@')}"


_INFERENCE_OP_FOR_MODE: Final = {
    COMPLETION: "v1/chat/completions",
    EMBEDDING: "v1/embeddings",
    RERANKING: "rerank",
    IMAGE_GENERATION: "v1/images/generations",
}


def inference_path(backend: str | None, mode: str = COMPLETION) -> str:
    """The inference route whose runner has `mode` (the engine picks the mode from the path), used with
    `X-Preload-Only: true` to load that runner synchronously."""
    op = _INFERENCE_OP_FOR_MODE[mode]
    return f"/engines/{op}" if backend is None else f"/engines/{backend}/{op}"
